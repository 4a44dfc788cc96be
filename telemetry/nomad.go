package telemetry

import (
	"context"

	"github.com/slicehub/slicehub"
)

// Nomad is what the collector needs from Nomad. *nomad.Client implements it
// over github.com/hashicorp/nomad/api; tests may replace it.
type Nomad interface {
	// SliceAllocs lists the running allocations of the slice job's children.
	SliceAllocs(ctx context.Context) ([]SliceAlloc, error)
	// AllocUsage is one allocation's current memory and CPU, from the
	// client that runs it.
	AllocUsage(ctx context.Context, allocID string) (Usage, error)
	// NodeStats samples every ready client node (At is left for the caller).
	NodeStats(ctx context.Context) ([]NodeSample, error)
}

// What Nomad reports, as the root package's values.
type (
	SliceAlloc = slicehub.SliceAlloc
	Usage      = slicehub.AllocUsage
)
