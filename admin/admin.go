// Package admin is the admin JSON API under /admin/api/ (what the ops CLI,
// slicectl, calls to see the platform and act on it) and the HTML admin
// dashboard under /admin (dashboard.go), which share their data and action
// functions. It adds routes to the gateway's /admin router, which already
// lets through only an admin (a session of an is_admin user, or an admin
// API key as a Bearer token) and puts that admin's id in the request's
// locals; errors returned here are *slicehub.Error values that the
// gateway's one error writer turns into {"error","code"} with the status of
// their kind (404 unknown, 409 wrong state, 400 bad input).
//
// It also streams a slice's Nomad logs (logs.go) and dumps and restores
// databases (backup.go). Every action on a slice goes through the
// scheduler's operations, which record it in slice_events with the actor
// "admin:<id>"; every action is also written to the admin_audit table and
// logged here with the admin (and key) that asked. Pool settings an admin
// changes are stored (Deps.Settings) so that every replica applies them. Destructive actions
// (retire, disable) want the target's id repeated in {"confirm": "<id>"},
// so that a mistyped id in a script cannot retire the wrong slice.
package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/slicehub/slicehub"
	"github.com/slicehub/slicehub/admin/adminapi"
)

// Store is what the API reads and writes in PostgreSQL (*postgres.DB).
type Store interface {
	Slices(ctx context.Context, states ...slicehub.SliceState) ([]slicehub.Slice, error)
	Slice(ctx context.Context, id int64) (slicehub.Slice, error)
	SliceEvents(ctx context.Context, id int64) ([]slicehub.SliceEvent, error)
	CountSlices(ctx context.Context) (map[slicehub.SliceState]int, error)
	AdminUsers(ctx context.Context) ([]slicehub.UserRow, error)
	UserByID(ctx context.Context, id int64) (slicehub.User, error)
	SetUserDisabled(ctx context.Context, userID int64, disabled bool) (slicehub.User, error)
	// NoteSlice records an event that changes nothing (the note action).
	NoteSlice(ctx context.Context, id int64, actor, reason string) error
}

// Pool is the scheduler (*scheduler.Scheduler): the slice operations and
// the warm pool's runtime settings.
type Pool interface {
	Suspend(ctx context.Context, sliceID int64, actor string) (slicehub.Slice, error)
	Resume(ctx context.Context, sliceID int64, actor string) (slicehub.Slice, error)
	Restart(ctx context.Context, sliceID int64, actor string) (slicehub.Slice, error)
	Retire(ctx context.Context, sliceID int64, actor string) (slicehub.Slice, error)
	Reassign(ctx context.Context, sliceID, userID int64, actor string) (slicehub.Slice, error)
	Progress(ctx context.Context, userID int64) (slicehub.SliceProgress, error)
	Capacity(ctx context.Context) (slicehub.Capacity, error)
	SetPaused(p bool)
	Paused() bool
	MinWarm() int
	SetMinWarm(n int) error
	MaxSlices() int
}

// Auditor appends to the audit table (*postgres.DB).
type Auditor interface {
	Audit(ctx context.Context, a slicehub.AdminAudit) error
}

// PoolSettingsStore persists the pool settings (*postgres.DB), each alone,
// and notifies every replica, which applies them (cmd/slicehub).
type PoolSettingsStore interface {
	SetPoolPaused(ctx context.Context, paused bool, actor string) error
	SetPoolMinWarm(ctx context.Context, minWarm int, actor string) error
}

// Routes is the route table (*consul.Routes): where a slice answers.
type Routes interface {
	Lookup(sliceID int64) (slicehub.Route, bool)
}

