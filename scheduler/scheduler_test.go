package scheduler_test

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/slicehub/slicehub"
	"github.com/slicehub/slicehub/postgres"
	"github.com/slicehub/slicehub/scheduler"
	"github.com/slicehub/slicehub/testsupport"
)

// fakeNomad keeps children in memory, so the pool logic can be tested
// against real PostgreSQL without waiting for real allocations. The
// integration tests in this package run the same flows on real Nomad.
type fakeNomad struct {
	mu       sync.Mutex
	children map[string]scheduler.Child
	tokens   map[string]string // idempotency token -> job id
	allocs   map[string]scheduler.Alloc
	seq      int
}

func newFakeNomad() *fakeNomad {
	return &fakeNomad{children: map[string]scheduler.Child{}, tokens: map[string]string{}, allocs: map[string]scheduler.Alloc{}}
}

func (f *fakeNomad) Dispatch(_ context.Context, id int64, token string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if job, ok := f.tokens[token]; ok {
		return job, nil
	}
	f.seq++
	job := fmt.Sprintf("slice/dispatch-%d-%08d", id, f.seq)
	f.tokens[token] = job
	f.children[job] = scheduler.Child{JobID: job, SliceID: id, Status: "running"}
	return job, nil
}

func (f *fakeNomad) Children(context.Context) ([]scheduler.Child, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]scheduler.Child, 0, len(f.children))
	for _, c := range f.children {
		out = append(out, c)
	}
	return out, nil
}

func (f *fakeNomad) Alloc(_ context.Context, id string) (scheduler.Alloc, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	a, ok := f.allocs[id]
	if !ok {
		return a, slicehub.Errorf("fake.alloc", slicehub.KindNotFound, "alloc_not_found", "unknown allocation")
	}
	return a, nil
}

func (f *fakeNomad) Stop(_ context.Context, job string, purge bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if purge {
		delete(f.children, job)
		return nil
	}
	if c, ok := f.children[job]; ok {
		c.Stopped, c.Status = true, "dead"
		f.children[job] = c
	}
	return nil
}

func (f *fakeNomad) alive() map[int64]int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := map[int64]int{}
	for _, c := range f.children {
		if c.Alive() {
			n[c.SliceID]++
		}
	}
	return n
}

type fakeRoutes struct {
	mu sync.Mutex
	m  map[int64]slicehub.Route
}

func (r *fakeRoutes) Snapshot() map[int64]slicehub.Route {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[int64]slicehub.Route, len(r.m))
	for k, v := range r.m {
		out[k] = v
	}
	return out
}
func (r *fakeRoutes) Subscribe() (<-chan struct{}, func()) { return make(chan struct{}), func() {} }
func (r *fakeRoutes) set(id int64, healthy bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if healthy {
		r.m[id] = slicehub.Route{SliceID: id, Addr: "127.0.0.1:1"}
	} else {
		delete(r.m, id)
	}
}

type env struct {
	db     *postgres.DB
	nomad  *fakeNomad
	routes *fakeRoutes
	sched  *scheduler.Scheduler
}

func newEnv(t *testing.T, cfg scheduler.Config) *env {
	t.Helper()
	ctx := context.Background()
	db, err := postgres.Open(ctx, testsupport.NewDatabase(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	if err := db.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	e := &env{db: db, nomad: newFakeNomad(), routes: &fakeRoutes{m: map[int64]slicehub.Route{}}}
	e.sched = scheduler.New(db, e.nomad, e.routes, cfg)
	return e
}

func (e *env) reconcile(t *testing.T) {
	t.Helper()
	if err := e.sched.Reconcile(context.Background()); err != nil {
		t.Fatalf("reconcile: %v", err)
	}
}

// healAll marks every dispatched slice healthy, as Consul would.
func (e *env) healAll(t *testing.T) {
	t.Helper()
	for id := range e.nomad.alive() {
		e.routes.set(id, true)
	}
}

func (e *env) user(t *testing.T, email string) int64 {
	t.Helper()
	var id int64
	if err := e.db.Pool.QueryRow(context.Background(), `INSERT INTO users (email, password_hash) VALUES ($1, 'x') RETURNING id`, email).Scan(&id); err != nil {
		t.Fatal(err)
	}
	return id
}

func (e *env) states(t *testing.T) map[slicehub.SliceState]int {
	t.Helper()
	rows, err := e.db.Slices(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	out := map[slicehub.SliceState]int{}
	for _, s := range rows {
		out[s.State]++
	}
	return out
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
	e.reconcile(t)
	e.healAll(t)
	e.reconcile(t)
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
}

func TestEmptyPoolQueuesAnOnDemandSliceFirst(t *testing.T) {
	e := newEnv(t, scheduler.Config{MinWarm: 0, MaxSlices: 10})
	ctx := context.Background()
	u := e.user(t, "b@example.com")
	sl, err := e.sched.Claim(ctx, u)
	if err != nil || sl.State != slicehub.StateProvisioning || sl.UserID != u {
		t.Fatalf("Claim on an empty pool = %+v, %v; want a provisioning slice reserved for the user", sl, err)
	}
	e.reconcile(t)
	e.healAll(t)
	e.reconcile(t)
	got, err := e.db.SliceForUser(ctx, u)
	if err != nil || got.ID != sl.ID || got.State != slicehub.StateAssigned {
		t.Fatalf("after health: %+v, %v; want slice %d assigned", got, err, sl.ID)
	}
}

func TestConcurrentClaimsNeverShareASlice(t *testing.T) {
	e := newEnv(t, scheduler.Config{MinWarm: 3, MaxSlices: 20})
	e.reconcile(t)
	e.healAll(t)
	e.reconcile(t)
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
	e.reconcile(t)
	e.healAll(t)
	e.reconcile(t)
	ctx := context.Background()
	u := e.user(t, "d@example.com")
	sl, err := e.sched.Claim(ctx, u)
	if err != nil {
		t.Fatal(err)
	}
	sl, _ = e.db.Slice(ctx, sl.ID)
	oldJob := sl.JobID
	// The allocation is lost: its child disappears from Nomad.
	_ = e.nomad.Stop(ctx, oldJob, true)
	e.routes.set(sl.ID, false)
	e.reconcile(t)
	after, _ := e.db.Slice(ctx, sl.ID)
	if after.JobID == "" || after.JobID == oldJob || after.UserID != u || after.State != slicehub.StateProvisioning {
		t.Fatalf("after repair: %+v; want a new job for the same user, provisioning", after)
	}
	e.healAll(t)
	e.reconcile(t)
	after, _ = e.db.Slice(ctx, sl.ID)
	if after.State != slicehub.StateAssigned || after.UserID != u {
		t.Fatalf("after health: %+v; want assigned to user %d again", after, u)
	}
}

func TestStrayChildIsStopped(t *testing.T) {
	e := newEnv(t, scheduler.Config{MinWarm: 0, MaxSlices: 10})
	ctx := context.Background()
	stray, _ := e.nomad.Dispatch(ctx, 999, "by-hand")
	e.reconcile(t)
	if _, ok := e.nomad.alive()[999]; ok {
		t.Fatalf("stray child %s still runs after reconcile", stray)
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
	alloc := "0b0e4c36-1c1e-4a39-9d7c-3c2f0c7e1a01"
	other := "0b0e4c36-1c1e-4a39-9d7c-3c2f0c7e1a02"
	e.nomad.allocs[alloc] = scheduler.Alloc{ID: alloc, JobID: sl.JobID, ClientStatus: "running"}
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

