package scheduler_test

import (
	"fmt"
	"log/slog"
	"runtime"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/slicehub/slicehub"
	"github.com/slicehub/slicehub/scheduler"
	"github.com/slicehub/slicehub/testsupport"
)

// The benchmarks use b.Loop: their setup (a pool, a thousand children) runs
// once per benchmark, not once per b.N, and each iteration is bounded, so
// `make bench` (-benchtime 3s) stays within minutes.

var quiet = slog.New(slog.DiscardHandler)

func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[min(len(s)-1, int(float64(len(s))*p))]
}

// addWarm inserts n warm slices with made-up jobs: what a claim sees.
func addWarm(b *testing.B, e *env, n int) {
	b.Helper()
	if _, err := e.db.Pool.Exec(b.Context(), `WITH s AS (SELECT nextval('slices_id_seq') AS id FROM generate_series(1, $1))
		INSERT INTO slices (id, state, db_name, job_id) SELECT id, 'warm', 'wa_slice_' || id, 'slice/dispatch-bench-' || id FROM s`, n); err != nil {
		b.Fatal(err)
	}
}

func addUsers(b *testing.B, e *env, n int, tag string) []int64 {
	b.Helper()
	rows, err := e.db.Pool.Query(b.Context(), `INSERT INTO users (email, password_hash)
		SELECT 'bench-' || $2 || '-' || g || '@example.com', 'x' FROM generate_series(1, $1) g RETURNING id`, n, tag)
	if err != nil {
		b.Fatal(err)
	}
	defer rows.Close()
	var ids []int64
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			b.Fatal(err)
		}
		ids = append(ids, id)
	}
	return ids
}

// BenchmarkClaimFromWarmPool: signup to slice bound, from a warm pool, on
// real PostgreSQL (the claim never waits on Nomad). Target: p50 < 50 ms.
func BenchmarkClaimFromWarmPool(b *testing.B) {
	e := newEnv(b, scheduler.Config{MinWarm: 0, MaxSlices: 1 << 30, Logger: quiet})
	const batch = 5000
	var users []int64
	var lat []time.Duration
	round := 0
	for b.Loop() {
		if len(users) == 0 {
			b.StopTimer()
			round++
			addWarm(b, e, batch)
			users = addUsers(b, e, batch, fmt.Sprint(round))
			b.StartTimer()
		}
		u := users[0]
		users = users[1:]
		t0 := time.Now()
		sl, err := e.sched.Claim(b.Context(), u)
		lat = append(lat, time.Since(t0))
		if err != nil || sl.State != slicehub.StateAssigned {
			b.Fatalf("claim: %+v, %v", sl, err)
		}
	}
	b.ReportMetric(float64(percentile(lat, 0.50).Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(percentile(lat, 0.99).Microseconds())/1000, "p99-ms")
}

// BenchmarkDispatchThroughput: slices per second the leader dispatches
// (database and role created, child dispatched, recorded) on real Nomad
// with mock_driver children, and how many per second turn healthy in
// Consul. Each iteration is one reconcile that dispatches 25 slices.
func BenchmarkDispatchThroughput(b *testing.B) {
	const k = 25
	r := newRealEnv(b)
	r.registerMock(b, nil)
	ctx := b.Context()
	var dispatchTime, healthyTime time.Duration
	n := 0
	for b.Loop() {
		n++
		s := scheduler.New(r.db, r.nomad, r.routes, scheduler.Config{MinWarm: k * n, MaxSlices: k * n, Logger: quiet})
		t0 := time.Now()
		if err := s.Reconcile(ctx); err != nil {
			b.Fatal(err)
		}
		dispatchTime += time.Since(t0)
		// The route table routes only the allocation a pass recorded for the
		// slice (route provenance, issue 13), and a pass records it once Nomad
		// has placed it: the leader runs one on Nomad's allocation events,
		// so this loop runs one per poll, as the leader would.
		testsupport.Eventually(b, 2*time.Minute, "children healthy in Consul", func() (bool, error) {
			if err := s.Reconcile(ctx); err != nil {
				return false, err
			}
			return len(r.routes.Snapshot()) >= k*n, nil
		})
		healthyTime += time.Since(t0)
	}
	b.ReportMetric(float64(k*n)/dispatchTime.Seconds(), "dispatches/s")
	b.ReportMetric(float64(k*n)/healthyTime.Seconds(), "healthy/s")
}

// BenchmarkReconcile1000: one full reconcile of a converged pool of 1,000
// slices, each a mock_driver child registered in Consul, and the heap of
// the test process (the scheduler, its route table, the clients) after it.
// Target: a full reconcile under 1 s. The setup dispatches the thousand
// children straight through the adapter (bounded: 5 minutes).
func BenchmarkReconcile1000(b *testing.B) {
	const n = 1000
	r := newRealEnv(b)
	r.registerMock(b, nil)
	ctx := b.Context()
	t0 := time.Now()
	if _, err := r.db.Pool.Exec(ctx, `WITH s AS (SELECT nextval('slices_id_seq') AS id FROM generate_series(1, $1))
		INSERT INTO slices (id, state, db_name) SELECT id, 'provisioning', 'wa_slice_' || id FROM s`, n); err != nil {
		b.Fatal(err)
	}
	rows, err := r.db.Slices(ctx)
	if err != nil {
		b.Fatal(err)
	}
	var wg sync.WaitGroup
	var failed atomic.Int32
	sem := make(chan struct{}, 16)
	jobs := make([]string, len(rows))
	for i, sl := range rows {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			job, err := r.nomad.Dispatch(ctx, sl.ID, 0)
			if err != nil {
				failed.Add(1)
				return
			}
			jobs[i] = job
		}()
	}
	wg.Wait()
	if failed.Load() > 0 {
		b.Fatalf("%d dispatches failed", failed.Load())
	}
	ids := make([]int64, len(rows))
	for i, sl := range rows {
		ids[i] = sl.ID
	}
	if _, err := r.db.Pool.Exec(ctx, `UPDATE slices SET state = 'warm', job_id = j.job
		FROM unnest($1::bigint[], $2::text[]) AS j(id, job) WHERE slices.id = j.id`, ids, jobs); err != nil {
		b.Fatal(err)
	}
	dispatched := time.Since(t0)
	// A pass records each slice's allocation once Nomad has placed it, and
	// the route table routes nothing else (route provenance): a setup
	// scheduler, not the measured one, runs passes until all are routed.
	setup := scheduler.New(r.db, r.nomad, r.routes, scheduler.Config{MinWarm: 1, MaxSlices: 2 * n, Logger: quiet})
	testsupport.Eventually(b, 5*time.Minute, "1000 children healthy in Consul", func() (bool, error) {
		if err := setup.Reconcile(ctx); err != nil {
			return false, err
		}
		got := len(r.routes.Snapshot())
		return got >= n, fmt.Errorf("%d routed", got)
	})
	b.Logf("setup: %d children dispatched in %v, all healthy in Consul after %v", n, dispatched.Round(time.Millisecond), time.Since(t0).Round(time.Millisecond))

	m := scheduler.NewMetrics(nil)
	s := scheduler.New(r.db, r.nomad, r.routes, scheduler.Config{MinWarm: 1, MaxSlices: 2 * n, Logger: quiet, Metrics: m})
	var lat []time.Duration
	for b.Loop() {
		t := time.Now()
		if err := s.Reconcile(ctx); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t))
	}
	var d dto.Metric
	_ = m.Dispatches.Write(&d)
	if got := d.Counter.GetValue(); got != 0 {
		b.Fatalf("the reconcile of a converged pool dispatched %v children", got)
	}
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	b.ReportMetric(float64(percentile(lat, 0.5).Microseconds())/1000, "p50-ms/reconcile")
	b.ReportMetric(float64(percentile(lat, 0.99).Microseconds())/1000, "p99-ms/reconcile")
	b.ReportMetric(float64(ms.HeapAlloc)/(1<<20), "heap-MB")
	b.StopTimer()
	r.purge(b)
}