// Deps are the API's collaborators. UserKey and KeyKey are the locals keys
// under which the admin guard leaves the admin's id and, for a request
// made with an API key, the key's id (gateway.LocalsUserID and
// gateway.LocalsAdminKeyID; passed in so that this package does not import
// the gateway).
type Deps struct {
	Store   Store
	Pool    Pool
	Routes  Routes
	UserKey string
	KeyKey  string
	Logger  *slog.Logger
	// Timeout bounds one request's calls to PostgreSQL and Nomad (10s).
	Timeout time.Duration

	// The HTML dashboard (dashboard.go) is served when Web is set.
	Web Web
	// Telemetry feeds the series, per-slice usage and alert banner; nil
	// until the telemetry package is wired in, and the panels say so.
	Telemetry Telemetry
	// Tokens lets the dashboard read a slice's WhatsApp state and QR code;
	// nil: the slice page shows neither.
	Tokens Tokens
	// Events feeds the audit log panel; nil: no panel.
	Events EventLog
	// Logs streams a slice's Nomad logs (*nomad.Client); nil: the logs
	// endpoint answers 503.
	Logs SliceLogs
	// Audit records admin actions in the audit table (*postgres.DB); nil:
	// they are only logged.
	Audit Auditor
	// Settings keeps the pool settings an admin changes, for every replica
	// and the next start (*postgres.DB); nil: they last until this process
	// ends.
	Settings PoolSettingsStore
	// Backups dumps and restores databases (*postgres.DB); nil: the backup
	// endpoints answer 503.
	Backups Backups
	// Jobs waits for a suspended slice's job to stop before a restore
	// (*nomad.Client); nil: no wait.
	Jobs JobWaiter
	// NomadURL and ConsulURL are the UIs' bases as the admin's browser
	// reaches them ("http://nomad.internal:4646"); ConsulDC is the Consul
	// datacenter of the slice service ("dc1"). Empty: no links.
	NomadURL, ConsulURL, ConsulDC string
	// Poll is how often the live panels are re-rendered for each open
	// dashboard (3s); MaxStream ends an event stream, after which the
	// browser reconnects through the admin guard (2 min).
	Poll, MaxStream time.Duration
	// Done ends every event stream (the daemon shutting down); nil: never.
	Done <-chan struct{}
}

// API serves /admin/api/.
type API struct {
	d   Deps
	log *slog.Logger
}

// bodyLimit bounds a request body: every body here is a few fields.
const bodyLimit = 4 << 10

// Register adds the API's routes to the gateway's /admin router.
func Register(router fiber.Router, d Deps) *API {
	if d.Logger == nil {
		d.Logger = slog.Default()
	}
	if d.Timeout <= 0 {
		d.Timeout = 10 * time.Second
	}
	if d.Poll <= 0 {
		d.Poll = 3 * time.Second
	}
	if d.MaxStream <= 0 {
		d.MaxStream = 2 * time.Minute
	}
	if d.Telemetry != nil {
		d.Telemetry = newSeriesCache(d.Telemetry, 30*time.Second)
	}
	a := &API{d: d, log: d.Logger.With("component", "admin_api")}
	if d.Web != nil {
		registerDashboard(router, a)
	}
	r := router.Group("/api")
	r.Get("/status", a.status)
	r.Get("/slices", a.listSlices)
	r.Get("/slices/:id", a.showSlice)
	r.Get("/slices/:id/logs", a.sliceLogs)
	r.Get("/slices/:id/backup", a.sliceBackup)
	r.Post("/slices/:id/restore", a.sliceRestore)
	r.Get("/gateway/backup", a.gatewayBackup)
	for _, act := range slicehub.AdminActions {
		r.Post("/slices/:id/"+string(act.Name), a.sliceAction(act))
	}
	r.Post("/pool/pause", a.setPaused(true))
	r.Post("/pool/resume", a.setPaused(false))
	r.Post("/pool/scale", a.scale)
	r.Get("/users", a.listUsers)
	r.Post("/users/:id/disable", a.disableUser)
	registerDrain(r, a)
	return a
}

// The wire shapes are package adminapi's, which slicectl reads too.
type (
	SliceJSON   = adminapi.SliceJSON
	EventJSON   = adminapi.EventJSON
	RouteJSON   = adminapi.RouteJSON
	SliceDetail = adminapi.SliceDetail
	PoolJSON    = adminapi.PoolJSON
	Status      = adminapi.Status
	UserJSON    = adminapi.UserJSON
	actionBody  = adminapi.ActionBody
)

func (a *API) sliceJSON(sl slicehub.Slice) SliceJSON {
	_, healthy := a.d.Routes.Lookup(sl.ID)
	return SliceJSON{ID: sl.ID, State: sl.State, UserID: sl.UserID, JobID: sl.JobID, DBName: sl.DBName,
		Restarts: sl.Restarts, CreatedAt: sl.CreatedAt, StateChangedAt: sl.StateChangedAt, Healthy: healthy}
}

