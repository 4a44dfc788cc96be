package scheduler_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/slicehub/slicehub"
	"github.com/slicehub/slicehub/nomad"
	"github.com/slicehub/slicehub/postgres"
	"github.com/slicehub/slicehub/scheduler"
	"github.com/slicehub/slicehub/testsupport"
)

// fakeNomad keeps children and their allocations in memory, so the pool
// logic can be tested against real PostgreSQL without waiting for real
// allocations, and with a fake clock. The integration tests in this package
// run the same flows on real Nomad and Consul.
type fakeNomad struct {
	mu       sync.Mutex
	children map[string]scheduler.Child
	tokens   map[string]string          // idempotency token -> job id
	allocs   map[string]scheduler.Alloc // by alloc id
	seq      int
	// One node; each slice reserves sliceMB. A memory of 0 means plenty.
	nodeMB, sliceMB int64
	dispatches      int
}

func newFakeNomad() *fakeNomad {
	return &fakeNomad{children: map[string]scheduler.Child{}, tokens: map[string]string{},
		allocs: map[string]scheduler.Alloc{}, nodeMB: 1 << 20, sliceMB: 100}
}

func (f *fakeNomad) Dispatch(_ context.Context, id int64, gen int) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	token := nomad.DispatchToken(id, gen)
	if job, ok := f.tokens[token]; ok {
		return job, nil
	}
	f.seq++
	f.dispatches++
	job := fmt.Sprintf("slice/dispatch-s%dg%d-%d-%08x", id, gen, 1700000000+f.seq, f.seq)
	f.tokens[token] = job
	f.children[job] = scheduler.Child{JobID: job, SliceID: id, Generation: gen, Status: "running"}
	alloc := fmt.Sprintf("00000000-0000-4000-8000-%012d", f.seq)
	f.allocs[alloc] = scheduler.Alloc{ID: alloc, JobID: job, NodeID: "node-1", ClientStatus: "running",
		DesiredStatus: "run", MemoryMB: f.sliceMB, CPU: 1, DiskMB: 1}
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

func (f *fakeNomad) Allocations(context.Context) ([]scheduler.Alloc, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]scheduler.Alloc, 0, len(f.allocs))
	for _, a := range f.allocs {
		out = append(out, a)
	}
	return out, nil
}

func (f *fakeNomad) JobAllocations(_ context.Context, job string) ([]scheduler.Alloc, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []scheduler.Alloc
	for _, a := range f.allocs {
		if a.JobID == job {
			out = append(out, a)
		}
	}
	return out, nil
}

func (f *fakeNomad) Nodes(context.Context) ([]scheduler.Node, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return []scheduler.Node{{ID: "node-1", Name: "fake", Schedulable: true, Drivers: map[string]bool{"mock_driver": true},
		MemoryMB: f.nodeMB, CPU: 1 << 20, DiskMB: 1 << 20}}, nil
}

