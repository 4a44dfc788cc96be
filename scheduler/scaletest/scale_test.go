package scaletest_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	consulapi "github.com/hashicorp/consul/api"
	nomadapi "github.com/hashicorp/nomad/api"
	dto "github.com/prometheus/client_model/go"

	"github.com/slicehub/slicehub"
	"github.com/slicehub/slicehub/internal/report"
	"github.com/slicehub/slicehub/jobs"
	"github.com/slicehub/slicehub/scheduler"
	"github.com/slicehub/slicehub/testsupport"
)

// The scale run of issue 8: 1,000 and then 5,000 slices as mock_driver
// children across the two Nomad clients, each registered in Consul. It
// measures the time to fill the pool, the reconcile time, the route
// table's update latency and everyone's memory, and stops early, saying
// why, at the first thing that breaks. `make scale` runs it
// (SLICEHUB_SCALE=1) and it writes docs/reports/scale-<date>.md.
//
// The children are dispatched straight through the Nomad adapter, as the
// reconcile benchmark does, not by the pool's refill: a refill also
// creates a PostgreSQL database per slice, whose cost is measured on a
// sample here and extrapolated in the report (5,000 real databases would
// take minutes and gigabytes on a machine shared with other runs).

const (
	dispatchParallel = 16
	fillLimit        = 20 * time.Minute // the whole fill of one size
	stallLimit       = 2 * time.Minute  // no new route for this long: something broke
	reconciles       = 15
	routeProbes      = 15
	dbSample         = 8
)

type scaleResult struct {
	n                   int
	dispatched, routed  int
	dispatchTook        time.Duration
	fillTook            time.Duration // until every child is routed; 0 if never
	fill                []report.Point
	reconcile           []time.Duration
	routeAdd, routeDrop []time.Duration
	heapMB, selfRSSMB   float64
	agentRSSMB          map[string]float64
	agentFDs            map[string]int
	perNode             map[string]int
	allocStates         map[string]int
	dbCreate            time.Duration // mean CREATE DATABASE + role of one slice
	// dbCreateDurable: the same with production settings (0: the run had
	// them already, or the sample was not taken; dbDurableErr says why).
	dbCreateDurable time.Duration
	dbDurableErr    error
	dbSizeMB        float64
	capacity        int                // slices Nomad's nodes can reserve, at this job's size
	purgeTook       time.Duration      // every child stopped and purged, allocations terminal
	fillCPU         map[string]float64 // CPU seconds each agent (and this process) spent during the fill
	broke           string
}

func TestScale(t *testing.T) {
	if os.Getenv("SLICEHUB_SCALE") != "1" {
		t.Skip("SKIPPED: the scale run dispatches thousands of Nomad allocations for ~15 minutes; run it with `make scale` (SLICEHUB_SCALE=1)")
	}
	sizes := []int{1000, 5000}
	if v := os.Getenv("SLICEHUB_SCALE_SIZES"); v != "" {
		sizes = nil
		for _, f := range strings.Split(v, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n <= 0 || n > 20000 {
				t.Fatalf("SLICEHUB_SCALE_SIZES: %q is not a size between 1 and 20000", f)
			}
			sizes = append(sizes, n)
		}
	}
	// Nomad's default binpack fills one node before the next: with the
	// memory the clients advertise, every mock slice would land on the
	// first. Spread puts them across both, which is what is under test.
	// This stack is the package's own and thrown away after it.
	nc, err := testsupport.Stack(t).Nomad.Client()
	if err != nil {
		t.Fatal(err)
	}
	cur, _, err := nc.Operator().SchedulerGetConfiguration(nil)
	if err != nil || cur.SchedulerConfig == nil {
		t.Fatalf("nomad scheduler configuration: %v", err)
	}
	conf := *cur.SchedulerConfig
	conf.SchedulerAlgorithm = nomadapi.SchedulerAlgorithmSpread
	if _, _, err := nc.Operator().SchedulerSetConfiguration(&conf, nil); err != nil {
		t.Fatal(err)
	}
	machine := report.ReadMachine() // before the run: its load average is the machine's, not ours
	var results []*scaleResult
	for _, n := range sizes {
		res := &scaleResult{n: n, fillCPU: map[string]float64{}, agentRSSMB: map[string]float64{}, agentFDs: map[string]int{}, perNode: map[string]int{}, allocStates: map[string]int{}}
		results = append(results, res)
		t.Run(strconv.Itoa(n), func(t *testing.T) { runScale(t, res) })
		if res.broke != "" {
			t.Logf("%d slices: %s; not trying larger sizes", n, res.broke)
			break
		}
	}
	writeScaleReport(t, results, machine)
}

