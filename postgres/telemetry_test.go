package postgres_test

import (
	"testing"
	"time"

	"github.com/slicehub/slicehub/postgres"
	"github.com/slicehub/slicehub/telemetry"
)

// The store implements telemetry's interfaces without importing the
// package (the types are the root package's).
var (
	_ telemetry.Store      = (*postgres.DB)(nil)
	_ telemetry.CRMCounter = (*postgres.DB)(nil)
)

func TestTelemetrySamplesWrittenAndPruned(t *testing.T) {
	ctx := t.Context()
	db := openDB(t)
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	old := now.Add(-8 * 24 * time.Hour)
	for _, at := range []time.Time{old, now.Add(-time.Minute), now} {
		if err := db.InsertSliceSamples(ctx, []telemetry.SliceSample{
			{SliceID: 1, At: at, MemoryBytes: 100 << 20, MemoryMaxBytes: 1 << 30, CPUPercent: 12.5, WAState: "connected", Healthy: true},
			{SliceID: 2, At: at, MemoryBytes: 200 << 20},
		}); err != nil {
			t.Fatalf("InsertSliceSamples: %v", err)
		}
		if err := db.InsertNodeSamples(ctx, []telemetry.NodeSample{{NodeID: "n1", Name: "node-1", At: at, MemoryUsed: 1, MemoryTotal: 2}}); err != nil {
			t.Fatalf("InsertNodeSamples: %v", err)
		}
	}
	latest, err := db.LatestSlices(ctx, now.Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if len(latest) != 2 || latest[0].SliceID != 1 || !latest[0].At.Equal(now) || latest[0].WAState != "connected" || latest[0].CPUPercent != 12.5 {
		t.Fatalf("LatestSlices = %+v; want slices 1 and 2 at %s", latest, now)
	}
	series, err := db.SliceSeries(ctx, 1, time.Time{})
	if err != nil || len(series) != 3 || !series[0].At.Equal(old) {
		t.Fatalf("SliceSeries(1) before pruning = %d rows, err %v; want 3, oldest first", len(series), err)
	}

	n, err := db.PruneTelemetry(ctx, now.Add(-7*24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if n != 3 { // two slice samples and one node sample
		t.Errorf("PruneTelemetry deleted %d rows; want 3", n)
	}
	series, _ = db.SliceSeries(ctx, 1, time.Time{})
	nodes, _ := db.NodeSeries(ctx, time.Time{})
	if len(series) != 2 || len(nodes) != 2 {
		t.Errorf("after pruning: %d slice samples, %d node samples; want 2 and 2", len(series), len(nodes))
	}
}

func TestAlertsDeduplicatedAndResolved(t *testing.T) {
	ctx := t.Context()
	db := openDB(t)
	t0 := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	a := telemetry.Alert{Rule: telemetry.RuleSliceFailed, Subject: "slice/7", Message: "failed", FiredAt: t0, LastValue: 5}
	if fired, err := db.FireAlert(ctx, a); err != nil || !fired {
		t.Fatalf("first FireAlert = %v, %v; want fired", fired, err)
	}
	a.LastValue = 6
	if fired, err := db.FireAlert(ctx, a); err != nil || fired {
		t.Fatalf("second FireAlert while active = %v, %v; want not fired", fired, err)
	}
	active, err := db.ActiveAlerts(ctx)
	if err != nil || len(active) != 1 || active[0].LastValue != 6 {
		t.Fatalf("ActiveAlerts = %+v, %v; want one alert with the last value 6", active, err)
	}
	r, ok, err := db.ResolveAlert(ctx, a.Rule, a.Subject, t0.Add(time.Minute), 0)
	if err != nil || !ok || r.ResolvedAt == nil || !r.ResolvedAt.Equal(t0.Add(time.Minute)) {
		t.Fatalf("ResolveAlert = %+v, %v, %v", r, ok, err)
	}
	if _, ok, _ := db.ResolveAlert(ctx, a.Rule, a.Subject, t0, 0); ok {
		t.Error("ResolveAlert resolved an alert twice")
	}
	// Resolved, the same rule and subject may fire again.
	if fired, err := db.FireAlert(ctx, a); err != nil || !fired {
		t.Fatalf("FireAlert after resolution = %v, %v; want fired", fired, err)
	}
}
