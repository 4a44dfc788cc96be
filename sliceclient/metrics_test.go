package sliceclient

import "testing"

func TestParseMetrics(t *testing.T) {
	body := []byte(`# TYPE slicehub_slice_cgroup_memory_bytes gauge
slicehub_slice_cgroup_memory_bytes{kind="anon"} 1048576
slicehub_slice_cgroup_memory_bytes{kind="shmem"} 2097152
slicehub_slice_cgroup_memory_bytes{kind="file"} 3145728
slicehub_slice_cgroup_memory_bytes{kind="other"} 9
# TYPE slicehub_slice_governor_restarts_total counter
slicehub_slice_governor_restarts_total{result="restarted"} 2
slicehub_slice_governor_restarts_total{result="deferred_busy"} 5
`)
	m, err := ParseMetrics(body)
	if err != nil {
		t.Fatal(err)
	}
	if m.Anon != 1<<20 || m.Shmem != 2<<20 || m.File != 3<<20 {
		t.Errorf("memory %+v", m)
	}
	if m.Restarts["restarted"] != 2 || m.Restarts["deferred_busy"] != 5 || m.Restarts["suppressed_loop"] != 0 {
		t.Errorf("restarts %v", m.Restarts)
	}
	if _, err := ParseMetrics([]byte("not { prometheus")); err == nil {
		t.Error("a body that is not Prometheus text parsed")
	}
}
