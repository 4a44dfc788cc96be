package slicehub

import "time"

// What the platform's own monitoring (package telemetry) records, as the
// store (postgres) keeps it and the dashboard reads it. The types live here
// so that the store implements telemetry's interfaces without importing it.

// SliceSample is one observation of a running slice.
type SliceSample struct {
	SliceID int64     `json:"slice_id"`
	At      time.Time `json:"at"`
	AllocID string    `json:"alloc_id,omitempty"`
	NodeID  string    `json:"node_id,omitempty"`
	// MemoryBytes is the allocation's resident memory (RSS, or the cgroup's
	// usage when the driver reports no RSS); MemoryMaxBytes its hard limit
	// (memory_max), 0 when unknown.
	MemoryBytes    int64   `json:"memory_bytes"`
	MemoryMaxBytes int64   `json:"memory_max_bytes"`
	CPUPercent     float64 `json:"cpu_percent"`
	// DBBytes is the size of the slice's database, which also holds its
	// Chromium profile snapshot; 0 when unknown.
	DBBytes int64 `json:"db_bytes"`
	// WAState is one of the slicehub.WA* states, or "" when the slice did
	// not answer; Healthy says whether it did (a passing route in Consul
	// and an answer to /api/status/state).
	WAState string `json:"wa_state"`
	Healthy bool   `json:"healthy"`
	// Contacts and Notes are the rows of the slice CRM's two tables
	// (PostgreSQL's live-tuple estimate); 0 when unknown. The slice keeps no
	// WhatsApp messages in its database, so there is no message count.
	Contacts int64 `json:"contacts"`
	Notes    int64 `json:"notes"`
	// GovernorRestarts is the slice's memory governor restart counter and
	// GovernedBytes its cgroup's anon + shmem, from the slice's own
	// /api/metrics (governor.go); GovernorKnown says whether it answered.
	// Exported on /metrics and evaluated, not stored.
	GovernorRestarts int64 `json:"governor_restarts"`
	GovernedBytes    int64 `json:"governed_bytes"`
	GovernorKnown    bool  `json:"-"`
}

// NodeSample is one observation of a Nomad client node.
type NodeSample struct {
	NodeID      string    `json:"node_id"`
	Name        string    `json:"name"`
	At          time.Time `json:"at"`
	MemoryUsed  int64     `json:"memory_used"`
	MemoryTotal int64     `json:"memory_total"`
	CPUPercent  float64   `json:"cpu_percent"` // mean over the node's cores
	DiskUsed    int64     `json:"disk_used"`   // the allocation directory's disk
	DiskTotal   int64     `json:"disk_total"`
}

// Alert is one firing of a rule about a subject (a slice, a node, a
// dependency, or "pool"). It is active while ResolvedAt is nil.
type Alert struct {
	ID         int64      `json:"id"`
	Rule       string     `json:"rule"`
	Subject    string     `json:"subject"`
	Message    string     `json:"message"`
	FiredAt    time.Time  `json:"fired_at"`
	ResolvedAt *time.Time `json:"resolved_at,omitempty"`
	LastValue  float64    `json:"last_value"`
}

// CRMCount is the size of one slice's CRM.
type CRMCount struct{ Contacts, Notes int64 }
