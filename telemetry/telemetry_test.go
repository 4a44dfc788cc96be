package telemetry_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/slicehub/slicehub"
	"github.com/slicehub/slicehub/postgres"
	"github.com/slicehub/slicehub/telemetry"
	"github.com/slicehub/slicehub/testsupport"
)

func TestMain(m *testing.M) { testsupport.Main(m, testsupport.Options{}) }

func openDB(t *testing.T) *postgres.DB {
	t.Helper()
	db, err := postgres.Open(t.Context(), testsupport.NewDatabase(t), testsupport.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	if err := db.Migrate(t.Context()); err != nil {
		t.Fatal(err)
	}
	return db
}

// clock is a settable time source.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time          { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Advance(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

// receiver is a local Slack-compatible webhook that records each text.
type receiver struct {
	mu    sync.Mutex
	texts []string
}

func newReceiver(t *testing.T) (*receiver, string) {
	r := &receiver{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		var body struct{ Text string }
		if err := json.NewDecoder(req.Body).Decode(&body); err != nil || req.Header.Get("Content-Type") != "application/json" {
			http.Error(w, "bad body", http.StatusBadRequest)
			return
		}
		r.mu.Lock()
		r.texts = append(r.texts, body.Text)
		r.mu.Unlock()
	}))
	t.Cleanup(srv.Close)
	return r, srv.URL
}

func (r *receiver) got() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.texts...)
}

func TestAlertFiresOnceAndResolves(t *testing.T) {
	ctx := t.Context()
	db := openDB(t)
	rcv, url := newReceiver(t)
	clk := &clock{t: time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)}
	a := telemetry.NewAlerter(db, url, nil, testsupport.Logger(t), clk.Now)

	consulDown := []telemetry.Condition{{Rule: telemetry.RuleUnreachable, Subject: "consul", Value: 1, Message: "consul is unreachable"}}
	rules := []string{telemetry.RuleUnreachable}
	a.Evaluate(ctx, rules, consulDown)
	clk.Advance(time.Minute)
	a.Evaluate(ctx, rules, consulDown) // still down: no second notice
	if got := rcv.got(); len(got) != 1 || !strings.Contains(got[0], "[FIRING] unreachable consul") {
		t.Fatalf("webhook got %q; want one firing notice for consul", got)
	}
	active, err := db.ActiveAlerts(ctx)
	if err != nil || len(active) != 1 || active[0].Subject != "consul" {
		t.Fatalf("ActiveAlerts = %+v, %v; want the consul alert", active, err)
	}

	// A round that did not evaluate the rule leaves the alert alone.
	a.Evaluate(ctx, nil, nil)
	if got := rcv.got(); len(got) != 1 {
		t.Fatalf("webhook got %q after a round without the rule; want no resolve notice", got)
	}

	clk.Advance(time.Minute)
	a.Evaluate(ctx, rules, nil)
	got := rcv.got()
	if len(got) != 2 || !strings.Contains(got[1], "[RESOLVED] unreachable consul (after 2m0s)") {
		t.Fatalf("webhook got %q; want a resolve notice after 2m", got)
	}
	if active, _ := db.ActiveAlerts(ctx); len(active) != 0 {
		t.Fatalf("ActiveAlerts after resolution = %+v; want none", active)
	}
}

func TestAlertWaitsForItsDuration(t *testing.T) {
	ctx := t.Context()
	db := openDB(t)
	rcv, url := newReceiver(t)
	clk := &clock{t: time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)}
	a := telemetry.NewAlerter(db, url, nil, testsupport.Logger(t), clk.Now)
	down := []telemetry.Condition{{Rule: telemetry.RuleWADisconnected, Subject: "slice/3", For: 10 * time.Minute, Message: "disconnected"}}
	rules := []string{telemetry.RuleWADisconnected}
	a.Evaluate(ctx, rules, down)
	clk.Advance(9 * time.Minute)
	a.Evaluate(ctx, rules, down)
	if got := rcv.got(); len(got) != 0 {
		t.Fatalf("webhook got %q before 10 minutes; want nothing", got)
	}
	clk.Advance(time.Minute)
	a.Evaluate(ctx, rules, down)
	if got := rcv.got(); len(got) != 1 || !strings.Contains(got[0], "[FIRING] whatsapp_disconnected slice/3") {
		t.Fatalf("webhook got %q after 10 minutes; want one firing notice", got)
	}
}

// fakeNomad stands in for Nomad's allocation and host stats.
type fakeNomad struct {
	allocs []telemetry.SliceAlloc
	usage  map[string]telemetry.Usage
	nodes  []telemetry.NodeSample
}

