package ops

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/slicehub/slicehub"
	"github.com/slicehub/slicehub/admin/adminapi"
)

// globals are the flags every API command shares.
type globals struct {
	gateway string
	key     string
	json    bool
}

func (g *globals) register(root *cobra.Command) {
	gw := os.Getenv("SLICEHUB_GATEWAY_URL")
	if gw == "" {
		gw = "http://127.0.0.1:8080"
	}
	root.PersistentFlags().StringVar(&g.gateway, "gateway", gw, "gateway base URL (env SLICEHUB_GATEWAY_URL)")
	root.PersistentFlags().StringVar(&g.key, "key", os.Getenv("SLICEHUB_ADMIN_KEY"), "admin API key (env SLICEHUB_ADMIN_KEY)")
	root.PersistentFlags().BoolVar(&g.json, "json", false, "print reads as JSON")
}

func (g *globals) client() (*client, error) { return newClient(g.gateway, g.key) }

// call is one command's request to the admin API: the client the flags
// name, the command's deadline (apiCtx), in sent as JSON and the answer
// decoded into out.
func (g *globals) call(cmd *cobra.Command, method, path string, in, out any) error {
	c, err := g.client()
	if err != nil {
		return err
	}
	ctx, cancel := apiCtx(cmd)
	defer cancel()
	return c.do(ctx, method, path, in, out)
}

// print writes out as JSON with --json, else as text.
func (g *globals) print(cmd *cobra.Command, out any, text func(w io.Writer) error) error {
	if g.json {
		return printJSON(cmd.OutOrStdout(), out)
	}
	return text(cmd.OutOrStdout())
}

// apiCtx bounds one command's calls to the gateway.
func apiCtx(cmd *cobra.Command) (context.Context, context.CancelFunc) {
	return context.WithTimeout(cmd.Context(), time.Minute)
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// idArg parses the one positional id of a command.
func idArg(args []string, what string) (int64, error) {
	if len(args) != 1 {
		return 0, usageErrorf("want one %s id", what)
	}
	id, ok := slicehub.ParseSliceID(args[0])
	if !ok {
		return 0, usageErrorf("%s id %q: want a positive integer", what, args[0])
	}
	return id, nil
}

func oneArg(what string) cobra.PositionalArgs {
	return func(_ *cobra.Command, args []string) error {
		if len(args) != 1 {
			return usageErrorf("want one %s, got %d arguments", what, len(args))
		}
		return nil
	}
}

func noArgs(_ *cobra.Command, args []string) error {
	if len(args) != 0 {
		return usageErrorf("unexpected arguments %q", args)
	}
	return nil
}

// groupCmd is a command that only holds subcommands: run without one, or
// with an unknown one, it is a usage error (cobra would print help and
// exit 0, which hides a typo in a script).
func groupCmd(use, short string) *cobra.Command {
	return &cobra.Command{Use: use, Short: short, Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usageErrorf("unknown command %q for %q", args[0], cmd.CommandPath())
			}
			return usageErrorf("%s needs a subcommand; see %s --help", cmd.CommandPath(), cmd.CommandPath())
		}}
}

// ---- status ----

// statusJSON is `status --json`: the admin API's status and the gateway's
// readiness.
type statusJSON struct {
	Ready      bool   `json:"ready"`
	ReadyError string `json:"ready_error,omitempty"`
	adminapi.Status
}

func newStatusCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Slices by state, the warm pool, capacity, and whether the gateway is ready (exit 3 if not)",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var out statusJSON
			if err := g.call(cmd, http.MethodGet, "/admin/api/status", nil, &out.Status); err != nil {
				return err
			}
			// /readyz runs the gateway's own checks of PostgreSQL, Consul
			// and Nomad; its error body names the failing ones.
			if err := g.call(cmd, http.MethodGet, "/readyz", nil, nil); err != nil {
				out.ReadyError = err.Error()
			} else {
				out.Ready = true
			}
			if err := g.print(cmd, out, func(w io.Writer) error { printStatus(w, g.gateway, out); return nil }); err != nil {
				return err
			}
			switch {
			case !out.Ready:
				return withCode(ExitUnhealthy, fmt.Errorf("gateway not ready: %s", out.ReadyError))
			case out.Capacity == nil:
				return withCode(ExitUnhealthy, fmt.Errorf("capacity unknown: %s", out.CapacityError))
			}
			return nil
		},
	}
}

