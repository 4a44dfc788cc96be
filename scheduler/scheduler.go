// Package scheduler owns the policy of running slices: the warm pool, claims,
// provisioning a slice (its database, role and dispatched child job), the
// credentials hand-over at a slice's bootstrap, the operations billing and
// admins perform on slices, and the reconcile loop that keeps PostgreSQL
// (the truth about users and slices), Nomad (what runs) and Consul (what is
// healthy) in agreement. It talks to Nomad only through the interfaces it
// declares (nomad.go), which package nomad implements.
//
// Claims, bootstraps, progress and the operations may be served by any
// gateway replica: they change PostgreSQL through the state machine, whose
// transitions are atomic, and at most stop a Nomad job (which is
// idempotent). Everything that dispatches runs in Run, which only the
// leader calls (see consul.Lead), so that dispatches happen from one place,
// one at a time: Nomad's idempotency tokens are not safe against concurrent
// dispatches in the release we run.
//
// The reconcile is level-triggered: each pass reads the whole of PostgreSQL's
// live slices, Nomad's children and allocations, and Consul's routes, and
// repairs what disagrees, so a missed event or a crash between two steps is
// repaired by the next pass. Events (Nomad's event stream, Consul changes,
// claims, LISTEN/NOTIFY in the daemon) only make the next pass come sooner;
// the interval is the backstop.
package scheduler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/slicehub/slicehub"
)

// Store is what the scheduler needs from PostgreSQL (*postgres.DB).
type Store interface {
	CreateSlice(ctx context.Context, userID int64, actor, reason string) (slicehub.Slice, error)
	Transition(ctx context.Context, id int64, c slicehub.Change) (slicehub.Slice, error)
	ClaimWarm(ctx context.Context, userID int64, actor string) (slicehub.Slice, error)
	ClaimProvisioning(ctx context.Context, userID int64, actor string) (slicehub.Slice, error)
	Slice(ctx context.Context, id int64) (slicehub.Slice, error)
	SliceForUser(ctx context.Context, userID int64) (slicehub.Slice, error)
	Slices(ctx context.Context, states ...slicehub.SliceState) ([]slicehub.Slice, error)
	CountSlices(ctx context.Context) (map[slicehub.SliceState]int, error)
	SliceProgress(ctx context.Context, userID int64) (slicehub.SliceProgress, error)
	ProvisionDatabase(ctx context.Context, id int64) error
	SliceCredentials(ctx context.Context, id int64, dbHost string) (slicehub.SliceCredentials, error)
	GatewayToken(ctx context.Context, id int64) (string, error)
	ClaimBootstrap(ctx context.Context, allocID string, id int64, dbHost string) (slicehub.SliceCredentials, error)
	RecordPlacement(ctx context.Context, id int64, jobID, allocID, addr string) (bool, error)

	RecordFailures(ctx context.Context, id int64, jobID string, observed int, reason string, at time.Time) (int, error)
	RecordRepair(ctx context.Context, id int64, jobID, reason string, at time.Time) error
	RecentFailures(ctx context.Context, id int64, since time.Time) (int, error)
	ResetFailures(ctx context.Context, id int64) error

	Retire(ctx context.Context, id int64, from []slicehub.SliceState, actor, reason string, needsDump bool) (slicehub.Slice, error)
	Retirements(ctx context.Context) ([]slicehub.Retirement, error)
	DumpDatabase(ctx context.Context, id int64, dir, pgDump string) (string, error)
	MarkDumped(ctx context.Context, id int64, path, actor string) error
	DropDatabase(ctx context.Context, id int64) error
	MarkDropped(ctx context.Context, id int64, actor, reason string) error
	Reassign(ctx context.Context, sliceID, userID int64, actor string) (slicehub.Slice, error)

	// Hand dispatches (adopt.go).
	AdoptSlice(ctx context.Context, id int64, actor, reason string) (slicehub.Slice, error)
	NoteSlice(ctx context.Context, id int64, actor, reason string) error
	NoteDispatch(ctx context.Context, jobID, actor, action, reason string) error
}

// Routes is the healthy view, from package consul.
type Routes interface {
	Snapshot() map[int64]slicehub.Route
	Subscribe() (<-chan struct{}, func())
}

// routeRefresher is implemented by a route table that routes only recorded
// placements (consul.Routes): after recording one, the scheduler asks it to
// reload, so that the new allocation is routed without waiting for Consul's
// next change.
type routeRefresher interface{ Refresh() }

// routeStatus is implemented by a route table that can tell whether it is
// current (consul.Routes): while it is not, a missing route proves nothing.
type routeStatus interface {
	Status() (lastSync time.Time, err error)
}