func runScale(t *testing.T, res *scaleResult) {
	n := res.n
	e := newEnv(t, nil)
	ctx, cancel := context.WithTimeout(t.Context(), fillLimit+5*time.Minute)
	defer cancel()
	t0 := time.Now()
	if _, err := e.db.Pool.Exec(ctx, `WITH s AS (SELECT nextval('slices_id_seq') AS id FROM generate_series(1, $1))
		INSERT INTO slices (id, state, db_name) SELECT id, 'provisioning', 'wa_slice_' || id FROM s`, n); err != nil {
		t.Fatal(err)
	}
	rows, err := e.db.Slices(ctx)
	if err != nil {
		t.Fatal(err)
	}

	// PostgreSQL's share of a real refill, on a sample: one database and
	// role per slice.
	var dbTook time.Duration
	for _, sl := range rows[:min(dbSample, len(rows))] {
		d0 := time.Now()
		if err := e.db.ProvisionDatabase(ctx, sl.ID); err != nil {
			t.Fatalf("provision database of slice %d: %v", sl.ID, err)
		}
		dbTook += time.Since(d0)
	}
	res.dbCreate = dbTook / time.Duration(min(dbSample, len(rows)))
	// The same with production settings, when the run has the fast ones:
	// what a durable pool of this size would cost in CREATE DATABASE.
	if len(rows) >= 2*dbSample {
		res.dbCreateDurable, res.dbDurableErr = durableCreateSample(ctx, e, rows[dbSample:2*dbSample])
	}
	var size int64
	if err := e.db.Pool.QueryRow(ctx, `SELECT pg_database_size($1)`, slicehub.DatabaseName(rows[0].ID)).Scan(&size); err == nil {
		res.dbSizeMB = float64(size) / (1 << 20)
	}

	// What Nomad's nodes can hold at this job's reservation (10 MB, 1 MHz,
	// 10 MB disk each): the first limit to check against n.
	if nodes, err := e.nomad.Nodes(ctx); err == nil {
		if rsc, err := e.nomad.SliceResources(ctx); err == nil && rsc.MemoryMB > 0 {
			for _, nd := range nodes {
				fit := nd.MemoryMB / rsc.MemoryMB
				if rsc.CPU > 0 {
					fit = min(fit, nd.CPU/rsc.CPU)
				}
				if rsc.DiskMB > 0 {
					fit = min(fit, nd.DiskMB/rsc.DiskMB)
				}
				res.capacity += int(fit)
			}
		}
	}

	cpu0 := agentCPU()

	// Sample the fill once a second: children dispatched, slices routed.
	var dispatched atomic.Int64
	sampleCtx, stopSampling := context.WithCancel(ctx)
	var sampler sync.WaitGroup
	sampler.Add(1)
	go func() {
		defer sampler.Done()
		tk := time.NewTicker(time.Second)
		defer tk.Stop()
		for {
			res.fill = append(res.fill, report.Point{X: time.Since(t0).Seconds(), Y: float64(len(e.routes.Snapshot()))})
			select {
			case <-sampleCtx.Done():
				return
			case <-tk.C:
			}
		}
	}()
	defer func() { stopSampling(); sampler.Wait() }()

	var wg sync.WaitGroup
	var failed atomic.Int32
	var firstErr atomic.Value
	sem := make(chan struct{}, dispatchParallel)
	jobs := make([]string, len(rows))
	for i, sl := range rows {
		if failed.Load() > 20 || ctx.Err() != nil {
			break // Nomad refuses: no use sending the rest
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			job, err := e.nomad.Dispatch(ctx, sl.ID, 0)
			if err != nil {
				if failed.Add(1) == 1 {
					firstErr.Store(err.Error())
				}
				return
			}
			jobs[i] = job
			dispatched.Add(1)
		}()
	}
	wg.Wait()
	res.dispatchTook = time.Since(t0)
	res.dispatched = int(dispatched.Load())
	t.Logf("%d of %d children dispatched in %s", res.dispatched, n, res.dispatchTook.Round(time.Millisecond))
	if f := failed.Load(); f > 0 {
		res.broke = fmt.Sprintf("%d dispatches refused by Nomad, the first: %v", f, firstErr.Load())
	}
	// Only the slices with a child are the pool; the rest are dropped so
	// that the reconcile below does not dispatch them.
	var ids []int64
	var jobIDs []string
	var orphans []int64
	for i, sl := range rows {
		if jobs[i] != "" {
			ids, jobIDs = append(ids, sl.ID), append(jobIDs, jobs[i])
		} else {
			orphans = append(orphans, sl.ID)
		}
	}
	if _, err := e.db.Pool.Exec(ctx, `UPDATE slices SET state = 'warm', job_id = j.job
		FROM unnest($1::bigint[], $2::text[]) AS j(id, job) WHERE slices.id = j.id`, ids, jobIDs); err != nil {
		t.Fatal(err)
	}
	if len(orphans) > 0 {
		if _, err := e.db.Pool.Exec(ctx, `DELETE FROM slices WHERE id = ANY($1)`, orphans); err != nil {
			t.Fatal(err)
		}
	}

	// Fill: until every dispatched child is passing in Consul, or no new
	// one for stallLimit (then whatever stopped them is the finding).
	// The route table routes only the allocation a scheduler pass recorded
	// for the slice (route provenance, issue 13), and the leader runs a
	// pass on Nomad's allocation events: this loop runs one per poll
	// instead. Its timeouts are the fill's own, so that a pass never
	// replaces a child that is merely slow to place at this size.
	filler := scheduler.New(e.db, e.nomad, e.routes, scheduler.Config{MinWarm: 1, MaxSlices: 2 * n, Logger: slog.New(slog.DiscardHandler),
		ProvisionTimeout: 2 * fillLimit, UnhealthyTimeout: 2 * fillLimit})
	last, lastChange := -1, time.Now()
	for {
		if err := filler.Reconcile(ctx); err != nil && ctx.Err() == nil {
			t.Logf("fill: scheduler pass: %v", err)
		}
		got := len(e.routes.Snapshot())
		if got != last {
			last, lastChange = got, time.Now()
		}
		if got >= res.dispatched {
			res.fillTook = time.Since(t0)
			break
		}
		if time.Since(lastChange) > stallLimit || time.Since(t0) > fillLimit {
			res.broke = strings.TrimPrefix(res.broke+"; ", "; ") + fmt.Sprintf("the fill stalled at %d of %d routed (no new route for %s)", got, res.dispatched, time.Since(lastChange).Round(time.Second))
			break
		}
		select {
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		case <-time.After(500 * time.Millisecond):
		}
	}
	res.routed = len(e.routes.Snapshot())
	for name, c := range agentCPU() {
		res.fillCPU[name] = c - cpu0[name]
	}
	if res.routed < res.dispatched && res.capacity > 0 && res.capacity < res.dispatched {
		res.broke += fmt.Sprintf("; Nomad's nodes can reserve only %d slices of this size (10 MB each against the memory each client advertises): the rest wait for a placement, nothing crashed", res.capacity)
	}
	stopSampling()
	sampler.Wait()
	t.Logf("fill: %d routed after %s", res.routed, time.Since(t0).Round(time.Millisecond))

	if allocs, err := e.nomad.Allocations(ctx); err == nil {
		names := map[string]string{}
		if nodes, err := e.nomad.Nodes(ctx); err == nil {
			for _, nd := range nodes {
				names[nd.ID] = nd.Name
			}
		}
		for _, a := range allocs {
			if !strings.HasPrefix(a.JobID, e.name+"/") {
				continue
			}
			res.allocStates[a.ClientStatus]++
			// Nomad's client reports "running" in batches, after the
			// service is registered: count what holds the node.
			if a.Holds() && a.NodeID != "" {
				res.perNode[names[a.NodeID]]++
			}
		}
	}

	// Reconcile a converged pool of this size (it must dispatch nothing).
	m := scheduler.NewMetrics(nil)
	s := scheduler.New(e.db, e.nomad, e.routes, scheduler.Config{MinWarm: 1, MaxSlices: 2 * n, Logger: slog.New(slog.DiscardHandler), Metrics: m})
	for i := 0; i < reconciles && ctx.Err() == nil; i++ {
		r0 := time.Now()
		if err := s.Reconcile(ctx); err != nil {
			t.Errorf("reconcile: %v", err)
			break
		}
		res.reconcile = append(res.reconcile, time.Since(r0))
	}
	var d dto.Metric
	_ = m.Dispatches.Write(&d)
	if got := d.Counter.GetValue(); got != 0 && res.broke == "" {
		t.Errorf("the reconcile of a converged pool dispatched %v children", got)
	}

	// Route table latency: a registration in Consul's catalog until the
	// table has it, and its removal until the table drops it, with the
	// whole pool registered (each change makes Consul answer the blocking
	// query with every instance).
	res.routeAdd, res.routeDrop = probeRoutes(t, e, n)

	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	res.heapMB = float64(ms.HeapAlloc) / (1 << 20)
	res.selfRSSMB = rssMB(os.Getpid())
	for name, pid := range testsupport.Stack(t).PIDs() {
		res.agentRSSMB[name] = rssMB(pid)
		if strings.HasPrefix(name, "nomad") || strings.HasPrefix(name, "consul") {
			if ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid)); err == nil {
				res.agentFDs[name] = len(ents)
			}
		}
	}
	// The teardown of a pool this size, measured: the package's stack
	// must be clean before the next size (and before testsupport stops it).
	p0 := time.Now()
	e.purge(t)
	res.purgeTook = time.Since(p0)
	t.Logf("%+v", *res)
}