func printStatus(w io.Writer, gw string, s statusJSON) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	ready := "ready"
	if !s.Ready {
		ready = "NOT READY: " + s.ReadyError
	}
	fmt.Fprintf(tw, "gateway\t%s\t%s\n", gw, ready)
	var states []string
	for _, st := range slicehub.States {
		states = append(states, fmt.Sprintf("%s=%d", st, s.Slices[st]))
	}
	fmt.Fprintf(tw, "slices\t%s\n", strings.Join(states, " "))
	fmt.Fprintf(tw, "pool\t%s\n", poolLine(s.Pool))
	if s.Capacity != nil {
		fmt.Fprintf(tw, "capacity\t%s\n", capacityLine(*s.Capacity))
	} else {
		fmt.Fprintf(tw, "capacity\tUNKNOWN: %s\n", s.CapacityError)
	}
	tw.Flush()
}

func poolLine(p adminapi.PoolJSON) string {
	paused := "no"
	if p.Paused {
		paused = "YES (no refill)"
	}
	return fmt.Sprintf("min_warm=%d warm=%d starting=%d max_slices=%d paused=%s", p.MinWarm, p.Warm, p.Starting, p.MaxSlices, paused)
}

func capacityLine(c slicehub.Capacity) string {
	return fmt.Sprintf("%d more slices fit (limit %s) on %d nodes; memory reserved %d of %d MB; cpu %d of %d MHz",
		c.Fit, c.Limit, c.Nodes, c.ReservedMB, c.MemoryMB, c.ReservedCPU, c.CPU)
}

// ---- pool ----

func newPoolCommand(g *globals) *cobra.Command {
	pool := groupCmd("pool", "The warm pool: show, scale, pause, resume")
	show := &cobra.Command{
		Use: "show", Short: "The pool's target, its warm and starting slices, and capacity", Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var st adminapi.Status
			if err := g.call(cmd, http.MethodGet, "/admin/api/status", nil, &st); err != nil {
				return err
			}
			return g.print(cmd, poolView(st), func(w io.Writer) error {
				fmt.Fprintln(w, poolLine(st.Pool))
				if st.Capacity != nil {
					fmt.Fprintln(w, capacityLine(*st.Capacity))
				} else {
					fmt.Fprintln(w, "capacity unknown:", st.CapacityError)
				}
				return nil
			})
		},
	}
	scale := &cobra.Command{
		Use: "scale MIN_WARM", Short: "Set how many warm slices to keep ready (stored: every replica, and every restart, keeps it)",
		Args: oneArg("number of warm slices"),
		RunE: func(cmd *cobra.Command, args []string) error {
			n, err := strconv.Atoi(args[0])
			if err != nil || n < 0 {
				return usageErrorf("MIN_WARM %q: want a whole number ≥ 0", args[0])
			}
			return poolAction(cmd, g, "scale", map[string]int{"min_warm": n})
		},
	}
	pause := &cobra.Command{Use: "pause", Short: "Stop refilling the warm pool (repairs go on)", Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return poolAction(cmd, g, "pause", nil) }}
	resume := &cobra.Command{Use: "resume", Short: "Refill the warm pool again", Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return poolAction(cmd, g, "resume", nil) }}
	pool.AddCommand(show, scale, pause, resume)
	return pool
}

// poolView returns the part of the status `pool show --json` prints.
func poolView(st adminapi.Status) any {
	return struct {
		Pool          adminapi.PoolJSON  `json:"pool"`
		Capacity      *slicehub.Capacity `json:"capacity"`
		CapacityError string             `json:"capacity_error,omitempty"`
	}{st.Pool, st.Capacity, st.CapacityError}
}

func poolAction(cmd *cobra.Command, g *globals, action string, body any) error {
	var out adminapi.PoolAnswer
	if err := g.call(cmd, http.MethodPost, "/admin/api/pool/"+action, body, &out); err != nil {
		return err
	}
	return g.print(cmd, out, func(w io.Writer) error { _, err := fmt.Fprintln(w, poolLine(out.Pool)); return err })
}

// ---- slices ----

