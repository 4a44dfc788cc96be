package telemetry

import (
	"context"
	"sync"

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

// parallel runs fn(0..count-1) with at most limit at once (default 8).
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
