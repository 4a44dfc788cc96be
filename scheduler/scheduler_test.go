package scheduler_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/slicehub/slicehub"
	"github.com/slicehub/slicehub/postgres"
	"github.com/slicehub/slicehub/scheduler"
)

// value reads a gauge or counter.
func value(t testing.TB, m prometheus.Metric) float64 {
	t.Helper()
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		t.Fatal(err)
	}
	switch {
	case d.Gauge != nil:
		return d.Gauge.GetValue()
	case d.Counter != nil:
		return d.Counter.GetValue()
	case d.Histogram != nil:
		return float64(d.Histogram.GetSampleCount())
	}
	t.Fatalf("metric %v is neither a gauge, a counter nor a histogram", m.Desc())
	return 0
}

func TestPoolRefillsToMinWarmAfterClaims(t *testing.T) {
	e := newEnv(t, scheduler.Config{MinWarm: 2, MaxSlices: 10})
	e.reconcile(t)
	if got := e.states(t)[slicehub.StateProvisioning]; got != 2 {
		t.Fatalf("after the first reconcile: %d provisioning slices, want 2", got)
	}
	e.healAll(t)
	e.reconcile(t)
	if got := e.states(t)[slicehub.StateWarm]; got != 2 {
		t.Fatalf("after health: %d warm, want 2", got)
	}
	ctx := context.Background()
	u := e.user(t, "a@example.com")
	sl, err := e.sched.Claim(ctx, u)
	if err != nil || sl.State != slicehub.StateAssigned || sl.UserID != u {
		t.Fatalf("Claim = %+v, %v; want an assigned slice bound to user %d", sl, err, u)
	}
	// A second claim by the same user returns the same slice.
	again, err := e.sched.Claim(ctx, u)
	if err != nil || again.ID != sl.ID {
		t.Fatalf("second Claim = %d, %v; want the same slice %d", again.ID, err, sl.ID)
	}
	e.settle(t)
	st := e.states(t)
	if st[slicehub.StateWarm] != 2 || st[slicehub.StateAssigned] != 1 {
		t.Fatalf("after refill: %v; want 2 warm and 1 assigned", st)
	}
	events, err := e.db.SliceEvents(ctx, sl.ID)
	if err != nil || len(events) < 3 {
		t.Fatalf("events of slice %d = %v, %v; want provisioning, dispatched, warm, assigned recorded", sl.ID, events, err)
	}
	if last := events[len(events)-1]; last.To != slicehub.StateAssigned || last.Actor != fmt.Sprintf("user:%d", u) {
		t.Errorf("last event = %+v; want assigned by user:%d", last, u)
	}
	if got := value(t, e.cfg.Metrics.Claims.WithLabelValues("warm")); got != 1 {
		t.Errorf("claims{warm} = %v, want 1", got)
	}
	if got := value(t, e.cfg.Metrics.Slices.WithLabelValues("warm")); got != 2 {
		t.Errorf("slices{warm} gauge = %v, want 2", got)
	}
}

func TestPoolNeverExceedsMaxSlices(t *testing.T) {
	e := newEnv(t, scheduler.Config{MinWarm: 5, MaxSlices: 3})
	for i := 0; i < 3; i++ {
		e.reconcile(t)
		e.healAll(t)
	}
	if n := len(e.nomad.alive()); n != 3 {
		t.Fatalf("%d slices dispatched, want max_slices=3", n)
	}
	if got := value(t, e.cfg.Metrics.CapacityExhausted); got != 1 {
		t.Errorf("capacity_exhausted = %v, want 1 while max_slices holds the pool below min_warm", got)
	}
}

