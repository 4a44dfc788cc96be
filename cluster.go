package slicehub

import "time"

// What the platform reads of the cluster that runs the slices (Nomad), as
// plain values: package nomad produces them, the scheduler, the admin API
// and telemetry consume them through interfaces of their own, and none of
// them imports another for the types.

// SliceJob is one dispatched child of the parameterized slice job.
type SliceJob struct {
	JobID   string
	SliceID int64 // from the dispatch meta; 0 if missing or malformed
	// Generation is the slice generation the child was dispatched for, read
	// from its ID; -1 for a child not dispatched by the scheduler.
	Generation int
	Status     string
	Stopped    bool
	// SubmitTime is when Nomad registered the child (the dispatch): the
	// first of two hand dispatches for one slice wins.
	SubmitTime time.Time
}

// Alive reports whether the child is meant to run and has not finished.
func (c SliceJob) Alive() bool { return !c.Stopped && c.Status != "dead" }

// Hand reports whether the child was dispatched by someone other than the
// scheduler (an operator's `nomad job dispatch`).
func (c SliceJob) Hand() bool { return c.Generation < 0 }

// An allocation's client status and its desired status, as Nomad spells
// them.
const (
	AllocPending    = "pending"
	AllocRunning    = "running"
	AllocComplete   = "complete"
	AllocFailed     = "failed"
	AllocLost       = "lost"
	AllocDesiredRun = "run"
)

// Alloc is one allocation.
type Alloc struct {
	ID            string
	JobID         string
	NodeID        string
	ClientStatus  string
	DesiredStatus string
	// Restarts is the sum of its tasks' restart counts.
	Restarts int
	// What it reserves on its node.
	MemoryMB, CPU, DiskMB int64
	// Addr is host:port of its "http" port as Nomad allocated it (what
	// Nomad registers in Consul); "" when it has none.
	Addr string
	// CreateIndex orders the allocations of one job: the newest is the
	// replacement.
	CreateIndex uint64
}

// Holds reports whether the allocation still holds its node's resources:
// until the client reports it terminal, as Nomad's own scheduler counts.
func (a Alloc) Holds() bool {
	switch a.ClientStatus {
	case AllocComplete, AllocFailed, AllocLost:
		return false
	}
	return true
}

// Running reports whether the allocation runs and is meant to.
func (a Alloc) Running() bool {
	return a.ClientStatus == AllocRunning && a.DesiredStatus == AllocDesiredRun
}

// ClusterNode is one Nomad client node.
type ClusterNode struct {
	ID, Name string
	// Schedulable: ready, eligible and not draining.
	Schedulable bool
	// Drivers lists the task drivers detected and healthy on it.
	Drivers map[string]bool
	// Allocatable resources: the node's own minus what it reserves for the
	// operating system and the agent.
	MemoryMB, CPU, DiskMB int64
}

// SliceResources is what one slice asks for.
type SliceResources struct {
	MemoryMB, CPU, DiskMB int64
	Driver                string
}

// WorkloadIdentity is what a verified Nomad workload identity says.
type WorkloadIdentity struct {
	AllocID, JobID, Namespace, Task string
}

// ClusterEvent is one batch of Nomad events, reduced to what the scheduler
// needs: whether anything in it concerns the slices (a child job, an
// allocation of one, or a node, whose changes move the capacity).
type ClusterEvent struct {
	Index    uint64
	Relevant bool
	Err      error
}

// DrainNode is a node as a drain sees it.
type DrainNode struct {
	ID, Name string
	// Draining: Nomad's drain is in progress. Nomad ends it (and keeps the
	// node ineligible) once nothing is left on the node.
	Draining bool
	// Eligible for new allocations; a drained node is not.
	Eligible bool
	// ForceDeadline is when Nomad stops what is left; zero: no deadline.
	ForceDeadline time.Time
}

// DrainOptions tune a node drain (scheduler.Drain).
type DrainOptions struct {
	// Deadline is Nomad's drain deadline, set when the drain starts (a
	// drain in progress keeps its own). Default 5 minutes.
	Deadline time.Duration
	// MaxParallel bounds the slices moving at once: each move starts a
	// Chromium on the other nodes. Default 2.
	MaxParallel int
	// Actor is logged.
	Actor string
}

// SliceAlloc is the running allocation of a slice.
type SliceAlloc struct {
	SliceID         int64
	AllocID, NodeID string
}

// AllocUsage is an allocation's resource usage.
type AllocUsage struct {
	MemoryBytes int64
	CPUPercent  float64
}

// LogQuery says which of a slice's logs to stream.
type LogQuery struct {
	// Task is the task of the allocation; empty: the group's first task
	// (the slice job has one, "slice").
	Task string
	// Stderr streams stderr instead of stdout.
	Stderr bool
	// Follow keeps the stream open for new lines until the client leaves.
	Follow bool
	// Tail > 0 starts with the last Tail lines instead of the beginning.
	Tail int
}