// probeRoutes registers and removes a fake instance of the pool's service
// routeProbes times, timing each change until the route table shows it.
func probeRoutes(t *testing.T, e *env, n int) (add, drop []time.Duration) {
	cc, err := consulapi.NewClient(&consulapi.Config{Address: testsupport.Stack(t).Consul.Addr})
	if err != nil {
		t.Fatal(err)
	}
	ch, unsubscribe := e.routes.Subscribe()
	defer unsubscribe()
	wait := func(id int64, present bool) (time.Duration, error) {
		t0 := time.Now()
		deadline := time.NewTimer(30 * time.Second)
		defer deadline.Stop()
		for {
			if _, ok := e.routes.Lookup(id); ok == present {
				return time.Since(t0), nil
			}
			select {
			case <-ch:
			case <-deadline.C:
				return 0, fmt.Errorf("route %d present=%v not seen within 30 s", id, present)
			}
		}
	}
	for i := 0; i < routeProbes; i++ {
		id := int64(900_000_000 + n + i)
		// The probe is what a new slice's placement looks like to the route
		// table: a recorded allocation (a live row in PostgreSQL) and the
		// service ID Nomad makes for it. Anything else is refused by route
		// provenance and would never show.
		alloc := fmt.Sprintf("%08d-0000-4000-8000-000000000000", id%1e8)
		svcID := "_nomad-task-" + alloc + "-slice-probe-http"
		if _, err := e.db.Pool.Exec(t.Context(), `INSERT INTO slices (id, state, db_name, job_id, alloc_id, alloc_addr)
			VALUES ($1, 'warm', $3, 'scale-probe', $2, '127.0.0.1:9')`, id, alloc, fmt.Sprintf("wa_slice_%d", id)); err != nil {
			t.Fatal(err)
		}
		// Drain a stale notification first, so the wait starts clean.
		select {
		case <-ch:
		default:
		}
		r0 := time.Now()
		if err := cc.Agent().ServiceRegister(&consulapi.AgentServiceRegistration{ID: svcID, Name: e.name, Address: "127.0.0.1", Port: 9,
			Meta: map[string]string{slicehub.MetaSliceID: strconv.FormatInt(id, 10)}}); err != nil {
			t.Fatal(err)
		}
		if _, err := wait(id, true); err != nil {
			t.Error(err)
			return
		}
		add = append(add, time.Since(r0))
		r0 = time.Now()
		if err := cc.Agent().ServiceDeregister(svcID); err != nil {
			t.Fatal(err)
		}
		if _, err := wait(id, false); err != nil {
			t.Error(err)
			return
		}
		drop = append(drop, time.Since(r0))
		if _, err := e.db.Pool.Exec(t.Context(), `DELETE FROM slices WHERE id = $1`, id); err != nil {
			t.Fatal(err)
		}
	}
	return add, drop
}

