package scheduler_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	consulapi "github.com/hashicorp/consul/api"
	nomadapi "github.com/hashicorp/nomad/api"

	"github.com/slicehub/slicehub"
	"github.com/slicehub/slicehub/consul"
	"github.com/slicehub/slicehub/jobs"
	"github.com/slicehub/slicehub/nomad"
	"github.com/slicehub/slicehub/postgres"
	"github.com/slicehub/slicehub/scheduler"
	"github.com/slicehub/slicehub/testsupport"
)

// realEnv is a pool on the package's real Nomad and Consul. Each test gets
// its own parent job and Consul service name (and its own database), so
// tests cannot see each other's children or routes, and its cleanup purges
// what it dispatched.
type realEnv struct {
	db      *postgres.DB
	nomad   *nomad.Client
	api     *nomadapi.Client
	consul  *consulapi.Client
	routes  *consul.Routes
	name    string // parent job ID and service name
	lockKey string
}

func newRealEnv(t testing.TB) *realEnv {
	t.Helper()
	stack := testsupport.Stack(t)
	log := testsupport.Logger(t)
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	name := "slice-t" + hex.EncodeToString(b)
	nc, err := nomad.New(stack.Nomad.Addr, log)
	if err != nil {
		t.Fatal(err)
	}
	nc.JobID = name
	cc, err := consul.NewClient(stack.Consul.Addr, log)
	if err != nil {
		t.Fatal(err)
	}
	r := &realEnv{db: openDB(t), nomad: nc, api: nc.API, consul: cc, name: name, lockKey: "slicehub/test/" + name + "/leader"}
	r.routes = consul.NewRoutes(cc, name, r.db, log)
	r.routes.WaitTime = 5 * time.Second
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.routes.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		r.purge(t)
	})
	return r
}

// quietRoutes is a route table that never announces a change.
type quietRoutes struct{ *consul.Routes }

func (quietRoutes) Subscribe() (<-chan struct{}, func()) { return make(chan struct{}), func() {} }

// registerMock registers the mock_driver slice job under this env's name.
func (r *realEnv) registerMock(t testing.TB, vars map[string]string) {
	t.Helper()
	waitDriver(t, r.api, "mock_driver")
	all := map[string]string{"service_name": r.name, "restart_delay": "1s"}
	for k, v := range vars {
		all[k] = v
	}
	if err := r.nomad.RegisterJob(context.Background(), jobs.SliceMock, all); err != nil {
		t.Fatal(err)
	}
}

// registerRaw registers the raw_exec slice job (the real slice binary)
// under this env's name. The job file names its service "slice"; each test
// renames it, and turns Chromium off: what is under test here is the
// scheduler, not the browser.
func (r *realEnv) registerRaw(t testing.TB, binary, bootstrapURL string) {
	t.Helper()
	vars := fmt.Sprintf("slice_binary = %q\nbootstrap_url = %q\n", binary, bootstrapURL)
	job, err := r.api.Jobs().ParseHCLOpts(&nomadapi.JobsParseRequest{JobHCL: jobs.SliceRawExec, Variables: vars, Canonicalize: true})
	if err != nil {
		t.Fatal(err)
	}
	job.ID, job.Name = &r.name, &r.name
	g := job.TaskGroups[0]
	for _, s := range g.Services {
		s.Name = r.name
	}
	for _, task := range g.Tasks {
		task.Env["SLICE_CHROMIUM"] = "off"
	}
	if _, _, err := r.api.Jobs().RegisterOpts(job, nil, nil); err != nil {
		t.Fatal(err)
	}
}

func (r *realEnv) scheduler(t testing.TB, cfg scheduler.Config) *scheduler.Scheduler {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = testsupport.Logger(t)
	}
	if cfg.Metrics == nil {
		cfg.Metrics = scheduler.NewMetrics(nil)
	}
	if cfg.Interval == 0 {
		cfg.Interval = 2 * time.Second
	}
	return scheduler.New(r.db, r.nomad, r.routes, cfg)
}

// run runs fn (a scheduler's Run, or a Lead loop around it) until the
// returned stop is called or the test ends; stop waits for it to return.
func run(t testing.TB, fn func(ctx context.Context)) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(ctx)
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			<-done
		})
	}
	t.Cleanup(stop)
	return stop
}

