package main

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/slicehub/slicehub/telemetry"
	"github.com/slicehub/slicehub/testsupport"
)

// The whole daemon on the real stack: the leader's collector samples the
// warm slice (Nomad's docker stats, its WhatsApp state through its route),
// stores it and exports it on /metrics.
func TestTelemetryCollectsTheWarmSlice(t *testing.T) {
	m := startPlatform(t, "-telemetry-interval", "1s")
	ctx := t.Context()
	var got telemetry.SliceSample
	testsupport.Eventually(t, 3*time.Minute, "a stored sample of the warm slice with memory, database size and WhatsApp state", func() (bool, error) {
		latest, err := m.DB.LatestSlices(ctx, time.Now().Add(-time.Hour))
		if err != nil {
			return false, err
		}
		for _, s := range latest {
			if s.MemoryBytes > 0 && s.DBBytes > 0 && s.WAState != "" && s.Healthy {
				got = s
				return true, nil
			}
		}
		return false, nil
	})
	t.Logf("sample: %+v", got)
	nodes, err := m.DB.NodeSeries(ctx, time.Now().Add(-time.Hour))
	if err != nil || len(nodes) == 0 || nodes[0].MemoryTotal <= 0 {
		t.Fatalf("NodeSeries = %+v, %v; want the dev node", nodes, err)
	}
	// The dashboard's view of the same tables.
	view := m.AdminTelemetry()
	if latest, err := view.LatestSlices(ctx); err != nil || latest[got.SliceID].MemoryMB <= 0 {
		t.Errorf("AdminTelemetry().LatestSlices = %+v, %v; want slice %d with its memory", latest, err, got.SliceID)
	}
	if ns, err := view.NodeSeries(ctx, time.Now().Add(-time.Hour)); err != nil || len(ns[nodes[0].NodeID].MemoryMB) == 0 {
		t.Errorf("AdminTelemetry().NodeSeries = %+v, %v; want the dev node's memory", ns, err)
	}
	resp, err := http.Get("http://" + m.InternalAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, want := range []string{"slicehub_slice_memory_bytes{slice_id=", "slicehub_node_memory_bytes{", `slicehub_dependency_up{dependency="postgres"} 1`} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}