// agentCPU is the CPU seconds (user + system) each agent and this process
// have used so far, from /proc/<pid>/stat (clock ticks of 1/100 s).
func agentCPU() map[string]float64 {
	pids := testsupport.Stack().PIDs()
	pids["scheduler+routes (test process)"] = os.Getpid()
	out := map[string]float64{}
	for name, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
		if len(f) < 13 {
			continue
		}
		u, _ := strconv.ParseFloat(f[11], 64)
		sy, _ := strconv.ParseFloat(f[12], 64)
		out[name] = (u + sy) / 100
	}
	return out
}

// fillRate is slices routed per second between the first sample at or
// above lo and the first at or above hi.
func fillRate(pts []report.Point, lo, hi float64) float64 {
	var a, b *report.Point
	for i := range pts {
		if a == nil && pts[i].Y >= lo {
			a = &pts[i]
		}
		if b == nil && pts[i].Y >= hi {
			b = &pts[i]
		}
	}
	if a == nil || b == nil || b.X <= a.X {
		return 0
	}
	return (b.Y - a.Y) / (b.X - a.X)
}

// hostMemGB is MemTotal from /proc/meminfo.
func hostMemGB() float64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "MemTotal:" {
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb / (1 << 20)
		}
	}
	return 0
}

// rssMB reads VmRSS from /proc.
func rssMB(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb / 1024
		}
	}
	return 0
}