// alive returns the alive children of this env's parent job.
func (r *realEnv) alive(t testing.TB) []scheduler.Child {
	t.Helper()
	cs, err := r.nomad.Children(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var out []scheduler.Child
	for _, c := range cs {
		if c.Alive() {
			out = append(out, c)
		}
	}
	return out
}

func jobIDs(cs []scheduler.Child) []string {
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = c.JobID
	}
	sort.Strings(out)
	return out
}

func (r *realEnv) states(t testing.TB) map[slicehub.SliceState]int {
	t.Helper()
	n, err := r.db.CountSlices(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// waitStates waits until at least the given counts hold.
func (r *realEnv) waitStates(t testing.TB, timeout time.Duration, want map[slicehub.SliceState]int) {
	t.Helper()
	testsupport.Eventually(t, timeout, fmt.Sprintf("slices %v", want), func() (bool, error) {
		got := r.states(t)
		for st, n := range want {
			if got[st] != n {
				return false, fmt.Errorf("slices %v", got)
			}
		}
		return true, nil
	})
}

// purge removes every child and the parent job, and waits until their
// allocations are terminal, so that the next test starts on a clean node.
func (r *realEnv) purge(t testing.TB) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := r.nomad.Purge(ctx); err != nil {
		t.Logf("cleanup: %v", err)
	}
}

func waitDriver(t testing.TB, api *nomadapi.Client, driver string) {
	t.Helper()
	testsupport.Eventually(t, 30*time.Second, "nomad driver "+driver+" healthy", func() (bool, error) {
		nodes, _, err := api.Nodes().List(nil)
		if err != nil {
			return false, err
		}
		for _, n := range nodes {
			if d := n.Drivers[driver]; d != nil && d.Detected && d.Healthy {
				return true, nil
			}
		}
		return false, fmt.Errorf("no node has %s healthy (is it in the client's driver.allowlist, and is Nomad built without the release tag?)", driver)
	})
}

func (r *realEnv) user(t testing.TB, email string) int64 {
	t.Helper()
	var id int64
	if err := r.db.Pool.QueryRow(context.Background(), `INSERT INTO users (email, password_hash) VALUES ($1, 'x') RETURNING id`, email).Scan(&id); err != nil {
		t.Fatal(err)
	}
	return id
}

// The pool fills to min_warm on real Nomad and Consul, a claim takes a warm
// slice at once, and the pool refills behind it.
func TestRealPoolRefillsAfterClaims(t *testing.T) {
	r := newRealEnv(t)
	r.registerMock(t, nil)
	s := r.scheduler(t, scheduler.Config{MinWarm: 2, MaxSlices: 10})
	run(t, s.Run)
	r.waitStates(t, 30*time.Second, map[slicehub.SliceState]int{slicehub.StateWarm: 2})
	ctx := context.Background()
	for i := range 2 {
		u := r.user(t, fmt.Sprintf("real%d@example.com", i))
		sl, err := s.Claim(ctx, u)
		if err != nil || sl.State != slicehub.StateAssigned {
			t.Fatalf("claim %d = %+v, %v; want a warm slice assigned at once", i, sl, err)
		}
		if p, err := s.Progress(ctx, u); err != nil || !p.Ready || p.Stage != slicehub.StageHealthy {
			t.Fatalf("progress after a warm claim = %+v, %v; want ready", p, err)
		}
	}
	r.waitStates(t, 30*time.Second, map[slicehub.SliceState]int{slicehub.StateWarm: 2, slicehub.StateAssigned: 2})
	if n := len(r.alive(t)); n != 4 {
		t.Fatalf("%d children alive, want 4 (2 assigned + 2 warm)", n)
	}
}

// Nomad's event stream, not the interval, brings the reconcile: with an
// interval of ten minutes, a child removed by hand is replaced in seconds,
// and a malformed child dispatched by hand is removed.
func TestRealEventStreamRepairsBeforeTheInterval(t *testing.T) {
	r := newRealEnv(t)
	r.registerMock(t, nil)
	m := scheduler.NewMetrics(nil)
	s := r.scheduler(t, scheduler.Config{MinWarm: 1, MaxSlices: 10, Interval: 10 * time.Minute, Metrics: m})
	stop := run(t, s.Run)
	r.waitStates(t, 30*time.Second, map[slicehub.SliceState]int{slicehub.StateWarm: 1})
	// From here on, only Nomad's events may wake the scheduler: not the
	// interval, not Consul's route changes.
	stop()
	s = scheduler.New(r.db, r.nomad, quietRoutes{r.routes}, scheduler.Config{MinWarm: 1, MaxSlices: 10,
		Interval: 10 * time.Minute, Metrics: m, Logger: testsupport.Logger(t)})
	run(t, s.Run)
	ctx := context.Background()
	sl, err := r.db.Slices(ctx, slicehub.StateWarm)
	if err != nil || len(sl) != 1 {
		t.Fatal(err)
	}
	lost := sl[0].JobID
	t0 := time.Now()
	if err := r.nomad.Stop(ctx, lost, true); err != nil {
		t.Fatal(err)
	}
	testsupport.Eventually(t, 20*time.Second, "the lost child replaced", func() (bool, error) {
		got, err := r.db.Slice(ctx, sl[0].ID)
		if err != nil {
			return false, err
		}
		return got.JobID != lost && got.JobID != "", fmt.Errorf("slice %+v", got)
	})
	t.Logf("a lost child was replaced in %v", time.Since(t0).Round(time.Millisecond))

	// A malformed hand dispatch (a well-formed one would be adopted, see
	// TestRealHandDispatches).
	resp, _, err := r.api.Jobs().Dispatch(r.name, map[string]string{slicehub.MetaSliceID: "not-a-number"}, nil, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	testsupport.Eventually(t, 20*time.Second, "the stray child removed", func() (bool, error) {
		for _, c := range r.alive(t) {
			if c.JobID == resp.DispatchedJobID {
				return false, nil
			}
		}
		return true, nil
	})
	if n := value(t, m.NomadEvents.WithLabelValues("relevant")); n == 0 {
		t.Errorf("no relevant Nomad event was counted")
	}
}

// The node is sized so that two slices fit: the pool stops at two and says
// why, whatever min_warm asks.
func TestRealCapacityLimitsThePool(t *testing.T) {
	r := newRealEnv(t)
	r.registerMock(t, nil)
	m := scheduler.NewMetrics(nil)
	s := r.scheduler(t, scheduler.Config{MinWarm: 4, MaxSlices: 10, Metrics: m, CapacityCacheTTL: time.Nanosecond})
	ctx := context.Background()
	c, err := s.Capacity(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if c.Nodes < 1 || c.MemoryMB <= c.ReservedMB || c.SliceMemoryMB != 10 {
		t.Fatalf("Capacity = %+v; want a node with room and 10 MB slices", c)
	}
	free := c.MemoryMB - c.ReservedMB
	slice := free * 2 / 5 // two fit, not three
	r.registerMock(t, map[string]string{"memory_mb": strconv.FormatInt(slice, 10)})
	run(t, s.Run)
	r.waitStates(t, 30*time.Second, map[slicehub.SliceState]int{slicehub.StateWarm: 2})
	testsupport.Eventually(t, 10*time.Second, "capacity reported exhausted", func() (bool, error) {
		return value(t, m.CapacityExhausted) == 1, nil
	})
	c, err = s.Capacity(ctx)
	if err != nil || c.Fit != 0 || c.Limit != "memory" || c.SliceMemoryMB != slice {
		t.Fatalf("Capacity = %+v, %v; want fit 0, limit memory", c, err)
	}
	if n := len(r.alive(t)); n != 2 {
		t.Fatalf("%d children on a node that holds 2", n)
	}
	if got := r.states(t)[slicehub.StateProvisioning]; got != 0 {
		t.Fatalf("%d slices left provisioning; nothing should wait in Nomad's queue", got)
	}
}

// A slice whose task keeps crashing is restarted by Nomad; the scheduler
// counts the restarts and fails it when they exceed the budget, raising the
// alert, and replaces it in the warm pool.
func TestRealRestartBudget(t *testing.T) {
	r := newRealEnv(t)
	r.registerMock(t, map[string]string{"run_for": "200ms", "exit_code": "1", "restart_delay": "1s"})
	m := scheduler.NewMetrics(nil)
	s := r.scheduler(t, scheduler.Config{MinWarm: 1, MaxSlices: 3, MaxAttempts: 3, Metrics: m})
	stop := run(t, s.Run)
	// The replacement is dispatched after the failure is recorded: wait for
	// both before stopping the scheduler, or the check below races it.
	testsupport.Eventually(t, 60*time.Second, "a crashing slice failed and was replaced", func() (bool, error) {
		return r.states(t)[slicehub.StateFailed] >= 1 && len(mustSlices(t, r.db)) >= 2, fmt.Errorf("slices %v", r.states(t))
	})
	stop()
	failed := value(t, m.SliceFailures.WithLabelValues("provisioning")) + value(t, m.SliceFailures.WithLabelValues("warm"))
	if failed < 1 {
		t.Errorf("slice_failures_total = %v, want the alert raised", failed)
	}
	ctx := context.Background()
	rows, _ := r.db.Slices(ctx, slicehub.StateFailed)
	events, _ := r.db.SliceEvents(ctx, rows[0].ID)
	last := events[len(events)-1]
	if last.To != slicehub.StateFailed || !strings.Contains(last.Reason, "restart budget exhausted") {
		t.Errorf("last event %+v; want failed for its budget", last)
	}
	if n, _ := r.db.RecentFailures(ctx, rows[0].ID, time.Time{}); n < 3 {
		t.Errorf("%d failures recorded, want at least the budget of 3", n)
	}
	// Its replacement was dispatched (and will fail in turn: this job
	// always crashes).
	if total := len(mustSlices(t, r.db)); total < 2 {
		t.Errorf("%d slices; want the failed one and its replacement", total)
	}
	for _, c := range r.alive(t) {
		if c.SliceID == rows[0].ID {
			t.Errorf("the failed slice's job %s still runs", c.JobID)
		}
	}
}

func mustSlices(t testing.TB, db *postgres.DB) []slicehub.Slice {
	t.Helper()
	rows, err := db.Slices(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return rows
}

// Two replicas, each running consul.Lead around its scheduler on the same
// lock, never dispatch more than asked, claims on either replica are
// served, and cancelling the leader hands over to the other.
func TestRealTwoReplicasNeverOverDispatch(t *testing.T) {
	r := newRealEnv(t)
	r.registerMock(t, nil)
	const minWarm = 3
	ma, mb := scheduler.NewMetrics(nil), scheduler.NewMetrics(nil)
	a := r.scheduler(t, scheduler.Config{MinWarm: minWarm, MaxSlices: 20, Metrics: ma})
	b := r.scheduler(t, scheduler.Config{MinWarm: minWarm, MaxSlices: 20, Metrics: mb})
	log := testsupport.Logger(t)

	// Watch Nomad the whole time: the most children alive at once, and
	// every child ever seen (a duplicate dispatch shows as an extra one).
	var mu sync.Mutex
	seen, maxAlive := map[string]bool{}, 0
	stopWatch := run(t, func(ctx context.Context) {
		for ctx.Err() == nil {
			if cs, err := r.nomad.Children(ctx); err == nil {
				n := 0
				mu.Lock()
				for _, c := range cs {
					seen[c.JobID] = true
					if c.Alive() {
						n++
					}
				}
				maxAlive = max(maxAlive, n)
				mu.Unlock()
			}
			sleepCtx(ctx, 50*time.Millisecond)
		}
	})
	stopA := run(t, func(ctx context.Context) { consul.Lead(ctx, r.consul, r.lockKey, log, a.Run) })
	stopB := run(t, func(ctx context.Context) { consul.Lead(ctx, r.consul, r.lockKey, log, b.Run) })
	r.waitStates(t, 30*time.Second, map[slicehub.SliceState]int{slicehub.StateWarm: minWarm})
	leaders := value(t, ma.Leader) + value(t, mb.Leader)
	if leaders != 1 {
		t.Fatalf("%v replicas lead at once, want exactly 1", leaders)
	}

	// Claims go through either replica.
	ctx := context.Background()
	for i, s := range []*scheduler.Scheduler{a, b} {
		if sl, err := s.Claim(ctx, r.user(t, fmt.Sprintf("ha%d@example.com", i))); err != nil || sl.State != slicehub.StateAssigned {
			t.Fatalf("claim through replica %d = %+v, %v", i, sl, err)
		}
	}
	r.waitStates(t, 30*time.Second, map[slicehub.SliceState]int{slicehub.StateWarm: minWarm, slicehub.StateAssigned: 2})

	// Kill the leader's context: the other takes over and serves the pool.
	stopLeader, other := stopA, mb
	if value(t, mb.Leader) == 1 {
		stopLeader, other = stopB, ma
	}
	t0 := time.Now()
	stopLeader()
	testsupport.Eventually(t, 30*time.Second, "the other replica leads", func() (bool, error) {
		return value(t, other.Leader) == 1, nil
	})
	t.Logf("leadership handed over in %v", time.Since(t0).Round(time.Millisecond))
	if sl, err := a.Claim(ctx, r.user(t, "ha-after@example.com")); err != nil || sl.State != slicehub.StateAssigned {
		t.Fatalf("claim after the handover = %+v, %v", sl, err)
	}
	r.waitStates(t, 30*time.Second, map[slicehub.SliceState]int{slicehub.StateWarm: minWarm, slicehub.StateAssigned: 3})
	stopWatch()
	// The watcher polls every 50 ms: a child dispatched since its last look
	// is counted here, or the test would blame the replicas for its miss.
	cs, err := r.nomad.Children(ctx)
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, c := range cs {
		seen[c.JobID] = true
	}
	want := minWarm + 3
	if maxAlive > want || len(seen) != want {
		t.Fatalf("at most %d children alive at once and %d dispatched in all; want %d and %d: a replica over-dispatched",
			maxAlive, len(seen), want, want)
	}
	if d := value(t, ma.Dispatches) + value(t, mb.Dispatches); d != float64(want) {
		t.Errorf("%v dispatches counted by the replicas, want %d", d, want)
	}
}

// After a restart of the scheduler, of Nomad and of Consul, the pool comes
// back to the same children and the same states, without one dispatch.
func TestRealRestartsConverge(t *testing.T) {
	r := newRealEnv(t)
	r.registerMock(t, nil)
	log := testsupport.Logger(t)
	const minWarm = 3
	m := scheduler.NewMetrics(nil)
	s := r.scheduler(t, scheduler.Config{MinWarm: minWarm, MaxSlices: 10, Metrics: m})
	stop := run(t, func(ctx context.Context) { consul.Lead(ctx, r.consul, r.lockKey, log, s.Run) })
	r.waitStates(t, 30*time.Second, map[slicehub.SliceState]int{slicehub.StateWarm: minWarm})
	ctx := context.Background()
	u := r.user(t, "conv@example.com")
	if _, err := s.Claim(ctx, u); err != nil {
		t.Fatal(err)
	}
	want := map[slicehub.SliceState]int{slicehub.StateWarm: minWarm, slicehub.StateAssigned: 1}
	r.waitStates(t, 30*time.Second, want)
	children := jobIDs(r.alive(t))
	if len(children) != minWarm+1 {
		t.Fatalf("%d children, want %d", len(children), minWarm+1)
	}
	// converged: the same children and states, every slice routed again,
	// and a reconcile pass completed after the restart.
	converged := func(what string, s *scheduler.Scheduler, m *scheduler.Metrics) {
		t.Helper()
		passes := value(t, m.ReconcileDuration)
		t0 := time.Now()
		testsupport.Eventually(t, 90*time.Second, what+": converged", func() (bool, error) {
			if value(t, m.ReconcileDuration) < passes+2 {
				return false, fmt.Errorf("waiting for two more reconciles")
			}
			if got := jobIDs(r.alive(t)); strings.Join(got, ",") != strings.Join(children, ",") {
				return false, fmt.Errorf("children %v, want %v", got, children)
			}
			rows := mustSlices(t, r.db)
			routes := r.routes.Snapshot()
			for _, sl := range rows {
				if _, ok := routes[sl.ID]; !ok {
					return false, fmt.Errorf("slice %d not routed", sl.ID)
				}
			}
			got := r.states(t)
			for st, n := range want {
				if got[st] != n {
					return false, fmt.Errorf("slices %v", got)
				}
			}
			return true, nil
		})
		t.Logf("%s: converged in %v", what, time.Since(t0).Round(time.Millisecond))
	}

	// 1. The scheduler: a new instance, as after a crash of the process.
	stop()
	dispatchesBefore := value(t, m.Dispatches)
	m2 := scheduler.NewMetrics(nil)
	s2 := r.scheduler(t, scheduler.Config{MinWarm: minWarm, MaxSlices: 10, Metrics: m2})
	var terms atomic.Int32 // how many times s2 became the leader
	run(t, func(ctx context.Context) {
		consul.Lead(ctx, r.consul, r.lockKey, log, func(ctx context.Context) {
			terms.Add(1)
			s2.Run(ctx)
		})
	})
	converged("scheduler restart", s2, m2)

	// 2. Nomad: tasks keep running; the scheduler sees errors meanwhile and
	// changes nothing, then follows the event stream again.
	stack := testsupport.Stack(t)
	connected := value(t, m2.NomadEvents.WithLabelValues("connected"))
	if err := stack.RestartNomad(ctx); err != nil {
		t.Fatal(err)
	}
	converged("nomad restart", s2, m2)
	testsupport.Eventually(t, 30*time.Second, "event stream reconnected", func() (bool, error) {
		return value(t, m2.NomadEvents.WithLabelValues("connected")) > connected, nil
	})

	// 3. Consul (in -dev mode it comes back empty): the leader lock is lost
	// and taken again, Nomad registers the services again, routes return.
	if err := stack.RestartConsul(ctx); err != nil {
		t.Fatal(err)
	}
	testsupport.Eventually(t, 30*time.Second, "the leader stepped down and leads again", func() (bool, error) {
		return terms.Load() == 2 && value(t, m2.Leader) == 1, fmt.Errorf("%d terms", terms.Load())
	})
	converged("consul restart", s2, m2)
	if d := value(t, m.Dispatches) - dispatchesBefore + value(t, m2.Dispatches); d != 0 {
		t.Fatalf("%v dispatches during the restarts, want none", d)
	}
}

// bootstrapServer plays the gateway's internal endpoint over a scheduler.
func bootstrapServer(t testing.TB, s **scheduler.Scheduler) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.Method != http.MethodPost || req.URL.Path != slicehub.BootstrapPath {
			http.NotFound(w, req)
			return
		}
		var br slicehub.BootstrapRequest
		if err := json.NewDecoder(req.Body).Decode(&br); err != nil {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		// The allocation's workload identity, as the gateway takes it.
		br.Identity = strings.TrimPrefix(req.Header.Get("Authorization"), "Bearer ")
		creds, err := (*s).Bootstrap(req.Context(), br)
		if err != nil {
			status := map[slicehub.Kind]int{slicehub.KindInvalid: 400, slicehub.KindUnauthorized: 401,
				slicehub.KindConflict: 409, slicehub.KindUnavailable: 503}[slicehub.KindOf(err)]
			if status == 0 {
				status = 500
			}
			http.Error(w, slicehub.CodeOf(err), status)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(creds)
	}))
	t.Cleanup(srv.Close)
	return srv
}

var (
	sliceBinOnce sync.Once
	sliceBin     string
	sliceBinErr  error
)

// sliceBinary builds cmd/slice once for the package.
func sliceBinary(t testing.TB) string {
	t.Helper()
	sliceBinOnce.Do(func() {
		dir, err := os.MkdirTemp("", "slicehub-scheduler-test-")
		if err != nil {
			sliceBinErr = err
			return
		}
		sliceBin = filepath.Join(dir, "slice")
		cmd := exec.Command("go", "build", "-o", sliceBin, "./cmd/slice")
		cmd.Dir = ".."
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			sliceBinErr = fmt.Errorf("go build ./cmd/slice: %v\n%s", err, out)
		}
	})
	if sliceBinErr != nil {
		t.Fatal(sliceBinErr)
	}
	return sliceBin
}

// sliceCall calls the user's slice as the gateway would: the route from
// Consul, the slice's gateway token.
func sliceCall(r *realEnv, s *scheduler.Scheduler, sliceID int64, method, path, body string) (int, string, string, error) {
	rt, ok := r.routes.Lookup(sliceID)
	if !ok {
		return 0, "", "", fmt.Errorf("slice %d not routed", sliceID)
	}
	token, err := s.GatewayToken(context.Background(), sliceID)
	if err != nil {
		return 0, "", "", err
	}
	req, _ := http.NewRequest(method, "http://"+rt.Addr+path, strings.NewReader(body))
	req.Header.Set(slicehub.HeaderGatewayToken, token)
	req.Header.Set(slicehub.HeaderUserID, "1")
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", rt.AllocID, err
	}
	defer resp.Body.Close()
	var b strings.Builder
	_, _ = fmt.Fprint(&b, jsonBody(resp))
	return resp.StatusCode, b.String(), rt.AllocID, nil
}