func (f *fakeNomad) SliceAllocs(context.Context) ([]telemetry.SliceAlloc, error) {
	return f.allocs, nil
}
func (f *fakeNomad) AllocUsage(_ context.Context, id string) (telemetry.Usage, error) {
	u, ok := f.usage[id]
	if !ok {
		return u, errors.New("no such allocation")
	}
	return u, nil
}
func (f *fakeNomad) NodeStats(context.Context) ([]telemetry.NodeSample, error) { return f.nodes, nil }

type fakeSlices struct{ slices []slicehub.Slice }

func (f *fakeSlices) Slices(_ context.Context, states ...slicehub.SliceState) ([]slicehub.Slice, error) {
	var out []slicehub.Slice
	for _, s := range f.slices {
		for _, st := range states {
			if s.State == st {
				out = append(out, s)
			}
		}
	}
	return out, nil
}
func (f *fakeSlices) GatewayToken(context.Context, int64) (string, error) { return "token", nil }
func (f *fakeSlices) DatabaseSizes(_ context.Context, ids []int64) (map[int64]int64, error) {
	out := map[int64]int64{}
	for _, id := range ids {
		out[id] = id << 20
	}
	return out, nil
}

// CRMCounts makes fakeSlices a CRMCounter: slice id has 10·id contacts
// and id notes.
func (f *fakeSlices) CRMCounts(_ context.Context, ids []int64) (map[int64]telemetry.CRMCount, error) {
	out := map[int64]telemetry.CRMCount{}
	for _, id := range ids {
		out[id] = telemetry.CRMCount{Contacts: 10 * id, Notes: id}
	}
	return out, nil
}

func TestCollectorStoresPrunesExportsAndAlerts(t *testing.T) {
	ctx := t.Context()
	db := openDB(t)
	rcv, url := newReceiver(t)
	clk := &clock{t: time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)}
	start := clk.Now()
	nomad := &fakeNomad{
		allocs: []telemetry.SliceAlloc{{SliceID: 1, AllocID: "a1", NodeID: "n1"}, {SliceID: 2, AllocID: "a2", NodeID: "n1"}},
		usage:  map[string]telemetry.Usage{"a1": {MemoryBytes: 100 << 20, CPUPercent: 3}, "a2": {MemoryBytes: 950 << 20, CPUPercent: 40}},
		nodes:  []telemetry.NodeSample{{NodeID: "n1", Name: "node-1", MemoryUsed: 3 << 30, MemoryTotal: 8 << 30, CPUPercent: 20}},
	}
	slices := &fakeSlices{slices: []slicehub.Slice{{ID: 1, State: slicehub.StateAssigned, UserID: 10}, {ID: 2, State: slicehub.StateAssigned, UserID: 11}}}
	reg := prometheus.NewRegistry()
	var consulErr error
	log := testsupport.Logger(t)
	c := telemetry.New(telemetry.Config{
		Retention:      7 * 24 * time.Hour,
		MemoryMaxBytes: 1 << 30,
		MinWarm:        func() int { return 1 },
		Checks:         map[string]func(context.Context) error{"consul": func(context.Context) error { return consulErr }},
		Rules:          telemetry.Rules{MemoryPercent: 90, WarmEmptyFor: 2 * time.Minute},
		Logger:         log, Registry: reg, Now: clk.Now,
	}, db, nomad, nil, slices, telemetry.NewAlerter(db, url, nil, log, clk.Now))

	if err := c.Collect(ctx); err != nil {
		t.Fatalf("Collect: %v", err)
	}
	latest, err := db.LatestSlices(ctx, start)
	if err != nil || len(latest) != 2 || latest[1].MemoryBytes != 950<<20 || latest[1].MemoryMaxBytes != 1<<30 || latest[1].DBBytes != 2<<20 {
		t.Fatalf("LatestSlices = %+v, %v; want both slices with Nomad's memory", latest, err)
	}
	if latest[1].Contacts != 20 || latest[1].Notes != 2 {
		t.Errorf("slice 2's CRM in its sample: %d contacts, %d notes; want 20, 2", latest[1].Contacts, latest[1].Notes)
	}
	crm := map[string]float64{}
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() == "slicehub_slice_crm_rows" {
			for _, m := range mf.GetMetric() {
				l := map[string]string{}
				for _, p := range m.GetLabel() {
					l[p.GetName()] = p.GetValue()
				}
				crm[l["slice_id"]+"/"+l["table"]] = m.GetGauge().GetValue()
			}
		}
	}
	if crm["2/contacts"] != 20 || crm["2/notes"] != 2 {
		t.Errorf("slicehub_slice_crm_rows = %v; want slice 2 with 20 contacts and 2 notes", crm)
	}
	if v := gauge(t, reg, "slicehub_slice_memory_bytes", "2"); v != 950<<20 {
		t.Errorf("slicehub_slice_memory_bytes{slice_id=2} = %v; want %v", v, 950<<20)
	}
	got := rcv.got()
	if len(got) != 1 || !strings.Contains(got[0], "memory_near_max slice/2") {
		t.Fatalf("webhook got %q; want the memory alert for slice 2 only (the empty pool waits 2m)", got)
	}

	// Eight days on: the first collection's rows age out. Consul goes down,
	// slice 2's memory comes back down, the pool has stayed empty.
	clk.Advance(8 * 24 * time.Hour)
	nomad.usage["a2"] = telemetry.Usage{MemoryBytes: 300 << 20}
	consulErr = errors.New("connection refused")
	if err := c.Collect(ctx); err != nil {
		t.Fatalf("Collect: %v", err)
	}
	series, _ := db.SliceSeries(ctx, 1, time.Time{})
	nodes, _ := db.NodeSeries(ctx, time.Time{})
	if len(series) != 1 || !series[0].At.Equal(clk.Now()) || len(nodes) != 1 {
		t.Fatalf("after 8 days: %d slice samples, %d node samples; want only the newest (pruned)", len(series), len(nodes))
	}
	active, _ := db.ActiveAlerts(ctx)
	var rules []string
	for _, a := range active {
		rules = append(rules, a.Rule+" "+a.Subject)
	}
	if strings.Join(rules, ",") != "unreachable consul,warm_pool_empty pool" && strings.Join(rules, ",") != "warm_pool_empty pool,unreachable consul" {
		t.Errorf("active alerts = %q; want consul unreachable and the empty pool", rules)
	}
	got = rcv.got()
	if len(got) != 4 || !strings.Contains(strings.Join(got, "\n"), "[RESOLVED] memory_near_max slice/2") {
		t.Errorf("webhook got %q; want the memory alert resolved and two new alerts", got)
	}
}