func userJSON(u slicehub.User, sliceID int64) UserJSON {
	return UserJSON{ID: u.ID, Email: u.Email, IsAdmin: u.IsAdmin, CreatedAt: u.CreatedAt, DisabledAt: u.DisabledAt, SliceID: sliceID}
}

func (a *API) ctx(c *fiber.Ctx) (context.Context, context.CancelFunc) {
	return context.WithTimeout(c.UserContext(), a.d.Timeout)
}

// actor is who acts, as the scheduler records it: "admin:<id>".
func (a *API) actor(c *fiber.Ctx) (string, int64) {
	id, _ := c.Locals(a.d.UserKey).(int64)
	return "admin:" + strconv.FormatInt(id, 10), id
}

// audit logs an admin action with who asked (the admin, and the key if
// the request came with one) and appends it to the audit table. attrs are
// key/value pairs: "action" names the action, "slice_id" or "user_id" its
// target, and all of them go into the row's detail. A failed write is
// logged: the action is done by then, and the log line still records it.
func (a *API) audit(c *fiber.Ctx, msg string, attrs ...any) {
	actor, _ := a.actor(c)
	row := slicehub.AdminAudit{Actor: actor, Target: "pool", Detail: map[string]any{}}
	if k, ok := c.Locals(a.d.KeyKey).(int64); ok {
		row.KeyID = k
	}
	if msg != "admin action" {
		row.Detail["outcome"] = msg
	}
	for i := 0; i+1 < len(attrs); i += 2 {
		k, _ := attrs[i].(string)
		switch v := attrs[i+1].(type) {
		case error:
			row.Detail[k] = slicehub.MessageOf(v)
		case fmt.Stringer:
			row.Detail[k] = v.String()
		default:
			row.Detail[k] = v
		}
		switch k {
		case "action":
			row.Action = fmt.Sprint(attrs[i+1])
		case "slice_id":
			row.Target = fmt.Sprintf("slice:%v", attrs[i+1])
		case "user_id":
			if row.Target == "pool" {
				row.Target = fmt.Sprintf("user:%v", attrs[i+1])
			}
		case "database":
			row.Target = "gateway"
		}
	}
	delete(row.Detail, "action")
	logAttrs := append(attrs, "actor", actor)
	if row.KeyID != 0 {
		logAttrs = append(logAttrs, "via_key", row.KeyID)
	}
	a.log.Info(msg, logAttrs...)
	if a.d.Audit == nil {
		return
	}
	// Its own deadline: a stream's request context may be long gone.
	ctx, cancel := context.WithTimeout(context.Background(), a.d.Timeout)
	defer cancel()
	if err := a.d.Audit.Audit(ctx, row); err != nil {
		a.log.Error("admin action not written to the audit table", "action", row.Action, "actor", actor, "err", err)
	}
}

func (a *API) status(c *fiber.Ctx) error {
	const op = "admin.status"
	ctx, cancel := a.ctx(c)
	defer cancel()
	counts, err := a.d.Store.CountSlices(ctx)
	if err != nil {
		return slicehub.Wrap(op, slicehub.KindInternal, err)
	}
	all := make(map[slicehub.SliceState]int, len(slicehub.States))
	for _, st := range slicehub.States {
		all[st] = counts[st]
	}
	out := Status{Slices: all, Pool: PoolJSON{
		MinWarm: a.d.Pool.MinWarm(), Warm: all[slicehub.StateWarm], Starting: all[slicehub.StateProvisioning],
		MaxSlices: a.d.Pool.MaxSlices(), Paused: a.d.Pool.Paused(),
	}}
	// Nomad being down is something status must show, not fail on.
	if capa, err := a.d.Pool.Capacity(ctx); err != nil {
		out.CapacityError = slicehub.MessageOf(err)
		a.log.Warn("status without capacity", "err", err)
	} else {
		out.Capacity = &capa
	}
	return c.JSON(out)
}

