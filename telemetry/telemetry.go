// Package telemetry owns the platform's own monitoring: a collector that the
// leader runs every interval to sample each slice (memory and CPU from
// Nomad's allocation stats, WhatsApp state from the slice itself) and each
// Nomad client node, stores the samples as time series for a retention
// period and exports them on /metrics; and the alerts evaluated on those
// samples, sent to a Slack-compatible webhook once when they fire and once
// when they clear, and kept for the admin dashboard's banner.
//
// The samples and alerts that the store (postgres.DB) and the dashboard
// share are the root package's (slicehub.SliceSample, NodeSample, Alert):
// the store implements Store without importing this package.
package telemetry

import (
	"context"
	"time"

	"github.com/slicehub/slicehub"
)

// The samples and alerts are the root package's (the store implements
// Store without importing this package).
type (
	SliceSample = slicehub.SliceSample
	NodeSample  = slicehub.NodeSample
	Alert       = slicehub.Alert
	CRMCount    = slicehub.CRMCount
)

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