// Config tunes the pool and the reconcile loop.
type Config struct {
	MinWarm   int // warm, unassigned slices to keep ready (default 1)
	MaxSlices int // running slices in all, warm or assigned (default 50)
	// Interval between full reconciles. Nomad's event stream, changes in
	// Consul, claims and Kick trigger one at once; the interval is the
	// backstop for anything they miss.
	Interval time.Duration
	// EventDelay gathers a burst of Nomad events (an allocation emits
	// several as it starts) into one reconcile, and so bounds how often
	// events alone can start one (a full pass over 1,000 slices takes about
	// 0.2 s). Default 200ms.
	EventDelay time.Duration
	// ProvisionTimeout is how long a dispatched slice may take to turn
	// healthy before it is dispatched again.
	ProvisionTimeout time.Duration
	// UnhealthyTimeout is how long a warm or assigned slice whose job runs
	// may stay without a passing instance in Consul before it is
	// dispatched again: Nomad restarts a failing task itself, but not one
	// whose registration vanished. Not counted while the route table
	// cannot reach Consul. Default 5 minutes.
	UnhealthyTimeout time.Duration
	// ProvisionParallelism is how many slice databases a pass creates at
	// once before it dispatches their jobs one by one. CREATE DATABASE
	// spends most of its ~250 ms waiting, so a few side by side multiply
	// the refill rate; each holds a connection of the gateway's pool for
	// that time, so keep it well below the pool's size. Default 4.
	ProvisionParallelism int
	// MaxAttempts is the restart budget: how many failures a slice may have
	// within RepairWindow, counting the task restarts and failed
	// allocations Nomad reports and the re-dispatches the scheduler makes.
	// The failure that reaches it marks the slice failed, raises an alert
	// (an error log line and slicehub_slice_failures_total) and, for a warm
	// slice, makes the pool replace it.
	MaxAttempts  int
	RepairWindow time.Duration
	// WarmTTL recycles a warm slice that waited longer than this for a user
	// (Chromium's memory grows while it idles): a replacement is started
	// first, and the old slice is retired once the pool is full again.
	// 0 never recycles.
	WarmTTL time.Duration
	// DumpDir receives the final pg_dump of each retired slice that served
	// a user. Without it, those databases are never dropped.
	DumpDir string
	// PgDump is the pg_dump program; empty finds the newest installed.
	PgDump string
	// DBRetention is how long a retired slice's database is kept (after
	// its final dump) before it is dropped. Default 30 days.
	DBRetention time.Duration
	// RetentionInterval is how often a reconcile also runs the retention
	// step (dumps and drops). Default 1 minute.
	RetentionInterval time.Duration
	// CapacityCacheTTL bounds how stale Capacity's answer may be (2s).
	CapacityCacheTTL time.Duration
	// ProgressCacheTTL bounds how often Progress asks Nomad about one job (1s).
	ProgressCacheTTL time.Duration
	// SliceDBHost is the PostgreSQL host slices connect to, when it differs
	// from the gateway's view (a container network, another server).
	SliceDBHost string
	// Admission caps dispatches, pairings and imports per host
	// (admission.go).
	Admission Admission
	Logger    *slog.Logger
	Metrics   *Metrics
	Now       func() time.Time
}