func (a *API) listSlices(c *fiber.Ctx) error {
	const op = "admin.slices"
	var states []slicehub.SliceState
	if q := c.Query("state"); q != "" {
		for _, s := range strings.Split(q, ",") {
			st := slicehub.SliceState(strings.TrimSpace(s))
			if !st.Valid() {
				return slicehub.Errorf(op, slicehub.KindInvalid, "invalid_state", "unknown state %q", s)
			}
			states = append(states, st)
		}
	}
	ctx, cancel := a.ctx(c)
	defer cancel()
	rows, err := a.d.Store.Slices(ctx, states...)
	if err != nil {
		return slicehub.Wrap(op, slicehub.KindInternal, err)
	}
	out := make([]SliceJSON, len(rows))
	for i, sl := range rows {
		out[i] = a.sliceJSON(sl)
	}
	return c.JSON(fiber.Map{"slices": out})
}

func parseID(op string, c *fiber.Ctx, what string) (int64, error) {
	id, ok := slicehub.ParseSliceID(c.Params("id"))
	if !ok {
		return 0, slicehub.Errorf(op, slicehub.KindInvalid, "invalid_id", "the %s id must be a positive integer", what)
	}
	return id, nil
}

func (a *API) showSlice(c *fiber.Ctx) error {
	const op = "admin.slice"
	id, err := parseID(op, c, "slice")
	if err != nil {
		return err
	}
	ctx, cancel := a.ctx(c)
	defer cancel()
	sl, err := a.d.Store.Slice(ctx, id)
	if err != nil {
		return slicehub.Wrap(op, slicehub.KindInternal, err)
	}
	evs, err := a.d.Store.SliceEvents(ctx, id)
	if err != nil {
		return slicehub.Wrap(op, slicehub.KindInternal, err)
	}
	out := SliceDetail{Slice: a.sliceJSON(sl), Events: make([]EventJSON, len(evs))}
	for i, e := range evs {
		out.Events[i] = EventJSON{At: e.At, Actor: e.Actor, From: e.From, To: e.To, Reason: e.Reason}
	}
	if rt, ok := a.d.Routes.Lookup(id); ok {
		out.Route = &RouteJSON{Addr: rt.Addr, AllocID: rt.AllocID}
	}
	// Progress is kept per user (it is what a waiting user sees); a slice
	// of the warm pool has none.
	if sl.UserID != 0 {
		p, err := a.d.Pool.Progress(ctx, sl.UserID)
		switch {
		case err == nil && p.SliceID == id:
			out.Progress = &p
		case err != nil && slicehub.KindOf(err) != slicehub.KindNotFound:
			a.log.Warn("slice progress unknown", "slice_id", id, "err", err)
		}
	}
	return c.JSON(out)
}

func decode(op string, c *fiber.Ctx) (actionBody, error) {
	var in actionBody
	body := bytes.TrimSpace(c.Body())
	if len(body) == 0 {
		return in, nil
	}
	if len(body) > bodyLimit {
		return in, slicehub.Errorf(op, slicehub.KindTooLarge, "too_large", "the request body is too large")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&in); err != nil || dec.More() {
		return in, &slicehub.Error{Op: op, Kind: slicehub.KindInvalid, Code: "invalid_json",
			Message: "the body is not the expected JSON", Err: err}
	}
	return in, nil
}

func confirmed(op string, in actionBody, id int64, what string) error {
	if strings.TrimSpace(in.Confirm) != strconv.FormatInt(id, 10) {
		return slicehub.Errorf(op, slicehub.KindInvalid, "confirmation_required",
			"this cannot be undone: repeat the %s id in {\"confirm\": \"%d\"}", what, id)
	}
	return nil
}

func (a *API) sliceAction(act slicehub.AdminActionSpec) fiber.Handler {
	op := "admin." + string(act.Name)
	return func(c *fiber.Ctx) error {
		id, err := parseID(op, c, "slice")
		if err != nil {
			return err
		}
		in, err := decode(op, c)
		if err != nil {
			return err
		}
		ctx, cancel := a.ctx(c)
		defer cancel()
		sl, err := a.runSliceAction(ctx, c, act, id, in)
		if err != nil {
			return err
		}
		return c.JSON(adminapi.SliceAnswer{Slice: a.sliceJSON(sl)})
	}
}

