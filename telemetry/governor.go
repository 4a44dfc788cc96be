package telemetry

// The slices' memory governors (slice/governor.go): each slice counts its
// Chromium restarts on its own /api/metrics (Prometheus text, behind the
// gateway token, like /api/status/state). The collector reads it with each
// slice's state, exports the counts and the slice's cgroup memory, and
// raises RuleGovernorRestarts when a slice restarts more than
// Rules.GovernorRestarts times within Rules.GovernorWindow: a budget too
// small for that account, or a leak.

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/slicehub/slicehub"
	"github.com/slicehub/slicehub/sliceclient"
)

// governorPoint is one reading of a slice's restart counter.
type governorPoint struct {
	at    time.Time
	count int64
}

// sliceMetrics reads a slice's /api/metrics: the governor's restarts and
// the cgroup memory it weighs (anon + shmem).
func sliceMetrics(ctx context.Context, sc sliceclient.Client, sl sliceclient.Slice) (restarts, governedBytes int64, err error) {
	const op = "telemetry.slice_metrics"
	a, err := sc.Do(ctx, sl, http.MethodGet, "/api/metrics", 1<<20)
	if err != nil {
		return 0, 0, err
	}
	if a.Status != http.StatusOK {
		return 0, 0, slicehub.Errorf(op, slicehub.KindBadGateway, "", "slice answered %d", a.Status)
	}
	m, err := sliceclient.ParseMetrics(a.Body)
	if err != nil {
		return 0, 0, slicehub.Wrap(op, slicehub.KindBadGateway, err)
	}
	restarts, governedBytes = m.Restarts["restarted"], int64(m.Anon)+int64(m.Shmem)
	return restarts, governedBytes, nil
}

// governorRule records this collection's restart counts and returns the
// slices over the rate. A counter that went down is a restarted slice
// process: its new count is all new restarts.
func (c *Collector) governorRule(samples []SliceSample, now time.Time) []Condition {
	limit, window := c.cfg.Rules.GovernorRestarts, c.cfg.Rules.GovernorWindow
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.governor == nil {
		c.governor = map[int64][]governorPoint{}
	}
	seen := map[int64]bool{}
	var conds []Condition
	for _, s := range samples {
		if !s.GovernorKnown {
			continue
		}
		seen[s.SliceID] = true
		pts := append(c.governor[s.SliceID], governorPoint{at: now, count: s.GovernorRestarts})
		kept := pts[:0]
		for _, p := range pts {
			if now.Sub(p.at) <= window {
				kept = append(kept, p)
			}
		}
		c.governor[s.SliceID] = kept
		var n int64
		for i := 1; i < len(kept); i++ {
			if d := kept[i].count - kept[i-1].count; d > 0 {
				n += d
			} else if d < 0 {
				n += kept[i].count
			}
		}
		if limit > 0 && n >= int64(limit) {
			conds = append(conds, Condition{Rule: RuleGovernorRestarts, Subject: sliceSubject(s.SliceID), Value: float64(n),
				Message: fmt.Sprintf("slice %d: the memory governor restarted Chromium %d times within %s (its memory budget is too small for this account, or it leaks)",
					s.SliceID, n, window)})
		}
	}
	for id := range c.governor {
		if !seen[id] {
			delete(c.governor, id)
		}
	}
	return conds
}