// gauge reads one series of a gauge from the registry, by its only label's value.
func gauge(t *testing.T, reg *prometheus.Registry, name, label string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if len(m.GetLabel()) == 1 && m.GetLabel()[0].GetValue() == label {
				return m.GetGauge().GetValue()
			}
		}
	}
	t.Fatalf("no %s{%s} on the registry", name, label)
	return 0
}

// flakyStore is a real store whose alert calls fail while down is set, as
// when PostgreSQL itself is the dependency that went away.
type flakyStore struct {
	telemetry.Store
	down bool
}

func (f *flakyStore) FireAlert(ctx context.Context, a telemetry.Alert) (bool, error) {
	if f.down {
		return false, errors.New("connection refused")
	}
	return f.Store.FireAlert(ctx, a)
}

func (f *flakyStore) ActiveAlerts(ctx context.Context) ([]telemetry.Alert, error) {
	if f.down {
		return nil, errors.New("connection refused")
	}
	return f.Store.ActiveAlerts(ctx)
}

func TestPostgresDownAlertIsSentOnceAndResolvedFromMemory(t *testing.T) {
	ctx := t.Context()
	store := &flakyStore{Store: openDB(t), down: true}
	rcv, url := newReceiver(t)
	clk := &clock{t: time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)}
	a := telemetry.NewAlerter(store, url, nil, testsupport.Logger(t), clk.Now)
	rules := []string{telemetry.RuleUnreachable}
	pgDown := []telemetry.Condition{{Rule: telemetry.RuleUnreachable, Subject: "postgres", Value: 1, Message: "postgres is unreachable"}}
	a.Evaluate(ctx, rules, pgDown)
	clk.Advance(time.Minute)
	a.Evaluate(ctx, rules, pgDown)
	if got := rcv.got(); len(got) != 1 || !strings.Contains(got[0], "[FIRING] unreachable postgres") {
		t.Fatalf("webhook got %q while PostgreSQL is down; want one firing notice", got)
	}
	store.down = false
	clk.Advance(time.Minute)
	a.Evaluate(ctx, rules, nil)
	got := rcv.got()
	if len(got) != 2 || !strings.Contains(got[1], "[RESOLVED] unreachable postgres") {
		t.Fatalf("webhook got %q after PostgreSQL came back; want a resolve notice", got)
	}
}