// runSliceAction is one slice action, shared by the JSON API and the
// dashboard's forms so that both check, act and audit the same way. The
// input the action's row asks for is checked here, before the switch.
func (a *API) runSliceAction(ctx context.Context, c *fiber.Ctx, act slicehub.AdminActionSpec, id int64, in actionBody) (slicehub.Slice, error) {
	op := "admin." + string(act.Name)
	actor, _ := a.actor(c)
	switch act.Input {
	case slicehub.InputConfirm:
		if err := confirmed(op, in, id, "slice"); err != nil {
			return slicehub.Slice{}, err
		}
	case slicehub.InputUser:
		if in.UserID <= 0 {
			return slicehub.Slice{}, slicehub.Errorf(op, slicehub.KindInvalid, "invalid_user", "a user_id is required")
		}
		if _, err := a.d.Store.UserByID(ctx, in.UserID); err != nil {
			return slicehub.Slice{}, slicehub.Wrap(op, slicehub.KindInternal, err)
		}
	case slicehub.InputNote:
		in.Note = strings.TrimSpace(in.Note)
		if in.Note == "" || len(in.Note) > slicehub.MaxNoteLen {
			return slicehub.Slice{}, slicehub.Errorf(op, slicehub.KindInvalid, "invalid_note",
				"a note of 1 to %d bytes is required", slicehub.MaxNoteLen)
		}
	case slicehub.InputNone:
	}
	var (
		sl  slicehub.Slice
		err error
	)
	switch act.Name {
	case slicehub.ActionSuspend:
		sl, err = a.d.Pool.Suspend(ctx, id, actor)
	case slicehub.ActionResume:
		sl, err = a.d.Pool.Resume(ctx, id, actor)
	case slicehub.ActionRestart:
		sl, err = a.d.Pool.Restart(ctx, id, actor)
	case slicehub.ActionRetire:
		sl, err = a.d.Pool.Retire(ctx, id, actor)
	case slicehub.ActionReassign:
		sl, err = a.d.Pool.Reassign(ctx, id, in.UserID, actor)
	case slicehub.ActionNote:
		if err = a.d.Store.NoteSlice(ctx, id, actor, "note: "+in.Note); err == nil {
			sl, err = a.d.Store.Slice(ctx, id)
		}
	default:
		return sl, slicehub.Errorf(op, slicehub.KindNotFound, "unknown_action", "no action %q", act.Name)
	}
	if err != nil {
		a.audit(c, "admin action refused", "action", act.Name, "slice_id", id, "err", err)
		return sl, slicehub.Wrap(op, slicehub.KindInternal, err)
	}
	a.audit(c, "admin action", "action", act.Name, "slice_id", id, "state", sl.State, "user_id", in.UserID)
	return sl, nil
}

func (a *API) poolJSON(ctx context.Context) (PoolJSON, error) {
	counts, err := a.d.Store.CountSlices(ctx)
	if err != nil {
		return PoolJSON{}, err
	}
	return PoolJSON{MinWarm: a.d.Pool.MinWarm(), Warm: counts[slicehub.StateWarm],
		Starting: counts[slicehub.StateProvisioning], MaxSlices: a.d.Pool.MaxSlices(), Paused: a.d.Pool.Paused()}, nil
}

func (a *API) setPaused(p bool) fiber.Handler {
	op := "admin.pool_resume"
	if p {
		op = "admin.pool_pause"
	}
	return func(c *fiber.Ctx) error {
		if _, err := decode(op, c); err != nil {
			return err
		}
		ctx, cancel := a.ctx(c)
		defer cancel()
		if err := a.runSetPaused(ctx, c, p); err != nil {
			return err
		}
		pool, err := a.poolJSON(ctx)
		if err != nil {
			return slicehub.Wrap(op, slicehub.KindInternal, err)
		}
		return c.JSON(adminapi.PoolAnswer{Pool: pool})
	}
}

// runSetPaused pauses or resumes the warm pool, for the JSON API and the
// dashboard's forms alike. The setting is stored first: every replica, and
// this one after a restart, applies it from there.
func (a *API) runSetPaused(ctx context.Context, c *fiber.Ctx, p bool) error {
	op, action := "admin.pool_resume", "pool_resume"
	if p {
		op, action = "admin.pool_pause", "pool_pause"
	}
	if a.d.Settings != nil {
		actor, _ := a.actor(c)
		if err := a.d.Settings.SetPoolPaused(ctx, p, actor); err != nil {
			return slicehub.Wrap(op, slicehub.KindInternal, err)
		}
	}
	a.d.Pool.SetPaused(p)
	a.audit(c, "admin action", "action", action, "paused", p)
	return nil
}

