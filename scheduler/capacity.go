package scheduler

import (
	"context"
	"time"

	"github.com/slicehub/slicehub"
)

// computeCapacity counts what Nomad's nodes can still hold the way Nomad's
// scheduler does, so that the pool never dispatches a child that would only
// wait, blocked, for room: on each node that can run slices (schedulable,
// with the slice job's driver healthy), its allocatable resources minus
// what its allocations reserve until the client reports them terminal.
// Children dispatched but not placed yet reserve nothing on any node, yet
// will; they are taken off the total, or two quick passes would both see
// the same free room.
func computeCapacity(nodes []Node, allocs []Alloc, children []Child, res Resources) slicehub.Capacity {
	c := slicehub.Capacity{SliceMemoryMB: res.MemoryMB, SliceCPU: res.CPU, SliceDiskMB: res.DiskMB}
	byNode := map[string]*slicehub.NodeCapacity{}
	for _, n := range nodes {
		if !n.Schedulable || (res.Driver != "" && !n.Drivers[res.Driver]) {
			continue
		}
		c.PerNode = append(c.PerNode, slicehub.NodeCapacity{ID: n.ID, Name: n.Name, MemoryMB: n.MemoryMB, CPU: n.CPU, DiskMB: n.DiskMB})
	}
	for i := range c.PerNode {
		byNode[c.PerNode[i].ID] = &c.PerNode[i]
	}
	placed := map[string]bool{}
	for _, a := range allocs {
		if !a.Holds() {
			continue
		}
		placed[a.JobID] = true
		if n := byNode[a.NodeID]; n != nil {
			n.ReservedMB += a.MemoryMB
			n.ReservedCPU += a.CPU
			n.ReservedDisk += a.DiskMB
		}
	}
	pending := 0
	for _, ch := range children {
		if ch.Alive() && !placed[ch.JobID] {
			pending++
		}
	}
	c.Nodes = len(c.PerNode)
	var memFit, cpuFit, diskFit int
	for i := range c.PerNode {
		n := &c.PerNode[i]
		c.MemoryMB += n.MemoryMB
		c.ReservedMB += n.ReservedMB
		c.CPU += n.CPU
		c.ReservedCPU += n.ReservedCPU
		m, p, d := fits(n.MemoryMB-n.ReservedMB, res.MemoryMB), fits(n.CPU-n.ReservedCPU, res.CPU), fits(n.DiskMB-n.ReservedDisk, res.DiskMB)
		n.Fit = min(m, p, d)
		c.Fit += n.Fit
		memFit, cpuFit, diskFit = memFit+m, cpuFit+p, diskFit+d
	}
	// The pending children will take the first free places, wherever Nomad
	// puts them.
	c.Fit = max(c.Fit-pending, 0)
	switch {
	case c.Nodes == 0:
		c.Limit = "nodes"
	case memFit <= cpuFit && memFit <= diskFit:
		c.Limit = "memory"
	case cpuFit <= diskFit:
		c.Limit = "cpu"
	default:
		c.Limit = "disk"
	}
	return c
}

// fits is how many asks of size ask fit in free; an ask of 0 never binds.
func fits(free, ask int64) int {
	if ask <= 0 {
		return 1 << 30
	}
	if free <= 0 {
		return 0
	}
	return int(free / ask)
}

// Capacity returns what Nomad's nodes can still hold, for the admin view:
// nodes, memory allocatable and reserved, and how many more slices fit. Any
// replica may call it; it asks Nomad (four calls), and answers from a copy
// at most CapacityCacheTTL old.
func (s *Scheduler) Capacity(ctx context.Context) (slicehub.Capacity, error) {
	const op = "scheduler.capacity"
	s.mu.Lock()
	if !s.capAt.IsZero() && time.Since(s.capAt) < s.cfg.CapacityCacheTTL {
		c := s.capLast
		s.mu.Unlock()
		return c, nil
	}
	s.mu.Unlock()
	children, err := s.nomad.Children(ctx)
	if err != nil {
		return slicehub.Capacity{}, slicehub.Wrap(op, slicehub.KindUnavailable, err)
	}
	allocs, err := s.nomad.Allocations(ctx)
	if err != nil {
		return slicehub.Capacity{}, slicehub.Wrap(op, slicehub.KindUnavailable, err)
	}
	c, err := s.capacityOf(ctx, children, allocs)
	if err != nil {
		return c, slicehub.Wrap(op, slicehub.KindUnavailable, err)
	}
	return c, nil
}

// capacityOf completes a capacity count from children and allocations
// already fetched, and publishes it (metrics, cache).
func (s *Scheduler) capacityOf(ctx context.Context, children []Child, allocs []Alloc) (slicehub.Capacity, error) {
	nodes, err := s.nomad.Nodes(ctx)
	if err != nil {
		return slicehub.Capacity{}, err
	}
	res, err := s.nomad.SliceResources(ctx)
	if err != nil {
		return slicehub.Capacity{}, err
	}
	c := computeCapacity(nodes, allocs, children, res)
	m := s.cfg.Metrics
	m.CapacityNodes.Set(float64(c.Nodes))
	m.CapacityMemory.WithLabelValues("allocatable").Set(float64(c.MemoryMB) * (1 << 20))
	m.CapacityMemory.WithLabelValues("reserved").Set(float64(c.ReservedMB) * (1 << 20))
	m.CapacityFit.Set(float64(c.Fit))
	s.mu.Lock()
	s.capLast, s.capAt = c, time.Now()
	s.mu.Unlock()
	return c, nil
}

// setExhausted records whether the pool wants a slice it cannot dispatch,
// and says so once per change rather than at every pass: a metric, and a
// log line with the reason (max_slices, or the resource that binds).
func (s *Scheduler) setExhausted(exhausted bool, reason string, attrs ...any) {
	s.mu.Lock()
	was := s.exhausted
	s.exhausted = exhausted
	s.mu.Unlock()
	if exhausted {
		s.cfg.Metrics.CapacityExhausted.Set(1)
	} else {
		s.cfg.Metrics.CapacityExhausted.Set(0)
	}
	switch {
	case exhausted && !was:
		s.log.Warn("capacity exhausted: the pool cannot dispatch the slices it wants", append([]any{"reason", reason}, attrs...)...)
	case !exhausted && was:
		s.log.Info("capacity available again")
	}
}