func pct(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[min(len(s)-1, int(float64(len(s))*p))]
}

func ms(d time.Duration) string {
	return strconv.FormatFloat(float64(d.Microseconds())/1000, 'f', 1, 64) + " ms"
}

func writeScaleReport(t *testing.T, results []*scaleResult, machine report.Machine) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	r := report.New("scale", time.Now())
	r.Printf("# Scale report %s\n\n", time.Now().UTC().Format("2006-01-02 15:04 UTC"))
	r.Printf("`make scale`: mock_driver slices (jobs/slice-mock.nomad.hcl: 10 MB, 1 MHz, 10 MB disk reserved each; a service in Consul without a check) across two Nomad clients on one machine (%d cores; Nomad's scheduler set to spread, so that both take their share), each client with its own Consul client agent, one Nomad server and one Consul server. Children dispatched %d at a time through the scheduler's Nomad adapter; every figure from this run.\n\n", runtime.NumCPU(), dispatchParallel)
	pg, pgErr := report.ReadPostgres(t.Context(), testsupport.Stack(t).Postgres.URL)
	r.Environment(machine, pg, pgErr)
	if pgErr == nil && !report.Durable(pg) {
		r.Printf("Scale keeps PostgreSQL's fast settings unless SLICEHUB_SCALE_DURABLE=1: the slices here have no databases (a sample of %d per size is created to time CREATE DATABASE, below, under the settings above). Rerun with SLICEHUB_SCALE_DURABLE=1 to time it with production settings.\n\n", dbSample)
	}
	if mem := os.Getenv("SLICEHUB_SCALE_NODE_MEMORY_MB"); mem != "" {
		r.Printf("Each Nomad client advertised %s MB of memory (SLICEHUB_SCALE_NODE_MEMORY_MB, client `memory_total_mb`) instead of the host's %.1f GB: a mock slice reserves Nomad's minimum of 10 MB, so with the host's figure two clients reserve at most about %d of them, fewer than 5,000. That is the first limit on this machine, and it is arithmetic, not a failure (real slices reserve %d MB, the docker job's memory_mb: %d per client here). The override lets the run find the next one.\n\n",
			mem, hostMemGB(), int(hostMemGB()*1024*2/10), sliceMemoryMB(t), int(hostMemGB()*1024/float64(sliceMemoryMB(t))))
	}
	r.Printf("| slices | dispatched | routed | dispatch took | fill (all passing in Consul) | reconcile p50 / p99 | route add p50 / p99 | route drop p50 / p99 | test process heap / RSS | allocations per node | broke |\n|---|---|---|---|---|---|---|---|---|---|---|\n")
	var recBars, routeBars, rssBars []report.Bar
	var fills []report.Series
	for _, res := range results {
		fill := "never"
		if res.fillTook > 0 {
			fill = res.fillTook.Round(100 * time.Millisecond).String()
		}
		var per []string
		for node, c := range res.perNode {
			per = append(per, fmt.Sprintf("%s: %d", node, c))
		}
		sort.Strings(per)
		broke := res.broke
		if broke == "" {
			broke = "nothing"
		}
		r.Printf("| %d | %d | %d | %s | %s | %s / %s | %s / %s | %s / %s | %.0f MB / %.0f MB | %s | %s |\n", res.n, res.dispatched, res.routed,
			res.dispatchTook.Round(100*time.Millisecond), fill, ms(pct(res.reconcile, 0.5)), ms(pct(res.reconcile, 0.99)),
			ms(pct(res.routeAdd, 0.5)), ms(pct(res.routeAdd, 0.99)), ms(pct(res.routeDrop, 0.5)), ms(pct(res.routeDrop, 0.99)),
			res.heapMB, res.selfRSSMB, strings.Join(per, ", "), broke)
		label := strconv.Itoa(res.n) + " slices"
		recBars = append(recBars, report.Bar{Label: label + " p50", Value: float64(pct(res.reconcile, 0.5).Milliseconds()), Mark: 1000},
			report.Bar{Label: label + " p99", Value: float64(pct(res.reconcile, 0.99).Milliseconds()), Mark: 1000})
		routeBars = append(routeBars, report.Bar{Label: label + " add p50", Value: float64(pct(res.routeAdd, 0.5).Milliseconds())},
			report.Bar{Label: label + " drop p50", Value: float64(pct(res.routeDrop, 0.5).Milliseconds())})
		names := make([]string, 0, len(res.agentRSSMB))
		for name := range res.agentRSSMB {
			names = append(names, name)
		}
		sort.Strings(names)
		for _, name := range names {
			rssBars = append(rssBars, report.Bar{Label: fmt.Sprintf("%s @%d", name, res.n), Value: res.agentRSSMB[name]})
		}
		rssBars = append(rssBars, report.Bar{Label: fmt.Sprintf("scheduler+routes @%d", res.n), Value: res.selfRSSMB, Note: fmt.Sprintf("heap %.0f MB", res.heapMB)})
		fills = append(fills, report.Series{Name: label, Points: res.fill})
	}
	r.Printf("\nReconcile: a full pass over PostgreSQL, Nomad and Consul with the pool converged (target under 1 s). Route add/drop: a registration (or removal) at the Consul agent until `consul.Routes` shows it, with the whole pool registered. The test process holds the scheduler and the route table: its heap and RSS are the scheduler's memory at this size, give or take the test's own.\n")
	r.Chart("fill", "Slices passing in Consul against time since the first dispatch", report.Lines("Pool fill", "s", "slices routed", fills))
	r.Chart("reconcile", "Reconcile time per pool size (mark: 1 s target)", report.Bars("Reconcile time (mark: 1 s)", "ms", recBars))
	r.Chart("routes", "Route table update latency", report.Bars("Consul change to route table", "ms", routeBars))
	r.Chart("rss", "Resident memory of each agent and of the scheduler", report.Bars("Resident memory", "MB", rssBars))

	r.Printf("\n## Agents and limits\n\n| slices | agent | RSS | open files |\n|---|---|---|---|\n")
	for _, res := range results {
		names := make([]string, 0, len(res.agentRSSMB))
		for name := range res.agentRSSMB {
			names = append(names, name)
		}
		sort.Strings(names)
		for _, name := range names {
			fds := "-"
			if v, ok := res.agentFDs[name]; ok {
				fds = strconv.Itoa(v)
			}
			r.Printf("| %d | %s | %.0f MB | %s |\n", res.n, name, res.agentRSSMB[name], fds)
		}
	}
	for _, res := range results {
		var states []string
		for st, c := range res.allocStates {
			states = append(states, fmt.Sprintf("%s %d", st, c))
		}
		sort.Strings(states)
		r.Printf("\n- %d slices: stopping and purging them all took %s; allocations %s; Nomad's nodes can reserve %d slices of this size; PostgreSQL: one slice database and role took %s on average (sample of %d), an empty slice database is %.1f MB on disk, so a real pool of this size costs about %s of CREATE DATABASE one at a time and %.1f GB of disk.\n",
			res.n, res.purgeTook.Round(time.Second), strings.Join(states, ", "), res.capacity, res.dbCreate.Round(time.Millisecond), dbSample, res.dbSizeMB,
			(res.dbCreate * time.Duration(res.n)).Round(time.Second), res.dbSizeMB*float64(res.n)/1024)
	}
	r.Printf("\n## What breaks first\n\n")
	for _, res := range results {
		n := float64(res.n)
		r.Printf("- %d slices: fill rate %.1f slices/s between 10%% and 30%% of the pool, %.1f/s between 70%% and 90%%. CPU seconds spent during the fill (%s, %d CPUs):",
			res.n, fillRate(res.fill, 0.1*n, 0.3*n), fillRate(res.fill, 0.7*n, 0.9*n), res.fillTook.Round(time.Second), machine.CPUs)
		names := make([]string, 0, len(res.fillCPU))
		for name := range res.fillCPU {
			names = append(names, name)
		}
		sort.Strings(names)
		for _, name := range names {
			r.Printf(" %s %.0f s;", name, res.fillCPU[name])
		}
		r.Printf("\n")
	}
	r.Printf("\n%s", scaleFindings(results))
	last := results[len(results)-1]
	r.Printf("\nThe PostgreSQL side of a real refill (not exercised above): a database per slice at about %.1f MB each is %.1f GB for %d slices, and CREATE DATABASE took %s each on average in this run's sample, %s for %d one at a time, under the PostgreSQL settings stated above.",
		last.dbSizeMB, last.dbSizeMB*float64(last.n)/1024, last.n, last.dbCreate.Round(time.Millisecond), (last.dbCreate * time.Duration(last.n)).Round(time.Second), last.n)
	switch {
	case last.dbDurableErr != nil:
		r.Printf(" The sample with production settings failed: %v.", last.dbDurableErr)
	case last.dbCreateDurable > 0:
		total := last.dbCreateDurable * time.Duration(last.n)
		r.Printf(" With production settings (fsync, synchronous_commit and full_page_writes switched on with ALTER SYSTEM for a second sample of %d) it took %s each: %s for %d. ",
			dbSample, last.dbCreateDurable.Round(time.Millisecond), total.Round(time.Second), last.n)
		// The threshold that decides the sentence is printed with it.
		if total > fillLimit {
			r.Printf("That is longer than this run's fill limit (%s), which is why scale keeps the fast settings by default.", fillLimit)
		} else {
			r.Printf("That fits within this run's fill limit (%s): the fast settings are not needed for time.", fillLimit)
		}
	}
	r.Printf("\n")
	path, err := r.Write(report.Dir(root))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("report: %s\n%s", path, r.Markdown())
}