func (a *API) scale(c *fiber.Ctx) error {
	const op = "admin.pool_scale"
	in, err := decode(op, c)
	if err != nil {
		return err
	}
	if err := a.runScale(c, in); err != nil {
		return err
	}
	ctx, cancel := a.ctx(c)
	defer cancel()
	pool, err := a.poolJSON(ctx)
	if err != nil {
		return slicehub.Wrap(op, slicehub.KindInternal, err)
	}
	return c.JSON(adminapi.PoolAnswer{Pool: pool})
}

// runScale sets the warm pool's target, for the JSON API and the
// dashboard's form alike.
func (a *API) runScale(c *fiber.Ctx, in actionBody) error {
	const op = "admin.pool_scale"
	if in.MinWarm == nil {
		return slicehub.Errorf(op, slicehub.KindInvalid, "invalid_min_warm", "min_warm is required")
	}
	if a.d.Settings != nil {
		// Checked before it is stored (as the scheduler checks it): a stored
		// target it refuses would be refused by every replica at every start.
		if n := *in.MinWarm; n < 0 || n > a.d.Pool.MaxSlices() {
			return slicehub.Errorf(op, slicehub.KindInvalid, "invalid_min_warm",
				"min_warm must be between 0 and max_slices (%d)", a.d.Pool.MaxSlices())
		}
		actor, _ := a.actor(c)
		ctx, cancel := a.ctx(c)
		defer cancel()
		if err := a.d.Settings.SetPoolMinWarm(ctx, *in.MinWarm, actor); err != nil {
			return slicehub.Wrap(op, slicehub.KindInternal, err)
		}
	}
	if err := a.d.Pool.SetMinWarm(*in.MinWarm); err != nil {
		return slicehub.Wrap(op, slicehub.KindInternal, err)
	}
	a.audit(c, "admin action", "action", "pool_scale", "min_warm", *in.MinWarm)
	return nil
}

func (a *API) listUsers(c *fiber.Ctx) error {
	const op = "admin.users"
	ctx, cancel := a.ctx(c)
	defer cancel()
	rows, err := a.d.Store.AdminUsers(ctx)
	if err != nil {
		return slicehub.Wrap(op, slicehub.KindInternal, err)
	}
	out := make([]UserJSON, len(rows))
	for i, r := range rows {
		out[i] = userJSON(r.User, r.SliceID)
	}
	return c.JSON(fiber.Map{"users": out})
}

// disableUser disables an account: its sessions stop at once on every
// replica (the users trigger). Its slice keeps running; suspend or retire
// it separately, since billing may still owe the customer an export.
func (a *API) disableUser(c *fiber.Ctx) error {
	const op = "admin.disable_user"
	id, err := parseID(op, c, "user")
	if err != nil {
		return err
	}
	in, err := decode(op, c)
	if err != nil {
		return err
	}
	ctx, cancel := a.ctx(c)
	defer cancel()
	u, err := a.runDisableUser(ctx, c, id, in)
	if err != nil {
		return err
	}
	return c.Status(http.StatusOK).JSON(adminapi.UserAnswer{User: userJSON(u, 0)})
}

// runDisableUser is the disable action, shared by the JSON API and the
// dashboard's form.
func (a *API) runDisableUser(ctx context.Context, c *fiber.Ctx, id int64, in actionBody) (slicehub.User, error) {
	const op = "admin.disable_user"
	if err := confirmed(op, in, id, "user"); err != nil {
		return slicehub.User{}, err
	}
	// An admin who disables themself loses the API they would need to undo it.
	if _, self := a.actor(c); self == id {
		return slicehub.User{}, slicehub.Errorf(op, slicehub.KindConflict, "self_disable", "an admin cannot disable their own account")
	}
	u, err := a.d.Store.SetUserDisabled(ctx, id, true)
	if err != nil {
		return u, slicehub.Wrap(op, slicehub.KindInternal, err)
	}
	a.audit(c, "admin action", "action", "disable_user", "user_id", id)
	return u, nil
}
