// Package telemetry owns the platform's own monitoring: a collector that the
// leader runs every interval to sample each slice (memory and CPU from
// Nomad's allocation stats, WhatsApp state from the slice itself) and each
// Nomad client node, stores the samples as time series for a retention
// period and exports them on /metrics; and the alerts evaluated on those
// samples, sent to a Slack-compatible webhook once when they fire and once
// when they clear, and kept for the admin dashboard's banner.
//
// The types here are what the store (postgres.DB) and the dashboard share.
// They live in this package rather than the root domain package only
// because this package owns them; they depend on the standard library alone.
package telemetry

import (
	"context"
	"time"
)

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

// Rule names. They are stored in alerts.rule; keep them stable.
const (
	RuleCapacity       = "capacity"              // reserved memory over the threshold
	RuleWarmPoolEmpty  = "warm_pool_empty"       // no warm slice while one is wanted
	RuleSliceFailed    = "slice_failed"          // a slice in the failed state
	RuleWADisconnected = "whatsapp_disconnected" // not connected for longer than allowed
	RuleMemoryNearMax  = "memory_near_max"       // a slice close to its memory_max
	RuleUnreachable    = "unreachable"           // Nomad, Consul or PostgreSQL
	// RuleGovernorRestarts: a slice's memory governor restarts Chromium
	// too often (governor.go).
	RuleGovernorRestarts = "slice_governor_restarts"
)

// Store is where samples and alerts are kept; *postgres.DB implements it.
// The admin dashboard reads through the same methods.
type Store interface {
	InsertSliceSamples(ctx context.Context, s []SliceSample) error
	InsertNodeSamples(ctx context.Context, s []NodeSample) error
	// PruneTelemetry deletes the samples older than before and the alerts
	// resolved before it, and says how many rows went.
	PruneTelemetry(ctx context.Context, before time.Time) (int64, error)

	// LatestSlices is the newest sample of each slice sampled since.
	LatestSlices(ctx context.Context, since time.Time) ([]SliceSample, error)
	// SliceSeries is one slice's samples since a time, oldest first.
	SliceSeries(ctx context.Context, sliceID int64, since time.Time) ([]SliceSample, error)
	// NodeSeries is every node's samples since a time, oldest first.
	NodeSeries(ctx context.Context, since time.Time) ([]NodeSample, error)

	// FireAlert records a firing unless the same rule and subject is
	// already active; fired says whether this call recorded it.
	FireAlert(ctx context.Context, a Alert) (fired bool, err error)
	// ResolveAlert ends the active alert of rule and subject, returning it
	// (with ResolvedAt set) or ok=false when none was active.
	ResolveAlert(ctx context.Context, rule, subject string, at time.Time, lastValue float64) (a Alert, ok bool, err error)
	// ActiveAlerts lists the alerts not resolved, oldest first.
	ActiveAlerts(ctx context.Context) ([]Alert, error)
}