// reconcileTarget is the reconcile pass's target at p99.
const reconcileTarget = time.Second

// scaleFindings states what this run's figures say, each sentence computed
// from them (a sentence chosen by a threshold prints the threshold).
func scaleFindings(results []*scaleResult) string {
	var b strings.Builder
	var broke []string
	for _, res := range results {
		if res.broke != "" {
			broke = append(broke, fmt.Sprintf("%d slices: %s", res.n, res.broke))
		}
	}
	if len(broke) == 0 {
		fmt.Fprintf(&b, "- No size broke (every dispatch accepted, every slice routed, no stall of %s).\n", stallLimit)
	} else {
		fmt.Fprintf(&b, "- What broke: %s.\n", strings.Join(broke, "; "))
	}
	var lim syscall.Rlimit
	_ = syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim)
	maxFDs, maxAgent := 0, ""
	for _, res := range results {
		for name, n := range res.agentFDs {
			if n > maxFDs {
				maxFDs, maxAgent = n, fmt.Sprintf("%s at %d slices", name, res.n)
			}
		}
	}
	if maxFDs > 0 {
		fmt.Fprintf(&b, "- Open files: at most %d in one agent (%s), against this process's soft limit of %d (the agents inherit it).\n", maxFDs, maxAgent, lim.Cur)
	}
	var missed, met []string
	for _, res := range results {
		p99 := pct(res.reconcile, 0.99)
		s := fmt.Sprintf("%d (p99 %s, p50 %s)", res.n, ms(p99), ms(pct(res.reconcile, 0.5)))
		if p99 > reconcileTarget {
			missed = append(missed, s)
		} else {
			met = append(met, s)
		}
	}
	fmt.Fprintf(&b, "- Reconcile against its target of %s at p99: over it at %s; within it at %s.\n", reconcileTarget, orNone(missed), orNone(met))
	for _, res := range results {
		n := float64(res.n)
		early, late := fillRate(res.fill, 0.1*n, 0.3*n), fillRate(res.fill, 0.7*n, 0.9*n)
		if early <= 0 {
			continue
		}
		fmt.Fprintf(&b, "- Fill at %d slices: %.1f slices/s between 10%% and 30%% of the pool, %.1f/s between 70%% and 90%% (%.0f%% of the early rate).", res.n, early, late, 100*late/early)
		if late < early*0.8 {
			// The reading, from Nomad's source, for a fill that slows by
			// more than a fifth; the CPU seconds above are its evidence.
			b.WriteString(" It slowed by more than a fifth (the threshold for this note): each change makes a Nomad client re-list and compare all the services of its Consul agent (Nomad 1.6, command/agent/consul/service_client.go, sync), and the route table re-reads the whole service list at each change, so the cost per registration grows with the slices per agent; compare the agents' CPU seconds above.")
		}
		b.WriteString("\n")
		if len(res.routeAdd) > 0 {
			fmt.Fprintf(&b, "- Route table at %d slices: a Consul change reached it in %s at p50, %s at p99.\n", res.n, ms(pct(res.routeAdd, 0.5)), ms(pct(res.routeAdd, 0.99)))
		}
	}
	return b.String()
}

