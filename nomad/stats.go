package nomad

import (
	"context"

	"github.com/hashicorp/nomad/api"

	"github.com/slicehub/slicehub"
	"github.com/slicehub/slicehub/internal/parallel"
)

// What telemetry samples (telemetry.Nomad): the running allocations of the
// slices, each one's usage, and the ready nodes' host statistics.

func (n *Client) SliceAllocs(ctx context.Context) ([]slicehub.SliceAlloc, error) {
	const op = "nomad.slice_allocs"
	stubs, _, err := n.API.Allocations().List((&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return nil, slicehub.Wrap(op, slicehub.KindUnavailable, err)
	}
	prefix := n.JobID + "/"
	var out []slicehub.SliceAlloc
	for _, s := range stubs {
		if len(s.JobID) <= len(prefix) || s.JobID[:len(prefix)] != prefix ||
			s.ClientStatus != api.AllocClientStatusRunning || s.DesiredStatus != api.AllocDesiredStatusRun {
			continue
		}
		id, _, ok := ParseJobID(s.JobID)
		if !ok {
			continue
		}
		out = append(out, slicehub.SliceAlloc{SliceID: id, AllocID: s.ID, NodeID: s.NodeID})
	}
	return out, nil
}

func (n *Client) AllocUsage(ctx context.Context, allocID string) (slicehub.AllocUsage, error) {
	const op = "nomad.alloc_usage"
	// Stats only needs the ID: the server forwards to the allocation's client.
	st, err := n.API.Allocations().Stats(&api.Allocation{ID: allocID}, (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return slicehub.AllocUsage{}, slicehub.Wrap(op, slicehub.KindUnavailable, err)
	}
	var u slicehub.AllocUsage
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

func (n *Client) NodeStats(ctx context.Context) ([]slicehub.NodeSample, error) {
	const op = "nomad.node_stats"
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
	out := make([]slicehub.NodeSample, len(ready))
	ok := make([]bool, len(ready))
	n.each(len(ready), func(i int) {
		hs, err := n.API.Nodes().Stats(ready[i].ID, (&api.QueryOptions{}).WithContext(ctx))
		if err != nil {
			return // one node that does not answer leaves a gap, not an error
		}
		out[i], ok[i] = hostSample(ready[i].ID, ready[i].Name, hs), true
	})
	var kept []slicehub.NodeSample
	for i := range out {
		if ok[i] {
			kept = append(kept, out[i])
		}
	}
	return kept, nil
}

// hostSample reduces Nomad's host stats to a node sample.
func hostSample(id, name string, hs *api.HostStats) slicehub.NodeSample {
	s := slicehub.NodeSample{NodeID: id, Name: name}
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

// each runs fn(0..count-1) with at most StatsParallel at once (default 8).
func (n *Client) each(count int, fn func(i int)) {
	parallel.Each(count, n.StatsParallel, fn)
}