func (c *Config) defaults() {
	if c.MinWarm < 0 {
		c.MinWarm = 0
	}
	if c.MaxSlices <= 0 {
		c.MaxSlices = 50
	}
	if c.Interval <= 0 {
		c.Interval = 10 * time.Second
	}
	if c.EventDelay <= 0 {
		c.EventDelay = 200 * time.Millisecond
	}
	if c.ProvisionTimeout <= 0 {
		c.ProvisionTimeout = 3 * time.Minute
	}
	if c.UnhealthyTimeout <= 0 {
		c.UnhealthyTimeout = 5 * time.Minute
	}
	if c.ProvisionParallelism <= 0 {
		c.ProvisionParallelism = 4
	}
	if c.MaxAttempts <= 0 {
		c.MaxAttempts = 5
	}
	if c.RepairWindow <= 0 {
		c.RepairWindow = time.Hour
	}
	if c.DBRetention <= 0 {
		c.DBRetention = 30 * 24 * time.Hour
	}
	if c.RetentionInterval <= 0 {
		c.RetentionInterval = time.Minute
	}
	if c.CapacityCacheTTL <= 0 {
		c.CapacityCacheTTL = 2 * time.Second
	}
	if c.ProgressCacheTTL <= 0 {
		c.ProgressCacheTTL = time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Metrics == nil {
		c.Metrics = NewMetrics(nil)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	c.Admission.defaults()
}

// Scheduler runs the pool. Create it with New.
type Scheduler struct {
	store  Store
	nomad  Nomad
	routes Routes
	cfg    Config
	log    *slog.Logger
	kick   chan struct{}

	// reconcileMu makes passes one at a time, whoever calls Reconcile.
	reconcileMu sync.Mutex

	mu         sync.Mutex
	paused     bool
	dispatched map[int64]time.Time // slice -> when this leader dispatched its current job
	observed   map[string]int      // job -> Nomad failures already recorded
	exhausted  bool
	dumpWarned bool
	lastRetain time.Time
	// reaped: retired slices whose profile reaper was dispatched.
	reaped    map[int64]bool
	kickTimer *time.Timer
	capLast   slicehub.Capacity
	capAt     time.Time
	progress  map[string]allocSeen // job -> what Progress last learnt from Nomad
	// unhealthy: slice -> since when this leader has seen it running
	// without a route.
	unhealthy map[int64]time.Time
	// unverified: the warning that Nomad enforces no ACLs was logged.
	unverified atomic.Bool
}

// New returns a scheduler.
func New(store Store, nomad Nomad, routes Routes, cfg Config) *Scheduler {
	cfg.defaults()
	return &Scheduler{store: store, nomad: nomad, routes: routes, cfg: cfg,
		log: cfg.Logger.With("component", "scheduler"), kick: make(chan struct{}, 1),
		dispatched: map[int64]time.Time{}, observed: map[string]int{}, progress: map[string]allocSeen{},
		unhealthy: map[int64]time.Time{}}
}

// Kick asks the leader's loop for a reconcile now (coalesced).
func (s *Scheduler) Kick() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// kickSoon kicks after EventDelay, once for a burst.
func (s *Scheduler) kickSoon() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.kickTimer != nil {
		return
	}
	s.kickTimer = time.AfterFunc(s.cfg.EventDelay, func() {
		s.mu.Lock()
		s.kickTimer = nil
		s.mu.Unlock()
		s.Kick()
	})
}

// SetPaused stops (true) or restarts (false) refilling the warm pool, and
// recycling it by TTL. Repairs and on-demand slices go on while paused.
func (s *Scheduler) SetPaused(p bool) {
	s.mu.Lock()
	s.paused = p
	s.mu.Unlock()
	s.Kick()
}

// Claim binds userID to a slice: its existing one, else a warm one, else one
// that is starting, else a new on-demand slice that the leader dispatches
// first. It never fails because the pool is empty; the caller follows the
// slice's Progress until it is assigned.
func (s *Scheduler) Claim(ctx context.Context, userID int64) (slicehub.Slice, error) {
	const op = "scheduler.claim"
	start := time.Now()
	actor := fmt.Sprintf("user:%d", userID)
	if sl, err := s.store.SliceForUser(ctx, userID); err == nil {
		return sl, nil
	} else if slicehub.KindOf(err) != slicehub.KindNotFound {
		return sl, slicehub.Wrap(op, slicehub.KindInternal, err)
	}
	result := "warm"
	sl, err := s.store.ClaimWarm(ctx, userID, actor)
	if slicehub.KindOf(err) == slicehub.KindNotFound {
		result = "starting"
		sl, err = s.store.ClaimProvisioning(ctx, userID, actor)
	}
	if slicehub.KindOf(err) == slicehub.KindNotFound {
		result = "pool_empty"
		sl, err = s.store.CreateSlice(ctx, userID, actor, "on-demand: the warm pool was empty")
	}
	if slicehub.KindOf(err) == slicehub.KindConflict {
		// A concurrent claim for the same user won; return its slice.
		if got, err2 := s.store.SliceForUser(ctx, userID); err2 == nil {
			return got, nil
		}
	}
	if err != nil {
		return sl, slicehub.Wrap(op, slicehub.KindInternal, err)
	}
	s.cfg.Metrics.Claims.WithLabelValues(result).Inc()
	s.cfg.Metrics.ClaimDuration.Observe(time.Since(start).Seconds())
	s.log.Info("slice claimed", "user_id", userID, "slice_id", sl.ID, "result", result)
	s.Kick() // refill, or dispatch the on-demand slice
	return sl, nil
}

// SliceForUser returns the user's slice.
func (s *Scheduler) SliceForUser(ctx context.Context, userID int64) (slicehub.Slice, error) {
	return s.store.SliceForUser(ctx, userID)
}

// GatewayToken returns the secret the gateway presents to a slice.
func (s *Scheduler) GatewayToken(ctx context.Context, sliceID int64) (string, error) {
	return s.store.GatewayToken(ctx, sliceID)
}

// Bootstrap hands a starting slice its credentials, rotated for its
// allocation (see postgres.DB.ClaimBootstrap). Only the allocation itself
// may claim them: it proves who it is with its Nomad workload identity,
// which Nomad verifies (its signature, and that the allocation is live),
// and the allocation must belong to the child job currently recorded for
// the slice and not have claimed before. An allocation id alone proves
// nothing: it is public in Consul. When Nomad enforces no ACLs it accepts
// any token, so an identity cannot be verified: then the allocation id,
// pending or running, is all there is, and the gateway says so loudly.
// Nothing secret travels through Nomad: not in meta, not in the payload,
// not in the job's environment, not in variables.
func (s *Scheduler) Bootstrap(ctx context.Context, req slicehub.BootstrapRequest) (slicehub.SliceCredentials, error) {
	const op = "scheduler.bootstrap"
	deny := func(why string) (slicehub.SliceCredentials, error) {
		s.log.Warn("bootstrap refused", "slice_id", req.SliceID, "alloc_id", req.AllocID, "why", why)
		s.cfg.Metrics.Bootstraps.WithLabelValues("refused").Inc()
		return slicehub.SliceCredentials{}, slicehub.Errorf(op, slicehub.KindUnauthorized, "bootstrap_refused", "bootstrap refused")
	}
	id, ok := slicehub.ParseSliceID(req.SliceID)
	if !ok || !uuidRE.MatchString(req.AllocID) {
		return slicehub.SliceCredentials{}, slicehub.Errorf(op, slicehub.KindInvalid, "invalid_bootstrap", "slice_id and alloc_id are required")
	}
	verified, err := s.verifyIdentity(ctx, req)
	if err != nil {
		if slicehub.KindOf(err) == slicehub.KindUnauthorized {
			return deny(err.Error())
		}
		return slicehub.SliceCredentials{}, err
	}
	sl, err := s.store.Slice(ctx, id)
	if slicehub.KindOf(err) == slicehub.KindNotFound {
		return deny("unknown slice")
	} else if err != nil {
		return slicehub.SliceCredentials{}, err
	}
	if !sl.State.Runs() {
		return deny("slice is " + string(sl.State))
	}
	if sl.JobID == "" {
		// The dispatch has not been recorded yet; the slice retries.
		return slicehub.SliceCredentials{}, slicehub.Errorf(op, slicehub.KindUnavailable, "not_dispatched", "the slice is not recorded yet")
	}
	alloc, err := s.nomad.Alloc(ctx, req.AllocID)
	if slicehub.KindOf(err) == slicehub.KindNotFound {
		return deny("unknown allocation")
	} else if err != nil {
		return slicehub.SliceCredentials{}, err
	}
	if alloc.JobID != sl.JobID {
		return deny("allocation belongs to " + alloc.JobID)
	}
	if alloc.DesiredStatus != "" && alloc.DesiredStatus != "run" {
		return deny("allocation is to " + alloc.DesiredStatus)
	}
	switch alloc.ClientStatus {
	case "running":
	case "pending":
		// Its task runs (it holds its identity) before the client has
		// told the servers so; without an identity, a pending allocation
		// is anyone who read its id.
		if !verified {
			return slicehub.SliceCredentials{}, slicehub.Errorf(op, slicehub.KindUnavailable, "alloc_pending",
				"the allocation is not running yet")
		}
	default:
		return deny("allocation is " + alloc.ClientStatus)
	}
	creds, err := s.store.ClaimBootstrap(ctx, req.AllocID, id, s.cfg.SliceDBHost)
	if err != nil {
		if slicehub.KindOf(err) == slicehub.KindConflict {
			s.log.Error("an allocation asked twice for its credentials; possible theft attempt", "slice_id", id, "alloc_id", req.AllocID)
			s.cfg.Metrics.Bootstraps.WithLabelValues("replayed").Inc()
		}
		return creds, err
	}
	s.cfg.Metrics.Bootstraps.WithLabelValues("granted").Inc()
	s.log.Info("bootstrap granted; credentials rotated for the allocation", "slice_id", id, "alloc_id", req.AllocID, "identity_verified", verified)
	return creds, nil
}

// verifyIdentity checks the request's workload identity with Nomad. It
// reports whether the caller is proven to be req.AllocID; an identity that
// Nomad refuses, names another allocation, or is missing while Nomad
// enforces ACLs is KindUnauthorized.
func (s *Scheduler) verifyIdentity(ctx context.Context, req slicehub.BootstrapRequest) (bool, error) {
	const op = "scheduler.bootstrap"
	v, ok := s.nomad.(IdentityVerifier)
	if !ok {
		return false, nil // a Nomad stand-in without identities (tests)
	}
	if req.Identity == "" {
		enforced, err := v.EnforcesACLs(ctx)
		if err != nil {
			return false, err
		}
		if enforced {
			return false, slicehub.Errorf(op, slicehub.KindUnauthorized, "no_identity", "no workload identity")
		}
		if s.unverified.CompareAndSwap(false, true) {
			s.log.Error("Nomad enforces no ACLs: a slice's workload identity cannot be verified, and any caller that knows an allocation id can claim its credentials; enable Nomad ACLs (jobs/README.md)")
		}
		s.cfg.Metrics.Bootstraps.WithLabelValues("unverified").Inc()
		return false, nil
	}
	id, err := v.VerifyIdentity(ctx, req.Identity)
	if err != nil {
		return false, err
	}
	if id.AllocID != req.AllocID {
		return false, slicehub.Errorf(op, slicehub.KindUnauthorized, "identity_mismatch", "the identity names allocation %s", id.AllocID)
	}
	enforced, err := v.EnforcesACLs(ctx)
	if err != nil {
		return false, err
	}
	if !enforced {
		// Nomad accepted it, but it accepts anything: treat as unverified.
		if s.unverified.CompareAndSwap(false, true) {
			s.log.Error("Nomad enforces no ACLs: a slice's workload identity cannot be verified, and any caller that knows an allocation id can claim its credentials; enable Nomad ACLs (jobs/README.md)")
		}
		s.cfg.Metrics.Bootstraps.WithLabelValues("unverified").Inc()
		return false, nil
	}
	return true, nil
}

// Run reconciles until ctx ends: at every Interval, after every claim or
// Kick, as soon as the route table changes, and shortly after Nomad
// reports a change to a child, an allocation of one, or a node. Only the
// leader may call it.
func (s *Scheduler) Run(ctx context.Context) {
	s.cfg.Metrics.Leader.Set(1)
	defer s.cfg.Metrics.Leader.Set(0)
	s.log.Info("reconciling as the leader")
	defer s.log.Info("stopped reconciling")
	changes, unsubscribe := s.routes.Subscribe()
	defer unsubscribe()
	if src, ok := s.nomad.(EventSource); ok {
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.followEvents(ctx, src)
		}()
		defer wg.Wait()
	}
	t := time.NewTicker(s.cfg.Interval)
	defer t.Stop()
	for {
		if err := s.Reconcile(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("reconcile incomplete", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-s.kick:
		case <-changes:
		}
	}
}

// followEvents kicks a reconcile for every relevant batch of Nomad events,
// reconnecting with backoff when the stream breaks (Nomad restarting, a
// leader election). Events missed while disconnected need no replay: a
// reconcile follows every (re)connection, and reconciles compare full state.
func (s *Scheduler) followEvents(ctx context.Context, src EventSource) {
	m := s.cfg.Metrics.NomadEvents
	const minBackoff, maxBackoff = 250 * time.Millisecond, 10 * time.Second
	backoff := minBackoff
	for ctx.Err() == nil {
		ch, err := src.Events(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			m.WithLabelValues("stream_error").Inc()
			s.log.Warn("cannot follow Nomad's event stream; reconciling on the interval meanwhile", "err", err, "retry_in", backoff)
			if !sleepCtx(ctx, backoff) {
				return
			}
			backoff = min(backoff*2, maxBackoff)
			continue
		}
		m.WithLabelValues("connected").Inc()
		s.Kick()
		connected := time.Now()
		for ev := range ch {
			switch {
			case ev.Err != nil:
				if ctx.Err() == nil {
					m.WithLabelValues("stream_error").Inc()
					s.log.Warn("Nomad's event stream broke; reconnecting", "err", ev.Err)
				}
			case ev.Relevant:
				m.WithLabelValues("relevant").Inc()
				s.kickSoon()
			default:
				m.WithLabelValues("ignored").Inc()
			}
		}
		if time.Since(connected) > time.Minute {
			backoff = minBackoff
		}
		if !sleepCtx(ctx, backoff) {
			return
		}
		backoff = min(backoff*2, maxBackoff)
	}
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// liveStates are the states whose slices the reconciler looks after.
var liveStates = slicehub.StatesWhere(slicehub.SliceState.Live)

// pass is one reconcile's view of Nomad and Consul, and what it decided.
type pass struct {
	now      time.Time
	children map[string]Child
	bySlice  map[int64][]Child // alive children by the slice in their meta
	allocs   map[string][]Alloc
	allocJob map[string]string // allocation -> its job
	routes   map[int64]slicehub.Route
	// owned are the children a slice row accounts for; any other alive
	// child is a stray.
	owned map[string]bool
	// fit is how many more slices fit on Nomad's nodes, counted down as
	// this pass dispatches; limit says what binds.
	fit   int
	limit string
	// blocked says why a slice the pool wants was not dispatched.
	blocked string
	// provisioned are the slices whose database this pass created ahead.
	provisioned map[int64]bool
	// routesCurrent: the route table answered Consul recently, so a
	// missing route means the slice is not healthy.
	routesCurrent bool
	// room is how many more dispatches the admission cap allows in this
	// pass; held counts the slices it held back (admission.go).
	room, held int
}

func newPass(now time.Time, children []Child, allocs []Alloc, routes map[int64]slicehub.Route) *pass {
	p := &pass{now: now, children: make(map[string]Child, len(children)), bySlice: map[int64][]Child{},
		allocs: make(map[string][]Alloc, len(children)), allocJob: make(map[string]string, len(allocs)),
		routes: routes, owned: make(map[string]bool, len(children)), provisioned: map[int64]bool{}}
	for _, c := range children {
		p.children[c.JobID] = c
		if c.Alive() && c.SliceID != 0 {
			p.bySlice[c.SliceID] = append(p.bySlice[c.SliceID], c)
		}
	}
	for _, a := range allocs {
		p.allocJob[a.ID] = a.JobID
		if _, ok := p.children[a.JobID]; ok {
			p.allocs[a.JobID] = append(p.allocs[a.JobID], a)
		}
	}
	return p
}

func (p *pass) alive(jobID string) bool {
	c, ok := p.children[jobID]
	return ok && c.Alive()
}

// holds reports whether any allocation of jobID still holds resources (is
// not terminal yet): its task may still write to the database.
func (p *pass) holds(jobID string) bool {
	for _, a := range p.allocs[jobID] {
		if a.Holds() {
			return true
		}
	}
	return false
}

// healthy reports whether Consul has a passing instance of the slice that
// belongs to its current job. The instance of a replaced job may still be
// registered for a moment; it does not count.
func (p *pass) healthy(sl slicehub.Slice) bool {
	rt, ok := p.routes[sl.ID]
	if !ok {
		return false
	}
	if rt.AllocID == "" {
		return true // a registration that does not name its allocation
	}
	return p.allocJob[rt.AllocID] == sl.JobID
}

// current is jobID's newest allocation that Nomad has placed and means to
// run: the one the slice's traffic belongs to.
func (p *pass) current(jobID string) (Alloc, bool) {
	var best Alloc
	for _, a := range p.allocs[jobID] {
		if a.NodeID == "" || !a.Holds() || a.DesiredStatus != "run" {
			continue
		}
		if best.ID == "" || a.CreateIndex > best.CreateIndex {
			best = a
		}
	}
	return best, best.ID != ""
}

// failures is Nomad's count of failures of jobID: its tasks' restarts plus
// its failed allocations (each one rescheduled by Nomad).
func (p *pass) failures(jobID string) int {
	n := 0
	for _, a := range p.allocs[jobID] {
		n += a.Restarts
		if a.ClientStatus == "failed" {
			n++
		}
	}
	return n
}

// Reconcile makes one pass over PostgreSQL, Nomad and Consul and repairs
// what disagrees. It is safe to call again at any time: every action it
// takes is idempotent (dispatches carry a token derived from the slice and
// its generation, the generation is also in the child's ID, and every
// change of a slice is a guarded transition). It acts only on a complete
// view: when Nomad cannot be read, it changes nothing.
func (s *Scheduler) Reconcile(ctx context.Context) error {
	s.reconcileMu.Lock()
	defer s.reconcileMu.Unlock()
	start := time.Now()
	defer func() { s.cfg.Metrics.ReconcileDuration.Observe(time.Since(start).Seconds()) }()

	rows, err := s.store.Slices(ctx, liveStates...)
	if err != nil {
		return err
	}
	// Consul before Nomad: an allocation that a route names is then in the
	// list of allocations read after it.
	routes := s.routes.Snapshot()
	children, err := s.nomad.Children(ctx)
	if err != nil {
		return err
	}
	allocs, err := s.nomad.Allocations(ctx)
	if err != nil {
		return err
	}
	p := newPass(s.cfg.Now(), children, allocs, routes)
	p.routesCurrent = true
	if st, ok := s.routes.(routeStatus); ok {
		last, err := st.Status()
		p.routesCurrent = err == nil && !last.IsZero()
	}
	if c, err := s.capacityOf(ctx, children, allocs); err != nil {
		// Repairs go on (a re-dispatch replaces what it stops); new slices
		// wait until the capacity is known.
		s.log.Warn("capacity unknown: no new slice is dispatched in this pass", "err", err)
		p.limit = "unknown"
	} else {
		p.fit, p.limit = c.Fit, c.Limit
	}

	s.recordPlacements(ctx, p, rows)
	p.room, _ = s.dispatchRoom(p, rows)

	// Dispatches by hand first: one may be a restart of a slice that this
	// pass would otherwise dispatch again itself.
	rows, err = s.adoptHandDispatches(ctx, p, rows)
	var errs []error
	if err != nil {
		errs = append(errs, err)
	}

	// A user waiting for an on-demand slice goes before any refill.
	sort.SliceStable(rows, func(i, j int) bool { return rows[i].UserID != 0 && rows[j].UserID == 0 })

	// The slices this pass will dispatch first (users waiting, then
	// earlier refills), as far as the nodes have room: their databases in
	// parallel, before the dispatches, which go one at a time.
	var ahead []slicehub.Slice
	for _, sl := range rows {
		if len(ahead) >= min(p.fit, p.room) {
			break
		}
		if sl.State == slicehub.StateProvisioning && sl.JobID == "" {
			if _, ok := p.adoptable(sl); !ok {
				ahead = append(ahead, sl)
			}
		}
	}
	s.provisionAhead(ctx, p, ahead)

	for i := range rows {
		if err := s.reconcileSlice(ctx, p, &rows[i]); err != nil {
			errs = append(errs, fmt.Errorf("slice %d: %w", rows[i].ID, err))
		}
	}
	// Children that no row accounts for: jobs of retired slices, leftovers
	// of an operation that lost a race (dispatches by hand were adopted or
	// refused above). Dead ones are purged too, so the list Nomad returns
	// stays short.
	for _, c := range children {
		if p.owned[c.JobID] {
			continue
		}
		if err := s.nomad.Stop(ctx, c.JobID, true); err != nil {
			errs = append(errs, err)
			continue
		}
		if c.Alive() {
			s.log.Warn("stopped a child no slice owns", "job_id", c.JobID, "slice_meta", c.SliceID)
			s.cfg.Metrics.Repairs.WithLabelValues("stray_child").Inc()
		}
	}
	if err := s.refill(ctx, p, rows); err != nil {
		errs = append(errs, err)
	}
	if p.blocked != "" {
		s.setExhausted(true, p.blocked, "slices_fit", p.fit, "max_slices", s.cfg.MaxSlices)
	} else {
		s.setExhausted(false, "")
	}
	if err := s.retention(ctx, p); err != nil {
		errs = append(errs, err)
	}
	s.cfg.Metrics.DispatchesWaiting.Set(float64(p.held))
	s.observe(ctx)
	s.forget(p)
	return errors.Join(errs...)
}

// recordPlacements records, for every slice whose job Nomad has placed, the
// job's current allocation and its address: the route table routes nothing
// else (see consul.Routes). It runs as soon as Nomad has placed the
// allocation, before its task starts, so the record is normally there before
// the instance registers in Consul. A failure is logged; the next pass
// tries again.
func (s *Scheduler) recordPlacements(ctx context.Context, p *pass, rows []slicehub.Slice) {
	changed := 0
	for i := range rows {
		sl := &rows[i]
		if sl.JobID == "" {
			continue
		}
		a, ok := p.current(sl.JobID)
		if !ok || (a.ID == sl.AllocID && a.Addr == sl.AllocAddr) {
			continue
		}
		did, err := s.store.RecordPlacement(ctx, sl.ID, sl.JobID, a.ID, a.Addr)
		if err != nil {
			s.log.Warn("cannot record a slice's allocation; it is not routed until it is", "slice_id", sl.ID, "alloc_id", a.ID, "err", err)
			continue
		}
		if did {
			changed++
			sl.AllocID, sl.AllocAddr = a.ID, a.Addr
			s.log.Info("allocation recorded", "slice_id", sl.ID, "job_id", sl.JobID, "alloc_id", a.ID, "addr", a.Addr)
		}
	}
	if r, ok := s.routes.(routeRefresher); ok && changed > 0 {
		r.Refresh()
	}
}

// reconcileSlice repairs one slice. It updates *sl to what it became.
func (s *Scheduler) reconcileSlice(ctx context.Context, p *pass, sl *slicehub.Slice) error {
	switch {
	case sl.State == slicehub.StateProvisioning:
		if sl.JobID == "" {
			if c, ok := p.adoptable(*sl); ok {
				return s.adopt(ctx, p, sl, c)
			}
			return s.dispatch(ctx, p, sl, false)
		}
		p.owned[sl.JobID] = true
		if !p.alive(sl.JobID) {
			return s.redispatch(ctx, p, sl, "its job is gone", "lost_job")
		}
		if failed, err := s.checkBudget(ctx, p, sl); failed || err != nil {
			return err
		}
		if p.healthy(*sl) {
			return s.becameHealthy(ctx, sl)
		}
		// UpdatedAt moved when the job was recorded: time spent waiting
		// for capacity before the dispatch does not count.
		if p.now.Sub(sl.UpdatedAt) > s.cfg.ProvisionTimeout {
			return s.redispatch(ctx, p, sl, fmt.Sprintf("not healthy within the provision timeout of %s", s.cfg.ProvisionTimeout), "provision_timeout")
		}
	case sl.State.Runs():
		if sl.JobID != "" {
			p.owned[sl.JobID] = true
		}
		if sl.JobID == "" || !p.alive(sl.JobID) {
			return s.redispatch(ctx, p, sl, "its job is gone", "lost_job")
		}
		if failed, err := s.checkBudget(ctx, p, sl); failed || err != nil {
			return err
		}
		return s.checkHealth(ctx, p, sl)
	case sl.State.Live(): // kept, but its job must not run
		if sl.JobID != "" && p.alive(sl.JobID) {
			p.owned[sl.JobID] = true
			s.log.Info("stopping the job of a slice that should not run", "slice_id", sl.ID, "state", sl.State, "job_id", sl.JobID)
			if err := s.nomad.Stop(ctx, sl.JobID, true); err != nil {
				return err
			}
			s.cfg.Metrics.Repairs.WithLabelValues("stop_unwanted").Inc()
		}
	}
	return nil
}

// checkHealth re-dispatches a running slice that has had no passing
// instance in Consul for UnhealthyTimeout, as long as the route table is
// current (a Consul outage hides every slice; that is no reason to restart
// them).
func (s *Scheduler) checkHealth(ctx context.Context, p *pass, sl *slicehub.Slice) error {
	s.mu.Lock()
	since, seen := s.unhealthy[sl.ID]
	switch {
	case p.healthy(*sl):
		delete(s.unhealthy, sl.ID)
		s.mu.Unlock()
		return nil
	case !p.routesCurrent:
		s.mu.Unlock()
		return nil
	case !seen:
		s.unhealthy[sl.ID] = p.now
		s.mu.Unlock()
		return nil
	}
	s.mu.Unlock()
	if p.now.Sub(since) < s.cfg.UnhealthyTimeout {
		return nil
	}
	s.mu.Lock()
	delete(s.unhealthy, sl.ID)
	s.mu.Unlock()
	return s.redispatch(ctx, p, sl, fmt.Sprintf("running but not healthy in Consul for %s", p.now.Sub(since).Round(time.Second)), "unhealthy")
}

// adoptable finds an alive child dispatched for the slice's current
// generation that the row does not record: the leader that dispatched it
// stopped before recording it.
func (p *pass) adoptable(sl slicehub.Slice) (Child, bool) {
	for _, c := range p.bySlice[sl.ID] {
		if c.Generation == sl.Restarts && !p.owned[c.JobID] {
			return c, true
		}
	}
	return Child{}, false
}

func (s *Scheduler) adopt(ctx context.Context, p *pass, sl *slicehub.Slice, c Child) error {
	p.owned[c.JobID] = true
	job := c.JobID
	next, err := s.store.Transition(ctx, sl.ID, slicehub.Dispatched("scheduler", job, "adopted "+job+", dispatched but not recorded"))
	if slicehub.KindOf(err) == slicehub.KindConflict {
		delete(p.owned, c.JobID)
		return nil
	}
	if err != nil {
		return err
	}
	*sl = next
	s.cfg.Metrics.Repairs.WithLabelValues("adopted").Inc()
	s.log.Info("adopted a child dispatched but not recorded", "slice_id", sl.ID, "job_id", job, "generation", sl.Restarts)
	return nil
}

// becameHealthy moves a provisioning slice to warm, or to assigned when a
// user is already waiting for it.
func (s *Scheduler) becameHealthy(ctx context.Context, sl *slicehub.Slice) error {
	c := slicehub.Healthy("scheduler", "healthy in Consul", sl.UserID != 0)
	next, err := s.store.Transition(ctx, sl.ID, c)
	if slicehub.KindOf(err) == slicehub.KindConflict {
		return nil // someone else moved it first
	}
	if err != nil {
		return err
	}
	*sl = next
	s.mu.Lock()
	if t, ok := s.dispatched[sl.ID]; ok {
		s.cfg.Metrics.DispatchToHealthy.Observe(time.Since(t).Seconds())
		delete(s.dispatched, sl.ID)
	}
	s.mu.Unlock()
	s.log.Info("slice healthy", "slice_id", sl.ID, "state", c.To)
	return nil
}

// dispatch provisions the slice's database and dispatches its child job,
// if Nomad's nodes can hold one more slice. A re-dispatch (replacing) is
// not held back by capacity: the job it replaces gives its room back.
func (s *Scheduler) dispatch(ctx context.Context, p *pass, sl *slicehub.Slice, replacing bool) error {
	if !replacing && p.fit <= 0 {
		p.blocked = "nothing fits on Nomad's nodes (" + p.limit + ")"
		return nil
	}
	if !s.admitDispatch(p, replacing) {
		return nil // waits in line for a later pass
	}
	if !p.provisioned[sl.ID] {
		if err := s.store.ProvisionDatabase(ctx, sl.ID); err != nil {
			return err
		}
	}
	jobID, err := s.nomad.Dispatch(ctx, sl.ID, sl.Restarts)
	if err != nil {
		return err
	}
	p.owned[jobID] = true
	next, err := s.store.Transition(ctx, sl.ID, slicehub.Dispatched("scheduler", jobID, "dispatched "+jobID))
	if slicehub.KindOf(err) == slicehub.KindConflict {
		// An operator suspended or retired it meanwhile.
		delete(p.owned, jobID)
		s.log.Info("slice changed while being dispatched; stopping its new job", "slice_id", sl.ID, "job_id", jobID)
		return s.nomad.Stop(ctx, jobID, true)
	}
	if err != nil {
		return err // the next pass adopts the child: its ID carries the generation
	}
	if !replacing {
		p.fit--
	}
	*sl = next
	s.mu.Lock()
	s.dispatched[sl.ID] = time.Now()
	s.mu.Unlock()
	s.cfg.Metrics.Dispatches.Inc()
	s.log.Info("slice dispatched", "slice_id", sl.ID, "job_id", jobID, "generation", sl.Restarts, "user_id", sl.UserID)
	return nil
}

// provisionAhead creates the databases of slices about to be dispatched,
// ProvisionParallelism at a time. A failure is left to dispatch, which
// provisions again (it is idempotent) and reports the error.
func (s *Scheduler) provisionAhead(ctx context.Context, p *pass, slices []slicehub.Slice) {
	if len(slices) < 2 {
		return // nothing to overlap
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, s.cfg.ProvisionParallelism)
	for _, sl := range slices {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := s.store.ProvisionDatabase(ctx, sl.ID); err == nil {
				mu.Lock()
				p.provisioned[sl.ID] = true
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
}

// redispatch replaces a slice's job with a new generation: same database,
// same profile, same user. It counts against the restart budget.
func (s *Scheduler) redispatch(ctx context.Context, p *pass, sl *slicehub.Slice, why, kind string) error {
	if err := s.store.RecordRepair(ctx, sl.ID, sl.JobID, why, p.now); err != nil {
		return err
	}
	if failed, err := s.overBudget(ctx, p, sl, why); failed || err != nil {
		return err
	}
	s.log.Warn("repairing slice", "slice_id", sl.ID, "state", sl.State, "job_id", sl.JobID, "why", why)
	if sl.JobID != "" {
		if err := s.nomad.Stop(ctx, sl.JobID, true); err != nil {
			return err
		}
	}
	next, err := s.store.Transition(ctx, sl.ID, slicehub.Redispatch("scheduler", why).At(sl.State))
	if slicehub.KindOf(err) == slicehub.KindConflict {
		return nil
	}
	if err != nil {
		return err
	}
	*sl = next
	s.cfg.Metrics.Repairs.WithLabelValues(kind).Inc()
	return s.dispatch(ctx, p, sl, true)
}

// checkBudget records the failures Nomad reports for the slice's job that
// are new since the last look, and fails the slice when they exhaust its
// budget. Most passes cost nothing here: only a changed count reaches
// PostgreSQL.
func (s *Scheduler) checkBudget(ctx context.Context, p *pass, sl *slicehub.Slice) (bool, error) {
	observed := p.failures(sl.JobID)
	if observed == 0 {
		return false, nil
	}
	s.mu.Lock()
	last, seen := s.observed[sl.JobID]
	s.mu.Unlock()
	if seen && observed <= last {
		return false, nil
	}
	added, err := s.store.RecordFailures(ctx, sl.ID, sl.JobID, observed,
		fmt.Sprintf("Nomad counts %d task restarts and failed allocations of %s", observed, sl.JobID), p.now)
	if err != nil {
		return false, err
	}
	s.mu.Lock()
	s.observed[sl.JobID] = observed
	s.mu.Unlock()
	if added > 0 {
		s.log.Warn("slice restarted by Nomad", "slice_id", sl.ID, "job_id", sl.JobID, "failures_of_job", observed, "new", added)
	} else if seen {
		return false, nil
	}
	return s.overBudget(ctx, p, sl, fmt.Sprintf("%s keeps failing (%d restarts and failed allocations)", sl.JobID, observed))
}

// overBudget fails the slice if its failures within the window reached the
// budget.
func (s *Scheduler) overBudget(ctx context.Context, p *pass, sl *slicehub.Slice, why string) (bool, error) {
	recent, err := s.store.RecentFailures(ctx, sl.ID, p.now.Add(-s.cfg.RepairWindow))
	if err != nil {
		return false, err
	}
	if recent < s.cfg.MaxAttempts {
		return false, nil
	}
	return true, s.fail(ctx, sl, fmt.Sprintf("restart budget exhausted: %d failures within %s; last: %s", recent, s.cfg.RepairWindow, why))
}

// fail marks the slice failed and stops its job: an alert, because a human
// has to look (the slice's user, if any, keeps it and sees it failed). A
// warm slice is replaced by the refill of the same pass.
func (s *Scheduler) fail(ctx context.Context, sl *slicehub.Slice, why string) error {
	was := sl.State
	next, err := s.store.Transition(ctx, sl.ID, slicehub.Fail("scheduler", why).At(was))
	if slicehub.KindOf(err) == slicehub.KindConflict {
		return nil
	}
	if err != nil {
		return err
	}
	*sl = next
	s.cfg.Metrics.SliceFailures.WithLabelValues(string(was)).Inc()
	s.cfg.Metrics.Repairs.WithLabelValues("failed").Inc()
	s.log.Error("slice failed: it needs an operator", "alert", "slice_failed", "slice_id", sl.ID,
		"user_id", sl.UserID, "was", was, "job_id", sl.JobID, "why", why)
	if sl.JobID != "" {
		return s.nomad.Stop(ctx, sl.JobID, true)
	}
	return nil
}

// refill creates warm slices until MinWarm are ready or starting unbound,
// never beyond MaxSlices running slices nor beyond what Nomad's nodes can
// hold, and recycles warm slices older than WarmTTL: a replacement first,
// the old slice once the pool is full again (or at once when no
// replacement can start, which frees its room for one).
func (s *Scheduler) refill(ctx context.Context, p *pass, rows []slicehub.Slice) error {
	s.mu.Lock()
	paused := s.paused
	s.mu.Unlock()
	free, running, fresh := 0, 0, 0
	var expired []slicehub.Slice
	for _, sl := range rows {
		if sl.State.Runs() {
			running++
		}
		// Free are the slices a user can claim now or once started.
		switch {
		case sl.State == slicehub.StateWarm:
			if s.cfg.WarmTTL > 0 && p.now.Sub(sl.StateChangedAt) > s.cfg.WarmTTL {
				expired = append(expired, sl)
			} else {
				free++
				fresh++
			}
		case sl.State == slicehub.StateProvisioning && sl.UserID == 0:
			free++
		}
	}
	s.cfg.Metrics.Desired.Set(float64(s.cfg.MinWarm))
	if paused {
		return nil
	}
	want := 0
	for free+want < s.cfg.MinWarm {
		if running+want >= s.cfg.MaxSlices {
			p.blocked = fmt.Sprintf("max_slices (%d) reached", s.cfg.MaxSlices)
			break
		}
		if p.fit-want <= 0 {
			p.blocked = "nothing fits on Nomad's nodes (" + p.limit + ")"
			break
		}
		want++
	}
	created := make([]slicehub.Slice, 0, want)
	for range want {
		sl, err := s.store.CreateSlice(ctx, 0, "scheduler", "warm pool refill")
		if err != nil {
			return err
		}
		created = append(created, sl)
	}
	s.provisionAhead(ctx, p, created)
	for i := range created {
		if err := s.dispatch(ctx, p, &created[i], false); err != nil {
			return err
		}
	}
	sort.Slice(expired, func(i, j int) bool { return expired[i].StateChangedAt.Before(expired[j].StateChangedAt) })
	var errs []error
	for _, sl := range expired {
		if fresh < s.cfg.MinWarm && p.blocked == "" {
			break // a replacement is on its way; retire once it is warm
		}
		if err := s.recycle(ctx, sl); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// recycle retires a warm slice past its TTL. The transition is guarded on
// warm, so a claim that takes the slice first wins and nothing is retired.
func (s *Scheduler) recycle(ctx context.Context, sl slicehub.Slice) error {
	_, err := s.store.Retire(ctx, sl.ID, []slicehub.SliceState{slicehub.StateWarm}, "scheduler",
		fmt.Sprintf("warm for longer than the TTL of %s", s.cfg.WarmTTL), false)
	if slicehub.KindOf(err) == slicehub.KindConflict {
		return nil
	}
	if err != nil {
		return err
	}
	s.cfg.Metrics.Repairs.WithLabelValues("warm_ttl").Inc()
	s.log.Info("recycled a warm slice past its TTL", "slice_id", sl.ID, "warm_since", sl.StateChangedAt)
	if sl.JobID != "" {
		return s.nomad.Stop(ctx, sl.JobID, true)
	}
	return nil
}

// observe refreshes the per-state gauges.
func (s *Scheduler) observe(ctx context.Context) {
	counts, err := s.store.CountSlices(ctx)
	if err != nil {
		return
	}
	for _, st := range slicehub.States {
		s.cfg.Metrics.Slices.WithLabelValues(string(st)).Set(float64(counts[st]))
	}
}

// forget drops what this leader remembers about jobs Nomad no longer has.
func (s *Scheduler) forget(p *pass) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for job := range s.observed {
		if _, ok := p.children[job]; !ok {
			delete(s.observed, job)
		}
	}
	for id := range s.unhealthy {
		if _, ok := p.bySlice[id]; !ok {
			delete(s.unhealthy, id)
		}
	}
}