func orNone(s []string) string {
	if len(s) == 0 {
		return "no size"
	}
	return strings.Join(s, ", ")

}

// The findings are computed: a run that broke says so, and the reconcile
// sentence prints its target and puts each size on the right side of it.
func TestScaleFindingsComeFromTheRun(t *testing.T) {
	fill := []report.Point{{X: 0, Y: 0}, {X: 10, Y: 100}, {X: 20, Y: 300}, {X: 60, Y: 700}, {X: 160, Y: 900}, {X: 200, Y: 1000}}
	ok := &scaleResult{n: 1000, reconcile: []time.Duration{300 * time.Millisecond}, fill: fill, agentFDs: map[string]int{"nomad": 25}}
	slow := &scaleResult{n: 5000, reconcile: []time.Duration{2 * time.Second}, broke: "the fill stalled"}
	got := scaleFindings([]*scaleResult{ok, slow})
	for _, want := range []string{
		"What broke: 5000 slices: the fill stalled",
		"target of 1s at p99: over it at 5000 (p99 2000.0 ms",
		"within it at 1000 (p99 300.0 ms",
		"more than a fifth (the threshold for this note)",
		"at most 25 in one agent (nomad at 1000 slices)",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("findings:\n%s\nwant them to contain %q", got, want)
		}
	}
	if got := scaleFindings([]*scaleResult{ok}); !strings.Contains(got, "No size broke") {
		t.Errorf("findings of a run where nothing broke:\n%s", got)
	}
}

