package ops

import (
	"context"
	"fmt"
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/slicehub/slicehub"
	"github.com/slicehub/slicehub/admin/adminapi"
)

// newDrainCommand is `slicectl drain NODE`: drain a Nomad node and follow
// its slices off it. Each call of the admin API moves the next few slices
// (admin/drain.go); this command calls it once a second and reports each
// move (old allocation -> new allocation on which node, then passing in
// Consul) until every slice that was on the node is passing elsewhere, or
// the deadline passes (exit 1, naming the slices that did not make it).
// A call that fails transiently is made again (followDrain).
func newDrainCommand(g *globals) *cobra.Command {
	var (
		deadline    time.Duration
		maxParallel int
		yes         bool
		interval    = time.Second
	)
	cmd := &cobra.Command{
		Use:   "drain NODE",
		Short: "Drain a Nomad node: move its slices elsewhere and follow them until they pass (needs --yes)",
		Long: `Marks the Nomad node (name, ID or unique ID prefix) ineligible and draining,
then moves its slices to the other nodes a few at a time, showing each move,
until every slice that was on the node is running elsewhere and passing in
Consul. Each slice is unreachable for the seconds its move takes; its
profile and database stay. Nomad itself stops whatever is still on the node
when --deadline passes; slicectl then exits 1 naming the slices that did not
make it.

A gateway that is briefly unreachable or answers 502/503/504 (a restart,
Nomad or Consul away for a moment) is asked again, with a note on stderr,
until --deadline; any other error ends the command at once.`,
		Args: oneArg("node"),
		RunE: func(cmd *cobra.Command, args []string) error {
			node := args[0]
			if !yes {
				return usageErrorf("draining %s restarts every slice on it elsewhere: add --yes", node)
			}
			if deadline <= 0 || deadline > 24*time.Hour {
				return usageErrorf("--deadline must be between 1s and 24h")
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			st, err := followDrain(cmd.Context(), c, node, deadline, maxParallel, interval, newProgress(cmd.ErrOrStderr()))
			if g.json && st != nil {
				if perr := printJSON(cmd.OutOrStdout(), adminapi.DrainJSON{Drain: *st}); perr != nil && err == nil {
					err = perr
				}
			} else if st != nil && err == nil {
				fmt.Fprintf(cmd.OutOrStdout(), "node %s (%s) drained: %d slices moved and passing\n", st.NodeName, short(st.NodeID), len(st.Moves))
			}
			return err
		},
	}
	cmd.Flags().DurationVar(&deadline, "deadline", 5*time.Minute, "how long the slices have to get off the node (also Nomad's drain deadline)")
	cmd.Flags().IntVar(&maxParallel, "max-parallel", 2, "slices moving at once")
	cmd.Flags().BoolVar(&yes, "yes", false, "confirm the drain")
	return cmd
}

// short is the 8-character form Nomad's CLI shows of node and alloc IDs.
func short(id string) string { return id[:min(8, len(id))] }

// followDrain advances the drain until it is done or the deadline passes.
//
// A call that fails transiently (see transient) is made again: the drain's
// state lives in Nomad and each call reads it afresh (admin/drain.go), so
// a repeated call, even of one the gateway did carry out, only moves the
// next slices. The waits start at half the interval and double up to five
// intervals; the failures in a row are bounded by the deadline, not by a
// count, because a gateway restart takes as long as it takes and the drain
// goes on in Nomad meanwhile. Each retry is a line on stderr.
func followDrain(ctx context.Context, c *client, node string, deadline time.Duration, maxParallel int,
	interval time.Duration, p *progress) (*slicehub.DrainStatus, error) {
	end := time.Now().Add(deadline)
	path := "/admin/api/nodes/" + url.PathEscape(node) + "/drain"
	body := adminapi.DrainRequest{Confirm: node, Deadline: deadline.String(), MaxParallel: maxParallel}
	seen := map[int64]string{}
	var last *slicehub.DrainStatus
	failures, backoff := 0, interval/2
	for {
		var out adminapi.DrainJSON
		callCtx, cancel := context.WithTimeout(ctx, time.Minute)
		err := c.do(callCtx, "POST", path, body, &out)
		cancel()
		if err != nil {
			if ctx.Err() != nil || !transient(err) {
				p.done("")
				return last, err
			}
			failures++
			left := time.Until(end)
			if left <= 0 {
				p.done("")
				return last, withCode(ExitError, fmt.Errorf("drain of %s: the deadline of %s passed with the gateway failing (%d calls in a row)%s: %w",
					node, deadline, failures, notPassing(last), err))
			}
			pause := min(backoff, left)
			fmt.Fprintf(p.w, "%sgateway call failed (%d in a row): %v; trying again in %s\n", clearLine(p), failures, err, pause.Round(time.Millisecond))
			backoff = min(2*backoff, 5*interval)
			select {
			case <-ctx.Done():
				p.done("")
				return last, ctx.Err()
			case <-time.After(pause):
			}
			continue
		}
		if failures > 0 {
			fmt.Fprintf(p.w, "%sgateway answering again after %d failed calls\n", clearLine(p), failures)
			failures, backoff = 0, interval/2
		}
		st := out.Drain
		last = &st
		if st.Started {
			fmt.Fprintf(p.w, "draining node %s (%s): %d slices on it\n", st.NodeName, short(st.NodeID), len(st.Moves))
		}
		passing := 0
		for _, m := range st.Moves {
			if m.State == slicehub.MovePassing {
				passing++
			}
			line := m.State
			if m.ToAlloc != "" {
				line += " " + short(m.ToAlloc) + "@" + m.ToNode
			}
			if seen[m.SliceID] != line {
				seen[m.SliceID] = line
				fmt.Fprintf(p.w, "%s slice %d: %s -> %s\n", clearLine(p), m.SliceID, short(m.FromAlloc), describeMove(m))
			}
		}
		p.count(passing, len(st.Moves), "slices passing elsewhere")
		if st.Done {
			p.done("done")
			return last, nil
		}
		if time.Now().After(end) {
			p.done("")
			return last, withCode(ExitError, fmt.Errorf("drain of %s: the deadline of %s passed%s",
				st.NodeName, deadline, notPassing(last)))
		}
		select {
		case <-ctx.Done():
			p.done("")
			return last, ctx.Err()
		case <-time.After(interval):
		}
	}
}

// notPassing names the slices of st that are not passing elsewhere yet,
// as the tail of a deadline's error; empty when there is no status yet.
func notPassing(st *slicehub.DrainStatus) string {
	if st == nil {
		return ""
	}
	var left []string
	for _, m := range st.Moves {
		if m.State != slicehub.MovePassing {
			left = append(left, fmt.Sprintf("slice %d (%s)", m.SliceID, m.State))
		}
	}
	sort.Strings(left)
	return fmt.Sprintf(" with %d of %d slices not passing elsewhere: %s", len(left), len(st.Moves), strings.Join(left, ", "))
}

func describeMove(m slicehub.SliceMove) string {
	switch m.State {
	case slicehub.MoveWaiting:
		return "waiting"
	case slicehub.MoveMoving:
		if m.ToAlloc != "" {
			return short(m.ToAlloc) + " on " + m.ToNode + " (starting)"
		}
		return "(stopped; waiting for a new allocation)"
	case slicehub.MoveStarted:
		return short(m.ToAlloc) + " on " + m.ToNode + " (running, not passing yet)"
	default:
		return short(m.ToAlloc) + " on " + m.ToNode + " (passing)"
	}
}

// clearLine erases the redrawn progress line on a terminal before a
// line of its own is printed.
func clearLine(p *progress) string {
	if p.tty {
		return "\r\033[K"
	}
	return ""
}

// count draws a bar of done out of total, like show does for stages.
func (p *progress) count(done, total int, what string) {
	const width = 20
	n := width
	if total > 0 {
		n = done * width / total
	}
	p.draw(fmt.Sprintf("[%s%s] %d/%d %s", strings.Repeat("#", n), strings.Repeat("-", width-n), done, total, what))
}