// Nomad's node holds 3.5 slices: the pool dispatches 3 and says why it
// stops, in the metric and in Capacity for the admin view.
func TestPoolNeverExceedsNodeCapacity(t *testing.T) {
	e := newEnv(t, scheduler.Config{MinWarm: 5, MaxSlices: 50})
	e.nomad.nodeMB, e.nomad.sliceMB = 350, 100
	for i := 0; i < 3; i++ {
		e.settle(t)
	}
	if n := len(e.nomad.alive()); n != 3 {
		t.Fatalf("%d slices dispatched on a node that holds 3", n)
	}
	if got := value(t, e.cfg.Metrics.CapacityExhausted); got != 1 {
		t.Errorf("capacity_exhausted = %v, want 1", got)
	}
	c, err := e.sched.Capacity(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if c.Nodes != 1 || c.MemoryMB != 350 || c.ReservedMB != 300 || c.Fit != 0 || c.Limit != "memory" || !c.Exhausted() {
		t.Errorf("Capacity = %+v; want 1 node, 350 MB, 300 reserved, fit 0, limit memory", c)
	}

	// A user arriving now takes a warm slice; the refill waits for room.
	u := e.user(t, "cap@example.com")
	if sl, err := e.sched.Claim(context.Background(), u); err != nil || sl.State != slicehub.StateAssigned {
		t.Fatalf("Claim = %+v, %v", sl, err)
	}
	e.settle(t)
	if n := len(e.nomad.alive()); n != 3 {
		t.Fatalf("%d slices after a claim on a full node, want 3", n)
	}
	// More memory: the pool grows back towards min_warm.
	e.nomad.mu.Lock()
	e.nomad.nodeMB = 10_000
	e.nomad.mu.Unlock()
	e.settle(t)
	if st := e.states(t); st[slicehub.StateWarm] != 5 {
		t.Fatalf("after the node grew: %v; want 5 warm", st)
	}
	if got := value(t, e.cfg.Metrics.CapacityExhausted); got != 0 {
		t.Errorf("capacity_exhausted = %v, want 0 once there is room", got)
	}
}

// With no room at all, a user's on-demand slice waits (queued, no error)
// and goes first as soon as one slice fits.
func TestOnDemandSliceWaitsForCapacityAndGoesFirst(t *testing.T) {
	e := newEnv(t, scheduler.Config{MinWarm: 2, MaxSlices: 50})
	e.nomad.nodeMB, e.nomad.sliceMB = 50, 100
	e.settle(t)
	if n := len(e.nomad.alive()); n != 0 {
		t.Fatalf("%d dispatched with no room", n)
	}
	ctx := context.Background()
	u := e.user(t, "wait@example.com")
	sl, err := e.sched.Claim(ctx, u)
	if err != nil || sl.State != slicehub.StateProvisioning {
		t.Fatalf("Claim on an empty, full pool = %+v, %v; want a provisioning slice", sl, err)
	}
	e.settle(t)
	p, err := e.sched.Progress(ctx, u)
	if err != nil || p.Stage != slicehub.StageQueued || p.Ready {
		t.Fatalf("Progress = %+v, %v; want queued", p, err)
	}
	// Room for exactly one: the user's slice, not a refill.
	e.nomad.mu.Lock()
	e.nomad.nodeMB = 150
	e.nomad.mu.Unlock()
	e.settle(t)
	got := e.slice(t, sl.ID)
	if got.State != slicehub.StateAssigned || len(e.nomad.alive()) != 1 {
		t.Fatalf("after room for one: slice %+v, %d alive; want the user's slice assigned and nothing else", got, len(e.nomad.alive()))
	}
}

func TestEmptyPoolQueuesAnOnDemandSliceFirst(t *testing.T) {
	e := newEnv(t, scheduler.Config{MinWarm: 0, MaxSlices: 10})
	ctx := context.Background()
	u := e.user(t, "b@example.com")
	sl, err := e.sched.Claim(ctx, u)
	if err != nil || sl.State != slicehub.StateProvisioning || sl.UserID != u {
		t.Fatalf("Claim on an empty pool = %+v, %v; want a provisioning slice reserved for the user", sl, err)
	}
	e.settle(t)
	got, err := e.db.SliceForUser(ctx, u)
	if err != nil || got.ID != sl.ID || got.State != slicehub.StateAssigned {
		t.Fatalf("after health: %+v, %v; want slice %d assigned", got, err, sl.ID)
	}
	if got := value(t, e.cfg.Metrics.Claims.WithLabelValues("pool_empty")); got != 1 {
		t.Errorf("claims{pool_empty} = %v, want 1", got)
	}
}

func TestProgressStages(t *testing.T) {
	e := newEnv(t, scheduler.Config{MinWarm: 0, MaxSlices: 10})
	ctx := context.Background()
	u := e.user(t, "p@example.com")
	if _, err := e.sched.Progress(ctx, u); slicehub.KindOf(err) != slicehub.KindNotFound {
		t.Fatalf("Progress without a slice: %v, want not found", err)
	}
	sl, err := e.sched.Claim(ctx, u)
	if err != nil {
		t.Fatal(err)
	}
	p, _ := e.sched.Progress(ctx, u)
	if p.Stage != slicehub.StageQueued || p.SliceID != sl.ID {
		t.Fatalf("before the leader acted: %+v, want queued", p)
	}
	e.reconcile(t)
	p, _ = e.sched.Progress(ctx, u)
	// The fake's allocation runs at once.
	if p.Stage != slicehub.StageRunning || p.DatabaseReadyAt.IsZero() || p.DispatchedAt.IsZero() || p.AllocID == "" || p.Ready {
		t.Fatalf("after dispatch: %+v, want allocation_running with its times", p)
	}
	e.healAll(t)
	p, _ = e.sched.Progress(ctx, u)
	if p.Stage != slicehub.StageHealthy || p.Ready {
		t.Fatalf("healthy but not yet assigned: %+v, want healthy and not ready", p)
	}
	e.reconcile(t)
	p, _ = e.sched.Progress(ctx, u)
	if p.Stage != slicehub.StageHealthy || !p.Ready || p.State != slicehub.StateAssigned {
		t.Fatalf("after assignment: %+v, want ready", p)
	}
}

func TestConcurrentClaimsNeverShareASlice(t *testing.T) {
	e := newEnv(t, scheduler.Config{MinWarm: 3, MaxSlices: 20})
	e.settle(t)
	const n = 8
	users := make([]int64, n)
	for i := range users {
		users[i] = e.user(t, fmt.Sprintf("c%d@example.com", i))
	}
	var wg sync.WaitGroup
	got := make([]slicehub.Slice, n)
	errs := make([]error, n)
	for i := range users {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			got[i], errs[i] = e.sched.Claim(context.Background(), users[i])
		}(i)
	}
	wg.Wait()
	seen := map[int64]int64{}
	for i, s := range got {
		if errs[i] != nil {
			t.Fatalf("claim %d: %v", i, errs[i])
		}
		if other, dup := seen[s.ID]; dup {
			t.Fatalf("slice %d bound to users %d and %d", s.ID, other, users[i])
		}
		seen[s.ID] = users[i]
	}
}

