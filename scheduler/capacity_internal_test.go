package scheduler

import "testing"

func TestComputeCapacity(t *testing.T) {
	res := Resources{MemoryMB: 100, CPU: 10, DiskMB: 10, Driver: "docker"}
	nodes := []Node{
		{ID: "a", Schedulable: true, Drivers: map[string]bool{"docker": true}, MemoryMB: 1000, CPU: 1000, DiskMB: 1000},
		{ID: "b", Schedulable: true, Drivers: map[string]bool{"docker": true}, MemoryMB: 250, CPU: 1000, DiskMB: 1000},
		{ID: "drained", Schedulable: false, Drivers: map[string]bool{"docker": true}, MemoryMB: 1 << 20, CPU: 1 << 20, DiskMB: 1 << 20},
		{ID: "nodocker", Schedulable: true, Drivers: map[string]bool{"raw_exec": true}, MemoryMB: 1 << 20, CPU: 1 << 20, DiskMB: 1 << 20},
	}
	allocs := []Alloc{
		{ID: "1", JobID: "slice/x", NodeID: "a", ClientStatus: "running", MemoryMB: 300, CPU: 30, DiskMB: 30},
		{ID: "2", JobID: "other", NodeID: "a", ClientStatus: "pending", MemoryMB: 200, CPU: 20, DiskMB: 20},
		// Terminal allocations hold nothing.
		{ID: "3", JobID: "slice/old", NodeID: "a", ClientStatus: "complete", MemoryMB: 500},
		{ID: "4", JobID: "slice/y", NodeID: "b", ClientStatus: "failed", MemoryMB: 500},
	}
	children := []Child{
		{JobID: "slice/x", Status: "running"},
		// Dispatched, not placed yet: it will take a place.
		{JobID: "slice/pending", Status: "pending"},
		{JobID: "slice/old", Status: "dead"},
	}
	c := computeCapacity(nodes, allocs, children, res)
	// a: 1000-500 = 500 -> 5; b: 250 -> 2; minus 1 pending child.
	if c.Nodes != 2 || c.MemoryMB != 1250 || c.ReservedMB != 500 || c.Fit != 6 || c.Limit != "memory" {
		t.Fatalf("computeCapacity = %+v; want 2 nodes, 1250 MB, 500 reserved, fit 6", c)
	}

	full := computeCapacity(nodes[:2], append(allocs, Alloc{ID: "5", JobID: "big", NodeID: "b", ClientStatus: "running", MemoryMB: 200},
		Alloc{ID: "6", JobID: "big2", NodeID: "a", ClientStatus: "running", MemoryMB: 450}), children[:1], res)
	if full.Fit != 0 || full.Limit != "memory" {
		t.Fatalf("full nodes: %+v; want fit 0, limit memory", full)
	}
	cpu := computeCapacity(nodes[:1], nil, nil, Resources{MemoryMB: 1, CPU: 2000, Driver: "docker"})
	if cpu.Fit != 0 || cpu.Limit != "cpu" {
		t.Fatalf("cpu-bound: %+v; want limit cpu", cpu)
	}
	none := computeCapacity(nodes[2:], nil, nil, res)
	if none.Fit != 0 || none.Limit != "nodes" || none.Nodes != 0 {
		t.Fatalf("no usable node: %+v; want limit nodes", none)
	}
}
