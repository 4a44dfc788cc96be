package jobs_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	nomadapi "github.com/hashicorp/nomad/api"
)

// The capacity report's arithmetic, goal verdict, variant and charts, from
// fixed figures (the run itself is TestCapacity, `make capacity`).
func TestCapacityReport(t *testing.T) {
	run := capRun{Profile: "typical", Chromium: "host", BudgetMB: 16384, Started: time.Date(2026, 12, 8, 3, 0, 0, 0, time.UTC),
		Host: []string{"CPU: 2 cores"}, LoadEnd: "1.00 1.00 1.00", Stop: "memory budget 16384 MiB"}
	s := []capSlice{
		{N: 1, DispatchToHealthy: 1700 * time.Millisecond, Anon: 296, Shmem: 8.7, PSS: 530, HelpersPSS: 25.9, DockerPSS: 4, DockerProcs: 1, PostgresPSS: 10, Backends: 2, IdleCPU: 0.02},
		{N: 2, DispatchToHealthy: 1900 * time.Millisecond, Anon: 300, Shmem: 8.7, PSS: 540, HelpersPSS: 25.9, DockerPSS: 4, DockerProcs: 1, PostgresPSS: 10, Backends: 2, IdleCPU: 0.02},
	}
	if got := s[0].AllIn(); got != 530+25.9+4+10 {
		t.Fatalf("all-in %v: want container + helpers + docker + postgres", got)
	}
	dir := t.TempDir()
	path, err := capacityReport(run, s).Write(dir)
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Base(path) != "capacity-chromium-host-2026-12-08.md" {
		t.Fatalf("report %s: the host variant has its own name", path)
	}
	b, _ := os.ReadFile(path)
	md := string(b)
	// Mean all-in (569.9 + 579.9) / 2 = 574.9 MiB: (61-2)*1024/574.9 = 105
	// slices by memory, 16/0.02 = 800 by CPU.
	for _, want := range []string{"**modelled**", "bind-mounted read-only from the host", "Stopped by: memory budget 16384 MiB",
		"**575 MiB all-in**", "= **105 slices**", "= **800 slices**", "Runs out first: **memory**",
		"| slices per seed host | ≥ 150 | 105 | **not met** |", "| all-in per slice | ≤ 390 MiB | 575 MiB | **not met** |",
		"| idle CPU per slice | ≤ 0.08 vCPU | 0.020 | met |", "does **not** meet the goal", "arithmetic, not a measurement",
		"![All-in memory per slice against slice number](capacity-chromium-host-2026-12-08-memory.svg)", "## Missing"} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
	for _, chart := range []string{"memory", "healthy", "cpu"} {
		if _, err := os.Stat(filepath.Join(dir, "capacity-chromium-host-2026-12-08-"+chart+".svg")); err != nil {
			t.Errorf("chart %s: %v", chart, err)
		}
	}
}

// Nomad's refusal names the exhausted dimension, so that the report says
// which reservation stopped the host.
func TestDescribePlacementFailure(t *testing.T) {
	if got := describePlacementFailure(&nomadapi.Evaluation{}); got != "" {
		t.Fatalf("no failure: got %q", got)
	}
	got := describePlacementFailure(&nomadapi.Evaluation{BlockedEval: "b1", FailedTGAllocs: map[string]*nomadapi.AllocationMetric{
		"slice": {NodesEvaluated: 1, NodesExhausted: 1, DimensionExhausted: map[string]int{"cpu": 1}},
	}})
	for _, want := range []string{`group "slice"`, "exhausted dimension: cpu", "nodes evaluated 1", "blocked evaluation b1"} {
		if !strings.Contains(got, want) {
			t.Errorf("%q lacks %q", got, want)
		}
	}
}