func jsonBody(resp *http.Response) string {
	var v any
	_ = json.NewDecoder(resp.Body).Decode(&v)
	b, _ := json.Marshal(v)
	return string(b)
}

// The real slice under raw_exec: a user's data survives a killed
// allocation (Nomad replaces it) and a lost job (the scheduler dispatches a
// new generation), and the user is routed to the slice again each time.
func TestRealKilledAllocationIsRepairedWithItsData(t *testing.T) {
	r := newRealEnv(t)
	var s *scheduler.Scheduler
	srv := bootstrapServer(t, &s)
	r.registerRaw(t, sliceBinary(t), srv.URL)
	s = r.scheduler(t, scheduler.Config{MinWarm: 1, MaxSlices: 5})
	run(t, s.Run)
	r.waitStates(t, 60*time.Second, map[slicehub.SliceState]int{slicehub.StateWarm: 1})
	ctx := context.Background()
	u := r.user(t, "data@example.com")
	sl, err := s.Claim(ctx, u)
	if err != nil || sl.State != slicehub.StateAssigned {
		t.Fatalf("claim = %+v, %v", sl, err)
	}
	status, body, allocID, err := sliceCall(r, s, sl.ID, http.MethodPost, "/api/contacts", `{"name":"Ada Lovelace","phone":"+44 20 7946 0000"}`)
	if err != nil || status != http.StatusCreated {
		t.Fatalf("create a contact in the slice: %d %s %v", status, body, err)
	}
	hasContact := func(what string) {
		t.Helper()
		testsupport.Eventually(t, 90*time.Second, what, func() (bool, error) {
			got, err := r.db.SliceForUser(ctx, u)
			if err != nil || got.ID != sl.ID || got.State != slicehub.StateAssigned {
				return false, fmt.Errorf("user's slice %+v, %v", got, err)
			}
			status, body, a, err := sliceCall(r, s, sl.ID, http.MethodGet, "/api/contacts", "")
			if err != nil {
				return false, err
			}
			if a == allocID {
				return false, fmt.Errorf("still routed to the old allocation %s", a)
			}
			if status != http.StatusOK || !strings.Contains(body, "Ada Lovelace") {
				return false, fmt.Errorf("contacts %d %s", status, body)
			}
			allocID = a
			return true, nil
		})
	}

	// 1. The allocation is killed: Nomad replaces it within the same job;
	// the new allocation fetches its credentials (once) and serves the
	// same data.
	t0 := time.Now()
	if _, err := r.api.Allocations().Stop(&nomadapi.Allocation{ID: allocID}, nil); err != nil {
		t.Fatal(err)
	}
	hasContact("routed to a new allocation with the data")
	t.Logf("killed allocation: routed again with its data in %v", time.Since(t0).Round(time.Millisecond))

	// 2. The job is lost (purged by hand, a node gone, a GC): the
	// scheduler dispatches a new generation for the same slice, user and
	// database.
	before, _ := r.db.Slice(ctx, sl.ID)
	t0 = time.Now()
	if err := r.nomad.Stop(ctx, before.JobID, true); err != nil {
		t.Fatal(err)
	}
	hasContact("routed to a new generation with the data")
	t.Logf("lost job: repaired and routed again with its data in %v", time.Since(t0).Round(time.Millisecond))
	after, _ := r.db.Slice(ctx, sl.ID)
	if after.Restarts != before.Restarts+1 || after.JobID == before.JobID || after.UserID != u {
		t.Fatalf("after the repair %+v; want the next generation for user %d", after, u)
	}
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
