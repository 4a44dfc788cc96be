package slicehub

import "time"

// This file holds the domain types of the warm pool that more than one
// layer sees: the progress a waiting user follows, the capacity the admin
// view shows, and what is left to do for a retired slice. They live here,
// not in package scheduler, because the gateway and package postgres speak
// them too and must not import the scheduler.

// Stage is how far a slice has come on its way to serving its user. The
// stages are ordered; a slice reaches each one after the previous.
type Stage string

const (
	// StageQueued: the slice row exists; its database is not ready yet (or
	// the pool waits for capacity before it provisions and dispatches).
	StageQueued Stage = "queued"
	// StageDatabase: its own database and role exist.
	StageDatabase Stage = "database_ready"
	// StageDispatched: its Nomad child job exists.
	StageDispatched Stage = "dispatched"
	// StageRunning: an allocation of that job is running.
	StageRunning Stage = "allocation_running"
	// StageHealthy: it passes its health check in Consul. What follows (the
	// WhatsApp state: QR, connected) comes from the slice itself.
	StageHealthy Stage = "healthy"
)

// Stages lists the stages in order.
var Stages = []Stage{StageQueued, StageDatabase, StageDispatched, StageRunning, StageHealthy}

// SliceProgress is what a user waiting for a slice sees: a cheap answer the
// gateway may poll every second or so.
type SliceProgress struct {
	SliceID int64      `json:"slice_id"`
	State   SliceState `json:"state"`
	// Stage is the furthest stage reached.
	Stage Stage `json:"stage"`
	// DatabaseReadyAt and DispatchedAt are zero until reached.
	DatabaseReadyAt time.Time `json:"database_ready_at,omitzero"`
	DispatchedAt    time.Time `json:"dispatched_at,omitzero"`
	// JobID is the slice's current Nomad child; AllocID the allocation
	// running it, when known.
	JobID   string `json:"-"`
	AllocID string `json:"-"`
	// Ready: assigned and healthy, so the gateway can route to it.
	Ready bool `json:"ready"`
	// Queue is set while the slice waits for admission (admission.go).
	Queue *QueuePlace `json:"queue,omitempty"`
}

// Capacity is what Nomad's nodes can still hold, counted the way Nomad's
// scheduler counts: each node's resources minus its reserved resources,
// minus what the allocations on it reserve (their memory reservation, not
// memory_max), minus slices dispatched but not placed yet.
type Capacity struct {
	// Nodes are the nodes a slice can be placed on: ready, eligible, not
	// draining, with the slice job's driver healthy.
	Nodes int `json:"nodes"`
	// MemoryMB is the allocatable memory of those nodes; ReservedMB what is
	// reserved on them.
	MemoryMB    int64 `json:"memory_mb"`
	ReservedMB  int64 `json:"reserved_mb"`
	CPU         int64 `json:"cpu_mhz"`
	ReservedCPU int64 `json:"reserved_cpu_mhz"`
	// SliceMemoryMB, SliceCPU and SliceDiskMB are what one slice asks for.
	SliceMemoryMB int64 `json:"slice_memory_mb"`
	SliceCPU      int64 `json:"slice_cpu_mhz"`
	SliceDiskMB   int64 `json:"slice_disk_mb"`
	// Fit is how many more slices fit now, summed over the nodes.
	Fit int `json:"fit"`
	// Limit names the resource that runs out first, the one that leaves
	// the fewest places: "memory", "cpu", "disk", or "nodes" when no node
	// can run slices at all. When Fit is 0, it is why.
	Limit   string         `json:"limit,omitempty"`
	PerNode []NodeCapacity `json:"per_node,omitempty"`
}

// Exhausted reports whether no further slice fits.
func (c Capacity) Exhausted() bool { return c.Fit <= 0 }

// NodeCapacity is one node's share of Capacity.
type NodeCapacity struct {
	ID           string `json:"id"`
	Name         string `json:"name"`
	MemoryMB     int64  `json:"memory_mb"`
	ReservedMB   int64  `json:"reserved_mb"`
	CPU          int64  `json:"cpu_mhz"`
	ReservedCPU  int64  `json:"reserved_cpu_mhz"`
	DiskMB       int64  `json:"disk_mb"`
	ReservedDisk int64  `json:"reserved_disk_mb"`
	Fit          int    `json:"fit"`
}

// Retirement is what is left to do for a retired slice whose database still
// exists: its final dump (when it ever held a user's data), then dropping
// the database once the retention period has passed.
type Retirement struct {
	SliceID   int64
	RetiredAt time.Time
	// JobID is the job the slice had when it was retired; it must be gone
	// before the final dump is taken.
	JobID string
	// NeedsDump: the database may hold a user's data, so it is dumped before
	// it is dropped. A warm slice recycled by the TTL never had a user.
	NeedsDump bool
	// DumpPath is where the final dump was written; empty until then.
	DumpPath string
}
