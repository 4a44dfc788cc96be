// Package scheduler owns the Nomad side of Slicehub: the warm pool, claims,
// provisioning a slice (its database, role and dispatched child job), the
// credentials hand-over at a slice's bootstrap, and the reconcile loop that
// keeps PostgreSQL (the truth about users and slices), Nomad (what runs) and
// Consul (what is healthy) in agreement.
//
// Claims and bootstraps may be served by any gateway replica. Everything that
// dispatches or stops jobs runs in Run, which only the leader calls (see
// consul.Lead), so that dispatches happen from one place, one at a time.
package scheduler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
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
	ProvisionDatabase(ctx context.Context, id int64) error
	SliceCredentials(ctx context.Context, id int64, dbHost string) (slicehub.SliceCredentials, error)
	GatewayToken(ctx context.Context, id int64) (string, error)
	ClaimBootstrap(ctx context.Context, allocID string, id int64) error
}

// Routes is the healthy view, from package consul.
type Routes interface {
	Snapshot() map[int64]slicehub.Route
	Subscribe() (<-chan struct{}, func())
}

// Config tunes the pool and the reconcile loop.
type Config struct {
	MinWarm   int // warm, unassigned slices to keep ready (default 1)
	MaxSlices int // running slices in all, warm or assigned (default 50)
	// Interval between full reconciles; changes in Consul and claims also
	// trigger one at once.
	Interval time.Duration
	// ProvisionTimeout is how long a dispatched slice may take to turn
	// healthy before it is dispatched again.
	ProvisionTimeout time.Duration
	// MaxAttempts is how many dispatches a slice gets within RepairWindow
	// before it is marked failed.
	MaxAttempts  int
	RepairWindow time.Duration
	// SliceDBHost is the PostgreSQL host slices connect to, when it differs
	// from the gateway's view (a container network, another server).
	SliceDBHost string
	Logger      *slog.Logger
	Metrics     *Metrics
	Now         func() time.Time
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
	if c.ProvisionTimeout <= 0 {
		c.ProvisionTimeout = 3 * time.Minute
	}
	if c.MaxAttempts <= 0 {
		c.MaxAttempts = 5
	}
	if c.RepairWindow <= 0 {
		c.RepairWindow = time.Hour
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
}

// Scheduler runs the pool. Create it with New.
type Scheduler struct {
	store  Store
	nomad  Nomad
	routes Routes
	cfg    Config
	log    *slog.Logger
	kick   chan struct{}

	mu         sync.Mutex
	paused     bool
	dispatched map[int64]time.Time   // slice -> when its current job was dispatched
	repairs    map[int64][]time.Time // slice -> recent dispatch times, for the budget
}

// New returns a scheduler.
func New(store Store, nomad Nomad, routes Routes, cfg Config) *Scheduler {
	cfg.defaults()
	return &Scheduler{store: store, nomad: nomad, routes: routes, cfg: cfg,
		log: cfg.Logger.With("component", "scheduler"), kick: make(chan struct{}, 1),
		dispatched: map[int64]time.Time{}, repairs: map[int64][]time.Time{}}
}

// Kick asks the leader's loop for a reconcile now (coalesced).
func (s *Scheduler) Kick() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// SetPaused stops (true) or restarts (false) refilling the warm pool. Repairs
// and on-demand slices go on while paused.
func (s *Scheduler) SetPaused(p bool) {
	s.mu.Lock()
	s.paused = p
	s.mu.Unlock()
	s.Kick()
}

// Claim binds userID to a slice: its existing one, else a warm one, else one
// that is starting, else a new on-demand slice that the leader dispatches
// first. It never fails because the pool is empty; the caller follows the
// slice's state until it is assigned.
func (s *Scheduler) Claim(ctx context.Context, userID int64) (slicehub.Slice, error) {
	const op = "scheduler.claim"
	start := s.cfg.Now()
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
	s.cfg.Metrics.ClaimDuration.Observe(s.cfg.Now().Sub(start).Seconds())
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

// Bootstrap hands a starting slice its credentials. The caller names its
// slice and its Nomad allocation; the allocation must exist, belong to the
// child job currently recorded for that slice, be pending or running, and
// not have fetched credentials before. Nothing secret travels through Nomad:
// not in meta, not in the payload, not in the job's environment.
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
	sl, err := s.store.Slice(ctx, id)
	if slicehub.KindOf(err) == slicehub.KindNotFound {
		return deny("unknown slice")
	} else if err != nil {
		return slicehub.SliceCredentials{}, err
	}
	switch sl.State {
	case slicehub.StateProvisioning, slicehub.StateWarm, slicehub.StateAssigned:
	default:
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
	if alloc.ClientStatus != "pending" && alloc.ClientStatus != "running" {
		return deny("allocation is " + alloc.ClientStatus)
	}
	if err := s.store.ClaimBootstrap(ctx, req.AllocID, id); err != nil {
		if slicehub.KindOf(err) == slicehub.KindConflict {
			s.log.Error("an allocation asked twice for its credentials; possible theft attempt", "slice_id", id, "alloc_id", req.AllocID)
			s.cfg.Metrics.Bootstraps.WithLabelValues("replayed").Inc()
		}
		return slicehub.SliceCredentials{}, err
	}
	creds, err := s.store.SliceCredentials(ctx, id, s.cfg.SliceDBHost)
	if err != nil {
		return creds, err
	}
	s.cfg.Metrics.Bootstraps.WithLabelValues("granted").Inc()
	s.log.Info("bootstrap granted", "slice_id", id, "alloc_id", req.AllocID)
	return creds, nil
}

// Run reconciles until ctx ends: at every Interval, after every claim, and
// as soon as the route table changes. Only the leader may call it.
func (s *Scheduler) Run(ctx context.Context) {
	changes, unsubscribe := s.routes.Subscribe()
	defer unsubscribe()
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

// Reconcile makes one pass over PostgreSQL, Nomad and Consul and repairs
// what disagrees. It is safe to call again at any time: every action it
// takes is idempotent (dispatches carry a token derived from the slice and
// its generation).
func (s *Scheduler) Reconcile(ctx context.Context) error {
	start := time.Now()
	defer func() { s.cfg.Metrics.ReconcileDuration.Observe(time.Since(start).Seconds()) }()

	rows, err := s.store.Slices(ctx, slicehub.StateProvisioning, slicehub.StateWarm, slicehub.StateAssigned,
		slicehub.StateSuspended, slicehub.StateFailed)
	if err != nil {
		return err
	}
	children, err := s.nomad.Children(ctx)
	if err != nil {
		return err
	}
	routes := s.routes.Snapshot()
	byJob := make(map[string]Child, len(children))
	for _, c := range children {
		byJob[c.JobID] = c
	}

	// A user waiting for an on-demand slice goes before any refill.
	sort.SliceStable(rows, func(i, j int) bool { return rows[i].UserID != 0 && rows[j].UserID == 0 })

	known := make(map[string]bool, len(rows))
	var errs []error
	for _, sl := range rows {
		if sl.JobID != "" {
			known[sl.JobID] = true
		}
		if err := s.reconcileSlice(ctx, sl, byJob, routes); err != nil {
			errs = append(errs, fmt.Errorf("slice %d: %w", sl.ID, err))
		}
	}
	// Children that no row claims: stray dispatches by hand, leftovers of a
	// crash between dispatch and record, or slices already retired.
	for _, c := range children {
		if known[c.JobID] || !c.Alive() {
			continue
		}
		s.log.Warn("stopping a child no slice owns", "job_id", c.JobID, "slice_meta", c.SliceID)
		if err := s.nomad.Stop(ctx, c.JobID, true); err != nil {
			errs = append(errs, err)
			continue
		}
		s.cfg.Metrics.Repairs.WithLabelValues("stray_child").Inc()
	}
	if err := s.refill(ctx, rows); err != nil {
		errs = append(errs, err)
	}
	s.observe(ctx)
	return errors.Join(errs...)
}

func (s *Scheduler) reconcileSlice(ctx context.Context, sl slicehub.Slice, byJob map[string]Child, routes map[int64]slicehub.Route) error {
	child, hasChild := byJob[sl.JobID]
	alive := hasChild && child.Alive()
	_, healthy := routes[sl.ID]
	switch sl.State {
	case slicehub.StateProvisioning:
		if sl.JobID == "" {
			return s.dispatch(ctx, sl)
		}
		if healthy && alive {
			return s.becameHealthy(ctx, sl)
		}
		if !alive {
			return s.redispatch(ctx, sl, "its job is gone", "lost_job")
		}
		if s.cfg.Now().Sub(sl.StateChangedAt) > s.cfg.ProvisionTimeout {
			return s.redispatch(ctx, sl, "not healthy within the provision timeout", "provision_timeout")
		}
	case slicehub.StateWarm, slicehub.StateAssigned:
		if !alive {
			return s.redispatch(ctx, sl, "its job is gone", "lost_job")
		}
	case slicehub.StateSuspended, slicehub.StateFailed:
		if alive {
			s.log.Info("stopping the job of a slice that should not run", "slice_id", sl.ID, "state", sl.State)
			return s.nomad.Stop(ctx, sl.JobID, false)
		}
	}
	return nil
}

// becameHealthy moves a provisioning slice to warm, or to assigned when a
// user is already waiting for it.
func (s *Scheduler) becameHealthy(ctx context.Context, sl slicehub.Slice) error {
	to := slicehub.StateWarm
	if sl.UserID != 0 {
		to = slicehub.StateAssigned
	}
	_, err := s.store.Transition(ctx, sl.ID, slicehub.Change{From: []slicehub.SliceState{slicehub.StateProvisioning},
		To: to, Actor: "scheduler", Reason: "healthy in Consul"})
	if slicehub.KindOf(err) == slicehub.KindConflict {
		return nil // someone else moved it first
	}
	if err != nil {
		return err
	}
	s.mu.Lock()
	if t, ok := s.dispatched[sl.ID]; ok {
		s.cfg.Metrics.DispatchToHealthy.Observe(s.cfg.Now().Sub(t).Seconds())
		delete(s.dispatched, sl.ID)
	}
	s.mu.Unlock()
	s.log.Info("slice healthy", "slice_id", sl.ID, "state", to)
	return nil
}

// dispatch provisions the slice's database and dispatches its child job.
// The idempotency token is derived from the slice and its generation, so a
// retry after a timeout returns the same child instead of a second one.
func (s *Scheduler) dispatch(ctx context.Context, sl slicehub.Slice) error {
	if !s.withinBudget(sl.ID) {
		_, err := s.store.Transition(ctx, sl.ID, slicehub.Change{From: []slicehub.SliceState{slicehub.StateProvisioning},
			To: slicehub.StateFailed, Actor: "scheduler", Reason: fmt.Sprintf("%d dispatches within %s", s.cfg.MaxAttempts, s.cfg.RepairWindow)})
		s.cfg.Metrics.Repairs.WithLabelValues("failed").Inc()
		s.log.Error("slice failed: restart budget exhausted", "slice_id", sl.ID)
		return err
	}
	if err := s.store.ProvisionDatabase(ctx, sl.ID); err != nil {
		return err
	}
	token := fmt.Sprintf("slice-%d-gen-%d", sl.ID, sl.Restarts)
	jobID, err := s.nomad.Dispatch(ctx, sl.ID, token)
	if err != nil {
		return err
	}
	if _, err := s.store.Transition(ctx, sl.ID, slicehub.Change{From: []slicehub.SliceState{slicehub.StateProvisioning},
		To: slicehub.StateProvisioning, SetJob: &jobID, Actor: "scheduler", Reason: "dispatched " + jobID}); err != nil {
		return err
	}
	now := s.cfg.Now()
	s.mu.Lock()
	s.dispatched[sl.ID] = now
	s.repairs[sl.ID] = append(s.repairs[sl.ID], now)
	s.mu.Unlock()
	s.cfg.Metrics.Dispatches.Inc()
	s.log.Info("slice dispatched", "slice_id", sl.ID, "job_id", jobID, "generation", sl.Restarts)
	return nil
}

// redispatch replaces a slice's job with a new generation: same database,
// same profile, same user.
func (s *Scheduler) redispatch(ctx context.Context, sl slicehub.Slice, why, kind string) error {
	s.log.Warn("repairing slice", "slice_id", sl.ID, "state", sl.State, "job_id", sl.JobID, "why", why)
	if sl.JobID != "" {
		if err := s.nomad.Stop(ctx, sl.JobID, true); err != nil {
			return err
		}
	}
	empty := ""
	next, err := s.store.Transition(ctx, sl.ID, slicehub.Change{From: []slicehub.SliceState{sl.State},
		To: slicehub.StateProvisioning, SetJob: &empty, AddRestart: true, Actor: "scheduler", Reason: why})
	if err != nil {
		return err
	}
	s.cfg.Metrics.Repairs.WithLabelValues(kind).Inc()
	return s.dispatch(ctx, next)
}

func (s *Scheduler) withinBudget(id int64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	cutoff := s.cfg.Now().Add(-s.cfg.RepairWindow)
	recent := s.repairs[id][:0]
	for _, t := range s.repairs[id] {
		if t.After(cutoff) {
			recent = append(recent, t)
		}
	}
	s.repairs[id] = recent
	return len(recent) < s.cfg.MaxAttempts
}

// refill creates warm slices until MinWarm are ready or starting unbound,
// never exceeding MaxSlices running slices.
func (s *Scheduler) refill(ctx context.Context, rows []slicehub.Slice) error {
	s.mu.Lock()
	paused := s.paused
	s.mu.Unlock()
	free, running := 0, 0
	for _, sl := range rows {
		switch sl.State {
		case slicehub.StateWarm:
			free++
			running++
		case slicehub.StateProvisioning:
			if sl.UserID == 0 {
				free++
			}
			running++
		case slicehub.StateAssigned:
			running++
		}
	}
	s.cfg.Metrics.Desired.Set(float64(s.cfg.MinWarm))
	if paused {
		return nil
	}
	for free < s.cfg.MinWarm {
		if running >= s.cfg.MaxSlices {
			s.cfg.Metrics.CapacityExhausted.Set(1)
			s.log.Warn("warm pool below target: max_slices reached", "max_slices", s.cfg.MaxSlices, "running", running)
			return nil
		}
		sl, err := s.store.CreateSlice(ctx, 0, "scheduler", "warm pool refill")
		if err != nil {
			return err
		}
		if err := s.dispatch(ctx, sl); err != nil {
			return err
		}
		free++
		running++
	}
	s.cfg.Metrics.CapacityExhausted.Set(0)
	return nil
}

// observe refreshes the per-state gauges.
func (s *Scheduler) observe(ctx context.Context) {
	rows, err := s.store.Slices(ctx)
	if err != nil {
		return
	}
	counts := map[slicehub.SliceState]int{}
	for _, sl := range rows {
		counts[sl.State]++
	}
	for _, st := range slicehub.States {
		s.cfg.Metrics.Slices.WithLabelValues(string(st)).Set(float64(counts[st]))
	}
}