func TestLostJobIsRedispatchedForTheSameUser(t *testing.T) {
	e := newEnv(t, scheduler.Config{MinWarm: 1, MaxSlices: 10})
	e.settle(t)
	ctx := context.Background()
	u := e.user(t, "d@example.com")
	sl, err := e.sched.Claim(ctx, u)
	if err != nil {
		t.Fatal(err)
	}
	sl = e.slice(t, sl.ID)
	oldJob := sl.JobID
	// The allocation is lost: its child disappears from Nomad.
	_ = e.nomad.Stop(ctx, oldJob, true)
	e.routes.set(sl.ID, false)
	e.reconcile(t)
	after := e.slice(t, sl.ID)
	if after.JobID == "" || after.JobID == oldJob || after.UserID != u || after.State != slicehub.StateProvisioning || after.Restarts != sl.Restarts+1 {
		t.Fatalf("after repair: %+v; want a new generation's job for the same user, provisioning", after)
	}
	e.healAll(t)
	e.reconcile(t)
	after = e.slice(t, sl.ID)
	if after.State != slicehub.StateAssigned || after.UserID != u {
		t.Fatalf("after health: %+v; want assigned to user %d again", after, u)
	}
	if got := value(t, e.cfg.Metrics.Repairs.WithLabelValues("lost_job")); got != 1 {
		t.Errorf("repairs{lost_job} = %v, want 1", got)
	}
}

// A slice whose job runs but that Consul has not seen passing for the
// unhealthy timeout is dispatched again; while Consul itself cannot be
// reached, nothing counts.
func TestRunningButUnhealthySliceIsRedispatched(t *testing.T) {
	e := newEnv(t, scheduler.Config{MinWarm: 1, MaxSlices: 10, UnhealthyTimeout: 5 * time.Minute})
	e.settle(t)
	sl := e.sliceIn(t, slicehub.StateWarm)
	e.routes.set(sl.ID, false)
	e.routes.mu.Lock()
	e.routes.stale = true
	e.routes.mu.Unlock()
	e.reconcile(t)
	e.clock.Add(10 * time.Minute)
	e.reconcile(t)
	if got := e.slice(t, sl.ID); got.JobID != sl.JobID {
		t.Fatalf("re-dispatched while Consul was unreachable: %+v", got)
	}
	e.routes.mu.Lock()
	e.routes.stale = false
	e.routes.mu.Unlock()
	e.reconcile(t) // starts counting
	e.clock.Add(4 * time.Minute)
	e.reconcile(t)
	if got := e.slice(t, sl.ID); got.JobID != sl.JobID {
		t.Fatalf("re-dispatched before the timeout: %+v", got)
	}
	e.clock.Add(2 * time.Minute)
	e.reconcile(t)
	got := e.slice(t, sl.ID)
	if got.JobID == sl.JobID || got.State != slicehub.StateProvisioning {
		t.Fatalf("after the unhealthy timeout: %+v; want a new job", got)
	}
	if n := value(t, e.cfg.Metrics.Repairs.WithLabelValues("unhealthy")); n != 1 {
		t.Errorf("repairs{unhealthy} = %v, want 1", n)
	}
}

