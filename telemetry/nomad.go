package telemetry

import (
	"context"
	"regexp"
	"strconv"
	"sync"

	"github.com/hashicorp/nomad/api"
	"github.com/slicehub/slicehub"
)

// Nomad is what the collector needs from Nomad. NomadAPI implements it over
// github.com/hashicorp/nomad/api; tests may replace it.
type Nomad interface {
	// SliceAllocs lists the running allocations of the slice job's children.
	SliceAllocs(ctx context.Context) ([]SliceAlloc, error)
	// AllocUsage is one allocation's current memory and CPU, from the
	// client that runs it.
	AllocUsage(ctx context.Context, allocID string) (Usage, error)
	// NodeStats samples every ready client node (At is left for the caller).
	NodeStats(ctx context.Context) ([]NodeSample, error)
}

// SliceAlloc is the running allocation of a slice.
type SliceAlloc struct {
	SliceID         int64
	AllocID, NodeID string
}

// Usage is an allocation's resource usage.
type Usage struct {
	MemoryBytes int64
	CPUPercent  float64
}

// NomadAPI is the adapter over the Nomad HTTP API.
type NomadAPI struct {
	API *api.Client
	// JobID is the parameterized slice job (slicehub.NomadJobID).
	JobID string
	// Parallel bounds the stats requests in flight: each is forwarded by
	// the server to a client, and hundreds at once would queue there.
	Parallel int
}

// childSliceRE reads the slice id from a child's job ID,
// "<parent>/dispatch-s<slice>g<generation>-..." (see scheduler.Dispatch).
var childSliceRE = regexp.MustCompile(`/dispatch-s([1-9][0-9]*)g[0-9]+-`)

func (n *NomadAPI) SliceAllocs(ctx context.Context) ([]SliceAlloc, error) {
	const op = "telemetry.slice_allocs"
	stubs, _, err := n.API.Allocations().List((&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return nil, slicehub.Wrap(op, slicehub.KindUnavailable, err)
	}
	prefix := n.JobID + "/"
	var out []SliceAlloc
	for _, s := range stubs {
		if len(s.JobID) <= len(prefix) || s.JobID[:len(prefix)] != prefix ||
			s.ClientStatus != api.AllocClientStatusRunning || s.DesiredStatus != api.AllocDesiredStatusRun {
			continue
		}
		m := childSliceRE.FindStringSubmatch(s.JobID)
		if m == nil {
			continue
		}
		id, _ := strconv.ParseInt(m[1], 10, 64)
		out = append(out, SliceAlloc{SliceID: id, AllocID: s.ID, NodeID: s.NodeID})
	}
	return out, nil
}

func (n *NomadAPI) AllocUsage(ctx context.Context, allocID string) (Usage, error) {
	const op = "telemetry.alloc_usage"
	// Stats only needs the ID: the server forwards to the allocation's client.
	st, err := n.API.Allocations().Stats(&api.Allocation{ID: allocID}, (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return Usage{}, slicehub.Wrap(op, slicehub.KindUnavailable, err)
	}
	var u Usage
	if r := st.ResourceUsage; r != nil {
		if m := r.MemoryStats; m != nil {
			// RSS is what the task holds; drivers that cannot measure it
			// (cgroups v2 under docker) report only the cgroup's usage.
			u.MemoryBytes = int64(m.RSS)
			if u.MemoryBytes == 0 {
				u.MemoryBytes = int64(m.Usage)
			}
		}
		if c := r.CpuStats; c != nil {
			u.CPUPercent = c.Percent
		}
	}
	return u, nil
}

func (n *NomadAPI) NodeStats(ctx context.Context) ([]NodeSample, error) {
	const op = "telemetry.node_stats"
	nodes, _, err := n.API.Nodes().List((&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return nil, slicehub.Wrap(op, slicehub.KindUnavailable, err)
	}
	var ready []*api.NodeListStub
	for _, nd := range nodes {
		if nd.Status == api.NodeStatusReady {
			ready = append(ready, nd)
		}
	}
	out := make([]NodeSample, len(ready))
	ok := make([]bool, len(ready))
	n.each(len(ready), func(i int) {
		hs, err := n.API.Nodes().Stats(ready[i].ID, (&api.QueryOptions{}).WithContext(ctx))
		if err != nil {
			return // one node that does not answer leaves a gap, not an error
		}
		out[i], ok[i] = hostSample(ready[i].ID, ready[i].Name, hs), true
	})
	var kept []NodeSample
	for i := range out {
		if ok[i] {
			kept = append(kept, out[i])
		}
	}
	return kept, nil
}

// hostSample reduces Nomad's host stats to a node sample.
func hostSample(id, name string, hs *api.HostStats) NodeSample {
	s := NodeSample{NodeID: id, Name: name}
	if m := hs.Memory; m != nil {
		s.MemoryTotal, s.MemoryUsed = int64(m.Total), int64(m.Used)
	}
	if len(hs.CPU) > 0 {
		var busy float64
		for _, c := range hs.CPU {
			busy += c.User + c.System
		}
		s.CPUPercent = busy / float64(len(hs.CPU))
	}
	// The allocation directory's disk is the one slices fill.
	if d := hs.AllocDirStats; d != nil {
		s.DiskTotal, s.DiskUsed = int64(d.Size), int64(d.Used)
	}
	return s
}

// each runs fn(0..n-1) with at most Parallel at once.
func (n *NomadAPI) each(count int, fn func(i int)) {
	parallel(count, n.Parallel, fn)
}

func parallel(count, limit int, fn func(i int)) {
	if limit <= 0 {
		limit = 8
	}
	sem := make(chan struct{}, limit)
	var wg sync.WaitGroup
	for i := range count {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			fn(i)
		}()
	}
	wg.Wait()
}
