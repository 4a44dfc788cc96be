package telemetry_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/slicehub/slicehub"
	"github.com/slicehub/slicehub/telemetry"
	"github.com/slicehub/slicehub/testsupport"
)

type staticRoutes map[int64]slicehub.Route

func (r staticRoutes) Snapshot() map[int64]slicehub.Route { return r }

// governedSlice is a slice's HTTP side as telemetry sees it: its state,
// and its /api/metrics with the governor's counter (a real registry, so
// the text is what the slice's promhttp writes).
type governedSlice struct {
	mu       sync.Mutex
	restarts *prometheus.CounterVec
	reg      *prometheus.Registry
}

func newGovernedSlice(t *testing.T) (*governedSlice, string) {
	g := &governedSlice{reg: prometheus.NewRegistry()}
	g.restarts = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "slicehub_slice_governor_restarts_total"}, []string{"result"})
	mem := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "slicehub_slice_cgroup_memory_bytes"}, []string{"kind"})
	mem.WithLabelValues("anon").Set(700 << 20)
	mem.WithLabelValues("shmem").Set(20 << 20)
	mem.WithLabelValues("file").Set(300 << 20)
	g.reg.MustRegister(g.restarts, mem)
	metrics := promhttp.HandlerFor(g.reg, promhttp.HandlerOpts{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get(slicehub.HeaderGatewayToken) != "token" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		switch r.URL.Path {
		case "/api/status/state":
			_, _ = w.Write([]byte(`{"state":"connected","importing":false}`))
		case "/api/metrics":
			g.mu.Lock()
			defer g.mu.Unlock()
			metrics.ServeHTTP(w, r)
		default:
			w.WriteHeader(http.StatusNotFound)
		}
	}))
	t.Cleanup(srv.Close)
	return g, strings.TrimPrefix(srv.URL, "http://")
}

// restart counts n governor restarts; reset starts the counter again, as a
// restarted slice process does.
func (g *governedSlice) restart(n int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.restarts.WithLabelValues("restarted").Add(float64(n))
	g.restarts.WithLabelValues("deferred_busy").Add(5) // not restarts: never counted
}

func (g *governedSlice) reset() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.restarts.Reset()
}

// The governor's restarts reach telemetry from the slice's own /api/metrics:
// exported per slice, and past the rate (3 within 6 h here) an alert fires,
// counting across a slice process restart (its counter starting again),
// and resolves once the restarts age out of the window.
func TestGovernorRestartRateAlerts(t *testing.T) {
	ctx := t.Context()
	db := openDB(t)
	rcv, url := newReceiver(t)
	clk := &clock{t: time.Date(2026, 12, 8, 1, 0, 0, 0, time.UTC)}
	sl, addr := newGovernedSlice(t)
	nomad := &fakeNomad{allocs: []telemetry.SliceAlloc{{SliceID: 7, AllocID: "a7", NodeID: "n1"}},
		usage: map[string]telemetry.Usage{"a7": {MemoryBytes: 800 << 20}}}
	slices := &fakeSlices{slices: []slicehub.Slice{{ID: 7, State: slicehub.StateAssigned, UserID: 70}}}
	reg := prometheus.NewRegistry()
	log := testsupport.Logger(t)
	c := telemetry.New(telemetry.Config{
		Rules:  telemetry.Rules{GovernorRestarts: 3, GovernorWindow: 6 * time.Hour},
		Logger: log, Registry: reg, Now: clk.Now,
	}, db, nomad, staticRoutes{7: {SliceID: 7, Addr: addr}}, slices, telemetry.NewAlerter(db, url, nil, log, clk.Now))
	collect := func() {
		t.Helper()
		if err := c.Collect(ctx); err != nil {
			t.Fatalf("Collect: %v", err)
		}
	}
	collect()
	if v := gauge(t, reg, "slicehub_slice_governed_memory_bytes", "7"); v != 720<<20 {
		t.Fatalf("governed memory %v; want anon + shmem, %v", v, 720<<20)
	}
	sl.restart(1)
	clk.Advance(time.Hour)
	collect()
	sl.restart(1)
	clk.Advance(time.Hour)
	collect()
	if v := gauge(t, reg, "slicehub_slice_governor_restarts", "7"); v != 2 {
		t.Fatalf("slicehub_slice_governor_restarts{7} = %v; want 2", v)
	}
	if got := rcv.got(); len(got) != 0 {
		t.Fatalf("webhook got %q after 2 restarts; want nothing", got)
	}
	// The slice process restarts (its counter starts again) and its
	// governor restarts Chromium once more: the third within the window.
	sl.reset()
	sl.restart(1)
	clk.Advance(time.Hour)
	collect()
	got := rcv.got()
	if len(got) != 1 || !strings.Contains(got[0], "[FIRING] slice_governor_restarts slice/7") || !strings.Contains(got[0], "3 times") {
		t.Fatalf("webhook got %q; want the governor alert for slice 7 with 3 restarts", got)
	}
	// Nothing more: after the window, the alert resolves.
	for range 7 {
		clk.Advance(time.Hour)
		collect()
	}
	got = rcv.got()
	if len(got) != 2 || !strings.Contains(got[1], "[RESOLVED] slice_governor_restarts slice/7") {
		t.Fatalf("webhook got %q; want the alert resolved after the window", got)
	}
}