func TestStrayChildIsStopped(t *testing.T) {
	e := newEnv(t, scheduler.Config{MinWarm: 0, MaxSlices: 10})
	ctx := context.Background()
	stray, _ := e.nomad.Dispatch(ctx, 999, 0)
	e.reconcile(t)
	if _, ok := e.nomad.alive()[999]; ok {
		t.Fatalf("stray child %s still runs after reconcile", stray)
	}
}

// A leader that dies between Nomad's answer to a dispatch and recording the
// job leaves a child no row names. The next leader adopts it, because its
// ID carries the slice and the generation, instead of stopping it and
// dispatching a second one.
func TestChildDispatchedButNotRecordedIsAdopted(t *testing.T) {
	e := newEnv(t, scheduler.Config{MinWarm: 1, MaxSlices: 10})
	ctx := context.Background()
	sl, err := e.db.CreateSlice(ctx, 0, "scheduler", "warm pool refill")
	if err != nil {
		t.Fatal(err)
	}
	job, _ := e.nomad.Dispatch(ctx, sl.ID, sl.Restarts) // the crash: not recorded
	// The idempotency token is gone (Nomad GC'd it, or another Nomad
	// answers); only the ID is left to go by.
	e.nomad.mu.Lock()
	e.nomad.tokens = map[string]string{}
	e.nomad.mu.Unlock()
	e.reconcile(t)
	got := e.slice(t, sl.ID)
	if got.JobID != job {
		t.Fatalf("slice records %q, want the adopted %q", got.JobID, job)
	}
	if alive := e.nomad.alive(); alive[sl.ID] != 1 || len(alive) != 1 {
		t.Fatalf("alive children %v; want exactly the adopted one", alive)
	}
}