func newSlicesCommand(g *globals) *cobra.Command {
	slices := groupCmd("slices", "List, inspect and act on slices")
	var state string
	list := &cobra.Command{
		Use: "list", Short: "List slices (--state warm,assigned,…)", Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			path := "/admin/api/slices"
			if state != "" {
				path += "?state=" + url.QueryEscape(state)
			}
			var out struct {
				Slices []adminapi.SliceJSON `json:"slices"`
			}
			if err := g.call(cmd, http.MethodGet, path, nil, &out); err != nil {
				return err
			}
			return g.print(cmd, out, func(w io.Writer) error {
				tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "ID\tSTATE\tUSER\tHEALTHY\tRESTARTS\tSINCE\tJOB")
				for _, s := range out.Slices {
					fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%d\t%s\t%s\n", s.ID, s.State, userCell(s.UserID), yesNo(s.Healthy),
						s.Restarts, s.StateChangedAt.UTC().Format(time.DateTime), s.JobID)
				}
				return tw.Flush()
			})
		},
	}
	list.Flags().StringVar(&state, "state", "", "only these states, comma-separated")

	show := &cobra.Command{
		Use: "show ID", Short: "One slice: its row, route, progress and events", Args: oneArg("slice id"),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := idArg(args, "slice")
			if err != nil {
				return err
			}
			var d adminapi.SliceDetail
			if err := g.call(cmd, http.MethodGet, "/admin/api/slices/"+strconv.FormatInt(id, 10), nil, &d); err != nil {
				return err
			}
			return g.print(cmd, d, func(w io.Writer) error { printSlice(w, d); return nil })
		},
	}

	slices.AddCommand(list, show, newSliceLogsCommand(g))
	for _, act := range slicehub.AdminActions {
		slices.AddCommand(sliceActionCommand(g, act))
	}
	return slices
}