func (f *fakeNomad) SliceResources(context.Context) (scheduler.Resources, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return scheduler.Resources{MemoryMB: f.sliceMB, CPU: 1, DiskMB: 1, Driver: "mock_driver"}, nil
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
	for id, a := range f.allocs {
		if a.JobID == job {
			a.ClientStatus, a.DesiredStatus = "complete", "stop"
			f.allocs[id] = a
		}
	}
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

// handDispatch starts a child as `nomad job dispatch -meta slice_id=<meta>`
// would: its ID carries neither slice nor generation. It returns the child
// and its allocation.
func (f *fakeNomad) handDispatch(meta string) (job, alloc string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.seq++
	job = fmt.Sprintf("slice/dispatch-%d-%08x", 1700000000+f.seq, f.seq)
	id, _ := slicehub.ParseSliceID(meta)
	f.children[job] = scheduler.Child{JobID: job, SliceID: id, Generation: -1, Status: "running",
		SubmitTime: time.Now().Add(time.Duration(f.seq) * time.Millisecond)}
	alloc = fmt.Sprintf("00000000-0000-4000-8000-%012d", f.seq)
	f.allocs[alloc] = scheduler.Alloc{ID: alloc, JobID: job, NodeID: "node-1", ClientStatus: "running",
		DesiredStatus: "run", MemoryMB: f.sliceMB, CPU: 1, DiskMB: 1}
	return job, alloc
}

// running reports whether job is alive in the fake.
func (f *fakeNomad) running(job string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.children[job]
	return ok && c.Alive()
}

// restart makes Nomad report n more task restarts of job's allocation.
func (f *fakeNomad) restart(job string, n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for id, a := range f.allocs {
		if a.JobID == job && a.Holds() {
			a.Restarts += n
			f.allocs[id] = a
		}
	}
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

func (f *fakeNomad) dispatchCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.dispatches
}

type fakeRoutes struct {
	mu    sync.Mutex
	m     map[int64]slicehub.Route
	stale bool // Consul unreachable: the table is the last one known
}

func (r *fakeRoutes) Status() (time.Time, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stale {
		return time.Now().Add(-time.Minute), errors.New("consul unreachable")
	}
	return time.Now(), nil
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

// fakeClock is Config.Now for tests of TTLs and windows. It runs with the
// wall clock plus an offset that Add moves forward, because the times it is
// compared with (state_changed_at, ...) come from PostgreSQL's now().
type fakeClock struct {
	mu     sync.Mutex
	offset time.Duration
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.offset)
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.offset += d
	c.mu.Unlock()
}

type env struct {
	db     *postgres.DB
	nomad  *fakeNomad
	routes *fakeRoutes
	clock  *fakeClock
	sched  *scheduler.Scheduler
	cfg    scheduler.Config
}

// openDB returns a migrated gateway database of its own for the test.
func openDB(t testing.TB) *postgres.DB {
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
	// Slice databases (wa_slice_<id>) and roles belong to the server, not
	// to the test's gateway database: give each test its own range of ids.
	n := testDBs.Add(1)
	if _, err := db.Pool.Exec(ctx, fmt.Sprintf(`ALTER SEQUENCE slices_id_seq RESTART WITH %d`, n*100000)); err != nil {
		t.Fatal(err)
	}
	return db
}

var testDBs atomic.Int64

func newEnv(t testing.TB, cfg scheduler.Config) *env {
	t.Helper()
	e := &env{db: openDB(t), nomad: newFakeNomad(), routes: &fakeRoutes{m: map[int64]slicehub.Route{}},
		clock: &fakeClock{}}
	if cfg.Now == nil {
		cfg.Now = e.clock.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = testsupport.Logger(t)
	}
	if cfg.Metrics == nil {
		cfg.Metrics = scheduler.NewMetrics(nil)
	}
	e.cfg = cfg
	e.sched = scheduler.New(e.db, e.nomad, e.routes, cfg)
	return e
}

func (e *env) reconcile(t testing.TB) {
	t.Helper()
	if err := e.sched.Reconcile(context.Background()); err != nil {
		t.Fatalf("reconcile: %v", err)
	}
}

// healAll marks every dispatched slice healthy, as Consul would.
func (e *env) healAll(t testing.TB) {
	t.Helper()
	for id := range e.nomad.alive() {
		e.routes.set(id, true)
	}
}

// settle runs reconcile, heal, reconcile: the pool after its slices started.
func (e *env) settle(t testing.TB) {
	t.Helper()
	e.reconcile(t)
	e.healAll(t)
	e.reconcile(t)
}

func (e *env) user(t testing.TB, email string) int64 {
	t.Helper()
	var id int64
	if err := e.db.Pool.QueryRow(context.Background(), `INSERT INTO users (email, password_hash) VALUES ($1, 'x') RETURNING id`, email).Scan(&id); err != nil {
		t.Fatal(err)
	}
	return id
}

func (e *env) states(t testing.TB) map[slicehub.SliceState]int {
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

func (e *env) slice(t testing.TB, id int64) slicehub.Slice {
	t.Helper()
	sl, err := e.db.Slice(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return sl
}

func (e *env) sliceIn(t testing.TB, state slicehub.SliceState) slicehub.Slice {
	t.Helper()
	rows, err := e.db.Slices(context.Background(), state)
	if err != nil || len(rows) == 0 {
		t.Fatalf("no %s slice: %v", state, err)
	}
	return rows[0]
}

// writeAsSlice runs sql in a slice's database as the slice's own role,
// over TCP with its password, as the slice would.
func writeAsSlice(t testing.TB, databaseURL, sql string) {
	t.Helper()
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, databaseURL)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	if _, err := pool.Exec(ctx, sql); err != nil {
		t.Fatalf("as the slice: %v", err)
	}
}