// Restarting the scheduler (a new instance, as after a crash or a new
// leader) dispatches nothing: everything it finds is accounted for.
func TestNewSchedulerConvergesWithoutDispatching(t *testing.T) {
	e := newEnv(t, scheduler.Config{MinWarm: 3, MaxSlices: 10})
	e.settle(t)
	ctx := context.Background()
	u := e.user(t, "conv@example.com")
	if _, err := e.sched.Claim(ctx, u); err != nil {
		t.Fatal(err)
	}
	e.settle(t)
	before := e.nomad.dispatchCount()
	fresh := scheduler.New(e.db, e.nomad, e.routes, scheduler.Config{MinWarm: 3, MaxSlices: 10, Now: e.clock.Now})
	for i := 0; i < 3; i++ {
		if err := fresh.Reconcile(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if d := e.nomad.dispatchCount() - before; d != 0 {
		t.Fatalf("a new scheduler dispatched %d children on a converged pool", d)
	}
}

func TestWarmTTLReplacesThenRetires(t *testing.T) {
	e := newEnv(t, scheduler.Config{MinWarm: 2, MaxSlices: 10, WarmTTL: time.Hour, RetentionInterval: time.Nanosecond})
	e.settle(t)
	ctx := context.Background()
	old, _ := e.db.Slices(ctx, slicehub.StateWarm)
	if len(old) != 2 {
		t.Fatalf("%d warm, want 2", len(old))
	}
	// One is claimed before the TTL passes: it must never be recycled.
	u := e.user(t, "ttl@example.com")
	claimed, err := e.sched.Claim(ctx, u)
	if err != nil {
		t.Fatal(err)
	}
	e.settle(t) // refill the claimed one: a fresh warm slice
	// An hour passes for the slices there are now (the clock is the
	// database's: that is where state_changed_at comes from).
	if _, err := e.db.Pool.Exec(ctx, `UPDATE slices SET state_changed_at = state_changed_at - interval '61 minutes'`); err != nil {
		t.Fatal(err)
	}
	e.reconcile(t)
	// Two are past the TTL now: one of the originals and the refill. A
	// replacement for each starts first; nothing is retired yet.
	st := e.states(t)
	if st[slicehub.StateRetired] != 0 || st[slicehub.StateProvisioning] != 2 {
		t.Fatalf("right after the TTL: %v; want 2 replacements provisioning and nothing retired", st)
	}
	e.healAll(t)
	e.reconcile(t)
	st = e.states(t)
	if st[slicehub.StateRetired] != 2 || st[slicehub.StateWarm] != 2 || st[slicehub.StateAssigned] != 1 {
		t.Fatalf("once the replacements are warm: %v; want 2 retired, 2 warm, 1 assigned", st)
	}
	if got := e.slice(t, claimed.ID); got.State != slicehub.StateAssigned {
		t.Fatalf("the claimed slice is %s; a claimed slice is never recycled", got.State)
	}
	// The recycled slices held no user's data: their databases go at once.
	e.reconcile(t)
	var n int
	if err := e.db.Pool.QueryRow(ctx, `SELECT count(*) FROM slices WHERE state = 'retired' AND db_dropped_at IS NOT NULL AND dump_path IS NULL`).Scan(&n); err != nil || n != 2 {
		t.Fatalf("%d recycled slices dropped without a dump (%v), want 2", n, err)
	}
	if got := value(t, e.cfg.Metrics.Repairs.WithLabelValues("warm_ttl")); got != 2 {
		t.Errorf("repairs{warm_ttl} = %v, want 2", got)
	}
}

// Nomad restarts a crashing slice by itself; the scheduler counts those
// restarts against the budget, and the one that exhausts it fails the
// slice, raises the alert and replaces a warm slice.
func TestRestartBudgetFailsAndReplacesAWarmSlice(t *testing.T) {
	e := newEnv(t, scheduler.Config{MinWarm: 1, MaxSlices: 10, MaxAttempts: 3, RepairWindow: time.Hour})
	e.settle(t)
	ctx := context.Background()
	sl := e.sliceIn(t, slicehub.StateWarm)
	e.nomad.restart(sl.JobID, 2)
	e.reconcile(t)
	if got := e.slice(t, sl.ID); got.State != slicehub.StateWarm {
		t.Fatalf("after 2 restarts (budget 3): %s, want still warm", got.State)
	}
	// Counting is idempotent: a new scheduler that sees the same 2 restarts
	// adds nothing.
	fresh := scheduler.New(e.db, e.nomad, e.routes, scheduler.Config{MinWarm: 1, MaxSlices: 10, MaxAttempts: 3, Now: e.clock.Now})
	if err := fresh.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if n, _ := e.db.RecentFailures(ctx, sl.ID, time.Time{}); n != 2 {
		t.Fatalf("%d failures recorded, want 2", n)
	}
	e.nomad.restart(sl.JobID, 1)
	e.reconcile(t)
	got := e.slice(t, sl.ID)
	if got.State != slicehub.StateFailed {
		t.Fatalf("after 3 restarts: %s, want failed", got.State)
	}
	if e.nomad.alive()[sl.ID] != 0 {
		t.Errorf("the failed slice's job still runs")
	}
	if got := value(t, e.cfg.Metrics.SliceFailures.WithLabelValues("warm")); got != 1 {
		t.Errorf("slice_failures_total{from=warm} = %v, want 1", got)
	}
	st := e.states(t)
	if st[slicehub.StateProvisioning] != 1 {
		t.Fatalf("after the failure: %v; want a replacement provisioning", st)
	}
	// Restarts outside the window do not count.
	e.clock.Add(2 * time.Hour)
	if n, _ := e.db.RecentFailures(ctx, sl.ID, e.clock.Now().Add(-time.Hour)); n != 0 {
		t.Errorf("%d failures in a window that saw none", n)
	}
	// An operator's restart gives it a fresh budget.
	if _, err := e.sched.Restart(ctx, sl.ID, "admin:1"); err != nil {
		t.Fatal(err)
	}
	if n, _ := e.db.RecentFailures(ctx, sl.ID, time.Time{}); n != 0 {
		t.Errorf("%d failures left after an operator's restart", n)
	}
}

// A slice that keeps losing its job is re-dispatched until the budget is
// spent, then failed.
func TestRedispatchesCountAgainstTheBudget(t *testing.T) {
	e := newEnv(t, scheduler.Config{MinWarm: 0, MaxSlices: 10, MaxAttempts: 3})
	ctx := context.Background()
	u := e.user(t, "crash@example.com")
	sl, _ := e.sched.Claim(ctx, u)
	e.settle(t)
	for i := 0; i < 3; i++ {
		cur := e.slice(t, sl.ID)
		_ = e.nomad.Stop(ctx, cur.JobID, true)
		e.reconcile(t)
	}
	got := e.slice(t, sl.ID)
	if got.State != slicehub.StateFailed || got.UserID != u {
		t.Fatalf("after 3 lost jobs: %+v; want failed, still the user's", got)
	}
	if got := value(t, e.cfg.Metrics.SliceFailures.WithLabelValues("assigned")); got+value(t, e.cfg.Metrics.SliceFailures.WithLabelValues("provisioning")) != 1 {
		t.Errorf("slice_failures_total = %v, want 1", got)
	}
}

func TestBootstrapHandsCredentialsOncePerAllocation(t *testing.T) {
	e := newEnv(t, scheduler.Config{MinWarm: 1, MaxSlices: 10})
	e.reconcile(t)
	ctx := context.Background()
	rows, _ := e.db.Slices(ctx)
	if len(rows) != 1 {
		t.Fatalf("%d slices, want 1", len(rows))
	}
	sl := rows[0]
	allocs, _ := e.nomad.JobAllocations(ctx, sl.JobID)
	alloc := allocs[0].ID
	other := "0b0e4c36-1c1e-4a39-9d7c-3c2f0c7e1a02"
	e.nomad.allocs[other] = scheduler.Alloc{ID: other, JobID: "slice/dispatch-someone-else", ClientStatus: "running"}

	cases := []struct {
		name string
		req  slicehub.BootstrapRequest
		want slicehub.Kind
	}{
		{"malformed slice id", slicehub.BootstrapRequest{SliceID: "01", AllocID: alloc}, slicehub.KindInvalid},
		{"malformed alloc id", slicehub.BootstrapRequest{SliceID: sl.IDString(), AllocID: "../../etc"}, slicehub.KindInvalid},
		{"unknown allocation", slicehub.BootstrapRequest{SliceID: sl.IDString(), AllocID: "0b0e4c36-1c1e-4a39-9d7c-3c2f0c7e1a03"}, slicehub.KindUnauthorized},
		{"another job's allocation", slicehub.BootstrapRequest{SliceID: sl.IDString(), AllocID: other}, slicehub.KindUnauthorized},
		{"unknown slice", slicehub.BootstrapRequest{SliceID: "424242", AllocID: alloc}, slicehub.KindUnauthorized},
	}
	for _, c := range cases {
		if _, err := e.sched.Bootstrap(ctx, c.req); slicehub.KindOf(err) != c.want {
			t.Errorf("%s: err = %v (kind %s), want kind %s", c.name, err, slicehub.KindOf(err), c.want)
		}
	}
	creds, err := e.sched.Bootstrap(ctx, slicehub.BootstrapRequest{SliceID: sl.IDString(), AllocID: alloc})
	if err != nil || creds.DatabaseURL == "" || len(creds.GatewayToken) < 32 {
		t.Fatalf("Bootstrap = %+v, %v; want credentials", creds, err)
	}
	token, _ := e.db.GatewayToken(ctx, sl.ID)
	if token != creds.GatewayToken {
		t.Errorf("bootstrap token differs from the gateway's")
	}
	if _, err := e.sched.Bootstrap(ctx, slicehub.BootstrapRequest{SliceID: sl.IDString(), AllocID: alloc}); slicehub.KindOf(err) != slicehub.KindConflict {
		t.Errorf("second bootstrap of the same allocation: %v; want a conflict", err)
	}
}

// Every operation, called twice in a row and by two goroutines at once,
// acts once, records one event with its actor, and leaves Nomad running
// exactly what the state says.
func TestOperationsAreIdempotentAndRecorded(t *testing.T) {
	e := newEnv(t, scheduler.Config{MinWarm: 1, MaxSlices: 10})
	e.settle(t)
	ctx := context.Background()
	u := e.user(t, "ops@example.com")
	sl, err := e.sched.Claim(ctx, u)
	if err != nil {
		t.Fatal(err)
	}
	e.settle(t)

	twice := func(name string, fn func() (slicehub.Slice, error)) slicehub.Slice {
		t.Helper()
		var wg sync.WaitGroup
		res := make([]slicehub.Slice, 2)
		errs := make([]error, 2)
		for i := range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				res[i], errs[i] = fn()
			}()
		}
		wg.Wait()
		for i := range 2 {
			if errs[i] != nil {
				t.Fatalf("%s (concurrent call %d): %v", name, i, errs[i])
			}
		}
		again, err := fn()
		if err != nil {
			t.Fatalf("%s (third call): %v", name, err)
		}
		if again.State != res[0].State || again.State != res[1].State {
			t.Fatalf("%s: states %s, %s, then %s; want the same", name, res[0].State, res[1].State, again.State)
		}
		return again
	}
	countEvents := func(actor string, to slicehub.SliceState) int {
		t.Helper()
		events, err := e.db.SliceEvents(ctx, sl.ID)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, ev := range events {
			if ev.Actor == actor && ev.To == to {
				n++
			}
		}
		return n
	}

	got := twice("suspend", func() (slicehub.Slice, error) { return e.sched.Suspend(ctx, sl.ID, "billing") })
	if got.State != slicehub.StateSuspended || got.UserID != u || e.nomad.alive()[sl.ID] != 0 {
		t.Fatalf("after suspend: %+v, alive %v; want suspended, still the user's, its job stopped", got, e.nomad.alive())
	}
	if n := countEvents("billing", slicehub.StateSuspended); n != 1 {
		t.Fatalf("%d suspend events by billing, want 1", n)
	}
	e.settle(t)
	if e.nomad.alive()[sl.ID] != 0 {
		t.Fatalf("the reconcile restarted a suspended slice")
	}
	if _, err := e.sched.Restart(ctx, sl.ID, "admin:1"); slicehub.KindOf(err) != slicehub.KindConflict {
		t.Fatalf("restart of a suspended slice: %v; want a conflict (resume it)", err)
	}

	got = twice("resume", func() (slicehub.Slice, error) { return e.sched.Resume(ctx, sl.ID, "billing") })
	if got.State != slicehub.StateProvisioning || got.UserID != u {
		t.Fatalf("after resume: %+v; want provisioning for the same user", got)
	}
	if n := countEvents("billing", slicehub.StateProvisioning); n != 1 {
		t.Fatalf("%d resume events, want 1", n)
	}
	e.settle(t)
	if got := e.slice(t, sl.ID); got.State != slicehub.StateAssigned || e.nomad.alive()[sl.ID] != 1 {
		t.Fatalf("after resume and health: %+v, alive %v", got, e.nomad.alive())
	}

	before := e.slice(t, sl.ID)
	got = twice("restart", func() (slicehub.Slice, error) { return e.sched.Restart(ctx, sl.ID, "admin:7") })
	if got.State != slicehub.StateProvisioning || got.Restarts != before.Restarts+1 {
		t.Fatalf("after restart: %+v; want one new generation (%d)", got, before.Restarts+1)
	}
	if n := countEvents("admin:7", slicehub.StateProvisioning); n != 1 {
		t.Fatalf("%d restart events, want 1", n)
	}
	e.settle(t)
	if alive := e.nomad.alive(); alive[sl.ID] != 1 {
		t.Fatalf("after restart: %d children of the slice, want 1", alive[sl.ID])
	}

	// Reassign: admins only; the slice moves to another user, whose
	// previous slice is parked (suspended, unbound).
	v := e.user(t, "other@example.com")
	vSlice, err := e.sched.Claim(ctx, v)
	if err != nil {
		t.Fatal(err)
	}
	e.settle(t)
	if _, err := e.sched.Reassign(ctx, sl.ID, v, "billing"); slicehub.KindOf(err) != slicehub.KindForbidden {
		t.Fatalf("reassign by billing: %v; want forbidden", err)
	}
	got = twice("reassign", func() (slicehub.Slice, error) { return e.sched.Reassign(ctx, sl.ID, v, "admin:1") })
	if got.UserID != v || got.State != slicehub.StateAssigned {
		t.Fatalf("after reassign: %+v; want assigned to user %d", got, v)
	}
	parked := e.slice(t, vSlice.ID)
	if parked.UserID != 0 || parked.State != slicehub.StateSuspended {
		t.Fatalf("the user's previous slice: %+v; want parked, suspended and unbound", parked)
	}
	if _, err := e.db.SliceForUser(ctx, u); slicehub.KindOf(err) != slicehub.KindNotFound {
		t.Fatalf("the slice's previous user still has a slice: %v", err)
	}
	if _, err := e.sched.Resume(ctx, parked.ID, "admin:1"); slicehub.KindOf(err) != slicehub.KindConflict {
		t.Fatalf("resume of a parked slice: %v; want a conflict (it must never become warm)", err)
	}
	e.settle(t)
	if e.nomad.alive()[parked.ID] != 0 {
		t.Fatalf("the parked slice's job still runs")
	}

	got = twice("retire", func() (slicehub.Slice, error) { return e.sched.Retire(ctx, sl.ID, "admin:1") })
	if got.State != slicehub.StateRetired || got.UserID != 0 || e.nomad.alive()[sl.ID] != 0 {
		t.Fatalf("after retire: %+v; want retired, unbound, job stopped", got)
	}
	if n := countEvents("admin:1", slicehub.StateRetired); n != 1 {
		t.Fatalf("%d retire events, want 1", n)
	}
	if _, err := e.sched.Resume(ctx, sl.ID, "admin:1"); slicehub.KindOf(err) != slicehub.KindConflict {
		t.Fatalf("resume of a retired slice: %v; want a conflict", err)
	}
	if _, err := e.sched.Suspend(ctx, sl.ID, ""); slicehub.KindOf(err) != slicehub.KindInvalid {
		t.Fatalf("an operation without an actor: %v; want invalid", err)
	}
}