// durableCreateSample times CREATE DATABASE + role for rows with
// PostgreSQL's production settings (fsync, synchronous_commit and
// full_page_writes on), switched on with ALTER SYSTEM for the sample and
// off again afterwards (devenv keeps NoFsync's settings in
// postgresql.auto.conf, which ALTER SYSTEM rewrites). It returns 0 when
// they were on already.
func durableCreateSample(ctx context.Context, e *env, rows []slicehub.Slice) (time.Duration, error) {
	var fsync string
	if err := e.db.Pool.QueryRow(ctx, `SHOW fsync`).Scan(&fsync); err != nil {
		return 0, err
	}
	if fsync == "on" {
		return 0, nil
	}
	set := func(on bool) error {
		stmt := []string{`ALTER SYSTEM SET fsync = on`, `ALTER SYSTEM SET full_page_writes = on`, `ALTER SYSTEM SET synchronous_commit = on`}
		if !on {
			stmt = []string{`ALTER SYSTEM SET fsync = off`, `ALTER SYSTEM SET full_page_writes = off`, `ALTER SYSTEM SET synchronous_commit = off`}
		}
		for _, q := range append(stmt, `SELECT pg_reload_conf()`) {
			if _, err := e.db.Pool.Exec(ctx, q); err != nil {
				return fmt.Errorf("%s: %w", q, err)
			}
		}
		// The reload reaches each backend asynchronously: poll until a
		// session sees it.
		want := map[bool]string{true: "on", false: "off"}[on]
		deadline := time.Now().Add(10 * time.Second)
		for {
			var got string
			if err := e.db.Pool.QueryRow(ctx, `SHOW fsync`).Scan(&got); err != nil {
				return err
			}
			if got == want {
				return nil
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("fsync still %s 10 s after the reload", got)
			}
			time.Sleep(50 * time.Millisecond) // polling interval: a reload has no notification
		}
	}
	if err := set(true); err != nil {
		return 0, err
	}
	var took time.Duration
	for _, sl := range rows {
		d0 := time.Now()
		if err := e.db.ProvisionDatabase(ctx, sl.ID); err != nil {
			_ = set(false)
			return 0, fmt.Errorf("provision database of slice %d: %w", sl.ID, err)
		}
		took += time.Since(d0)
	}
	return took / time.Duration(len(rows)), set(false)
}

// sliceMemoryMB is the docker slice job's memory reservation, read from the
// job file the platform registers (its memory_mb variable's default), so
// that the report never states a figure the job no longer has.
func sliceMemoryMB(t *testing.T) int {
	m := regexp.MustCompile(`(?s)variable "memory_mb" \{.*?default\s*=\s*(\d+)`).FindStringSubmatch(jobs.SliceDocker)
	if m == nil {
		t.Fatal("jobs/slice.nomad.hcl: no memory_mb default")
	}
	n, _ := strconv.Atoi(m[1])
	return n
}