func userCell(id int64) string {
	if id == 0 {
		return "-"
	}
	return strconv.FormatInt(id, 10)
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func printSlice(w io.Writer, d adminapi.SliceDetail) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	s := d.Slice
	fmt.Fprintf(tw, "slice\t%d\n", s.ID)
	fmt.Fprintf(tw, "state\t%s since %s\n", s.State, s.StateChangedAt.UTC().Format(time.DateTime))
	fmt.Fprintf(tw, "user\t%s\n", userCell(s.UserID))
	fmt.Fprintf(tw, "job\t%s\n", s.JobID)
	fmt.Fprintf(tw, "database\t%s\n", s.DBName)
	fmt.Fprintf(tw, "restarts\t%d\n", s.Restarts)
	if d.Route != nil {
		fmt.Fprintf(tw, "route\t%s (allocation %s)\n", d.Route.Addr, d.Route.AllocID)
	} else {
		fmt.Fprintf(tw, "route\tnone (not healthy in Consul)\n")
	}
	if d.Progress != nil {
		fmt.Fprintf(tw, "progress\t%s\n", d.Progress.Stage)
	}
	tw.Flush()
	fmt.Fprintln(w, "events:")
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, e := range d.Events {
		from := string(e.From)
		if from == "" {
			from = "-"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s → %s\t%s\n", e.At.UTC().Format(time.DateTime), e.Actor, from, e.To, e.Reason)
	}
	tw.Flush()
}

// sliceActionCommand is `slicectl slices <action> ID`, made from the
// action's row of slicehub.AdminActions: its flags are the input the row
// asks for, and --wait when the row offers it.
func sliceActionCommand(g *globals, act slicehub.AdminActionSpec) *cobra.Command {
	var confirm, note string
	var wait bool
	var timeout time.Duration
	var userID int64
	cmd := &cobra.Command{
		Use: string(act.Name) + " ID", Short: act.Short, Args: oneArg("slice id"),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := idArg(args, "slice")
			if err != nil {
				return err
			}
			var body any
			switch act.Input {
			case slicehub.InputUser:
				if userID <= 0 {
					return usageErrorf("%s wants --user ID", act.Name)
				}
				body = adminapi.ActionBody{UserID: userID}
			case slicehub.InputConfirm:
				if confirm != strconv.FormatInt(id, 10) {
					return usageErrorf("%s of slice %d cannot be undone: repeat its id with --confirm %d", act.Name, id, id)
				}
				body = adminapi.ActionBody{Confirm: confirm}
			case slicehub.InputNote:
				if strings.TrimSpace(note) == "" {
					return usageErrorf("%s wants --text TEXT", act.Name)
				}
				body = adminapi.ActionBody{Note: note}
			case slicehub.InputNone:
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			ctx, cancel := apiCtx(cmd)
			defer cancel()
			var out adminapi.SliceAnswer
			if err := c.do(ctx, http.MethodPost, fmt.Sprintf("/admin/api/slices/%d/%s", id, act.Name), body, &out); err != nil {
				return err
			}
			if !wait {
				if g.json {
					return printJSON(cmd.OutOrStdout(), out)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "slice %d: %s\n", id, out.Slice.State)
				return nil
			}
			wctx, wcancel := context.WithTimeout(cmd.Context(), timeout)
			defer wcancel()
			d, err := waitHealthy(wctx, c, id, newProgress(cmd.ErrOrStderr()))
			if err != nil {
				return err
			}
			if g.json {
				return printJSON(cmd.OutOrStdout(), d)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "slice %d: %s and healthy\n", id, d.Slice.State)
			return nil
		},
	}
	switch act.Input {
	case slicehub.InputConfirm:
		cmd.Flags().StringVar(&confirm, "confirm", "", "the slice id again, to confirm")
	case slicehub.InputUser:
		cmd.Flags().Int64Var(&userID, "user", 0, "the user to bind the slice to")
	case slicehub.InputNote:
		cmd.Flags().StringVar(&note, "text", "", "the note")
	case slicehub.InputNone:
	}
	if act.Wait {
		cmd.Flags().BoolVar(&wait, "wait", false, "wait until the slice is healthy again, showing progress on stderr")
		cmd.Flags().DurationVar(&timeout, "timeout", 5*time.Minute, "how long --wait waits")
	}
	return cmd
}

// waitHealthy polls the slice until it serves again: assigned (or warm,
// for a slice of the pool) with a passing instance in Consul. A failed
// slice ends the wait with an error; so does the deadline (exit 3).
func waitHealthy(ctx context.Context, c *client, id int64, p *progress) (adminapi.SliceDetail, error) {
	path := "/admin/api/slices/" + strconv.FormatInt(id, 10)
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	var d adminapi.SliceDetail
	for {
		err := c.do(ctx, http.MethodGet, path, nil, &d)
		switch {
		case err != nil && ctx.Err() == nil:
			p.done("")
			return d, err
		case err == nil:
			s := d.Slice
			p.show(stageOf(d), string(s.State))
			if s.Healthy && s.State.Ready() {
				p.done("healthy")
				return d, nil
			}
			if !s.State.Runs() {
				p.done(string(s.State))
				return d, fmt.Errorf("slice %d is %s; it will not turn healthy by itself", id, s.State)
			}
		}
		select {
		case <-ctx.Done():
			p.done("timed out")
			return d, withCode(ExitUnhealthy, fmt.Errorf("slice %d not healthy in time (state %s)", id, d.Slice.State))
		case <-tick.C:
		}
	}
}

// stageOf is how far a starting slice has come. A slice of the warm pool
// has no per-user progress; its row and route tell enough.
func stageOf(d adminapi.SliceDetail) slicehub.Stage {
	switch {
	case d.Slice.Healthy && d.Slice.State.Ready():
		return slicehub.StageHealthy
	case d.Progress != nil:
		if d.Progress.Stage == slicehub.StageHealthy {
			// Healthy under its old job: the new one is not there yet.
			return slicehub.StageRunning
		}
		return d.Progress.Stage
	case d.Slice.JobID != "":
		return slicehub.StageDispatched
	}
	return slicehub.StageQueued
}

// ---- users ----

func newUsersCommand(g *globals) *cobra.Command {
	users := groupCmd("users", "List accounts, create the first admin, disable an account")
	list := &cobra.Command{
		Use: "list", Short: "Every account, with its slice", Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var out struct {
				Users []adminapi.UserJSON `json:"users"`
			}
			if err := g.call(cmd, http.MethodGet, "/admin/api/users", nil, &out); err != nil {
				return err
			}
			if g.json {
				return printJSON(cmd.OutOrStdout(), out)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tEMAIL\tADMIN\tDISABLED\tSLICE\tCREATED")
			for _, u := range out.Users {
				disabled := "-"
				if u.DisabledAt != nil {
					disabled = u.DisabledAt.UTC().Format(time.DateTime)
				}
				fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\n", u.ID, u.Email, yesNo(u.IsAdmin), disabled, userCell(u.SliceID),
					u.CreatedAt.UTC().Format(time.DateTime))
			}
			return tw.Flush()
		},
	}
	var confirm string
	disable := &cobra.Command{
		Use: "disable ID", Short: "Disable an account: its sessions end at once (needs --confirm ID)", Args: oneArg("user id"),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := idArg(args, "user")
			if err != nil {
				return err
			}
			if confirm != strconv.FormatInt(id, 10) {
				return usageErrorf("disabling user %d signs them out everywhere: repeat the id with --confirm %d", id, id)
			}
			var out adminapi.UserAnswer
			if err := g.call(cmd, http.MethodPost, fmt.Sprintf("/admin/api/users/%d/disable", id),
				map[string]string{"confirm": confirm}, &out); err != nil {
				return err
			}
			return g.print(cmd, out, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "user %d (%s) disabled\n", out.User.ID, out.User.Email)
				return err
			})
		},
	}
	disable.Flags().StringVar(&confirm, "confirm", "", "the user id again, to confirm")
	users.AddCommand(list, newCreateAdminCommand(g), disable)
	return users
}