// Retiring a slice that served a user keeps a final pg_dump of its
// database, and drops the database only after the retention period.
func TestRetiredSliceIsDumpedThenDroppedAfterRetention(t *testing.T) {
	dumps := t.TempDir()
	e := newEnv(t, scheduler.Config{MinWarm: 0, MaxSlices: 10, DumpDir: dumps, DBRetention: 24 * time.Hour, RetentionInterval: time.Nanosecond})
	ctx := context.Background()
	u := e.user(t, "gone@example.com")
	sl, _ := e.sched.Claim(ctx, u)
	e.settle(t)
	// The slice's own data, written with its own role.
	creds, err := e.db.SliceCredentials(ctx, sl.ID, "")
	if err != nil {
		t.Fatal(err)
	}
	writeAsSlice(t, creds.DatabaseURL, "CREATE TABLE contacts (name text); INSERT INTO contacts VALUES ('Ada')")

	if _, err := e.sched.Retire(ctx, sl.ID, "billing"); err != nil {
		t.Fatal(err)
	}
	e.reconcile(t)
	var dumpPath string
	var dropped *time.Time
	if err := e.db.Pool.QueryRow(ctx, `SELECT coalesce(dump_path, ''), db_dropped_at FROM slices WHERE id = $1`, sl.ID).Scan(&dumpPath, &dropped); err != nil {
		t.Fatal(err)
	}
	if dumpPath == "" || dropped != nil {
		t.Fatalf("after retire: dump %q, dropped %v; want a dump and the database kept", dumpPath, dropped)
	}
	b, err := os.ReadFile(dumpPath)
	if err != nil || !strings.HasPrefix(string(b), "PGDMP") {
		t.Fatalf("dump %s: %d bytes, %v; want a custom-format dump", dumpPath, len(b), err)
	}
	restore := filepath.Join(filepath.Dir(postgres.FindPgDump()), "pg_restore")
	out, err := exec.Command(restore, "--data-only", "--file=-", dumpPath).Output()
	if err != nil || !strings.Contains(string(out), "Ada") {
		t.Fatalf("pg_restore of the dump: %v; the slice's data is not in it:\n%s", err, out)
	}
	if fi, _ := os.Stat(dumpPath); fi.Mode().Perm() != 0o600 {
		t.Errorf("dump mode %v, want 0600", fi.Mode().Perm())
	}
	if !databaseExists(t, e, sl.ID) {
		t.Fatalf("the database is gone before the retention period")
	}
	e.clock.Add(25 * time.Hour)
	e.reconcile(t)
	if databaseExists(t, e, sl.ID) {
		t.Fatalf("the database still exists after the retention period")
	}
	e.reconcile(t) // nothing left to do, and no error for it
	events, _ := e.db.SliceEvents(ctx, sl.ID)
	var reasons []string
	for _, ev := range events {
		if ev.To == slicehub.StateRetired {
			reasons = append(reasons, ev.Actor+": "+ev.Reason)
		}
	}
	if len(reasons) != 3 {
		t.Fatalf("retirement events %q; want retired, dumped, dropped", reasons)
	}
}

func databaseExists(t testing.TB, e *env, id int64) bool {
	t.Helper()
	var ok bool
	if err := e.db.Pool.QueryRow(context.Background(), `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`,
		slicehub.DatabaseName(id)).Scan(&ok); err != nil {
		t.Fatal(err)
	}
	return ok
}