// BenchmarkDispatchToHealthyRawExec: the reference slice binary under
// raw_exec, from a user's on-demand claim on an empty pool to the slice
// assigned and healthy (database and role created, child dispatched, the
// slice bootstrapped, its migrations run, its Consul check passing), and
// the scheduler's own dispatch-to-healthy histogram.
func BenchmarkDispatchToHealthyRawExec(b *testing.B) {
	r := newRealEnv(b)
	var s *scheduler.Scheduler
	srv := bootstrapServer(b, &s)
	r.registerRaw(b, sliceBinary(b), srv.URL)
	m := scheduler.NewMetrics(nil)
	s = r.scheduler(b, scheduler.Config{MinWarm: 0, MaxSlices: 100, Logger: quiet, Metrics: m})
	run(b, s.Run)
	ctx := b.Context()
	var lat []time.Duration
	i := 0
	for b.Loop() {
		i++
		u := r.user(b, fmt.Sprintf("raw%d@example.com", i))
		t0 := time.Now()
		if _, err := s.Claim(ctx, u); err != nil {
			b.Fatal(err)
		}
		testsupport.Eventually(b, 2*time.Minute, "the on-demand slice ready", func() (bool, error) {
			p, err := s.Progress(ctx, u)
			return err == nil && p.Ready, err
		})
		lat = append(lat, time.Since(t0))
	}
	var d dto.Metric
	_ = m.DispatchToHealthy.Write(&d)
	if h := d.Histogram; h != nil && h.GetSampleCount() > 0 {
		b.ReportMetric(h.GetSampleSum()/float64(h.GetSampleCount()), "dispatch-to-healthy-s")
	}
	b.ReportMetric(percentile(lat, 0.5).Seconds(), "claim-to-ready-p50-s")
	b.StopTimer()
	r.purge(b)
}
