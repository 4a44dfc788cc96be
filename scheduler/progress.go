package scheduler

import (
	"context"
	"time"

	"github.com/slicehub/slicehub"
)

// allocSeen is what Progress last learnt from Nomad about one job.
type allocSeen struct {
	running bool
	allocID string
	at      time.Time
}

// Progress tells a user waiting for a slice how far it has come: database
// ready, dispatched, allocation running, healthy (then the slice's own
// WhatsApp state, which the gateway reads from the slice). Any replica may
// serve it and the gateway may poll it every second or so: it costs one
// indexed query, a lookup in the route table, and, only between dispatch
// and health, one call to Nomad per job per ProgressCacheTTL. When Nomad
// does not answer, the progress simply stays at "dispatched": a waiting
// user never sees an error for it.
func (s *Scheduler) Progress(ctx context.Context, userID int64) (slicehub.SliceProgress, error) {
	p, err := s.store.SliceProgress(ctx, userID)
	if err != nil {
		return p, err
	}
	if p.JobID == "" {
		if p.State == slicehub.StateProvisioning && s.cfg.Admission.Dispatches > 0 {
			if p.Queue, err = s.dispatchQueue(ctx, p.SliceID); err != nil {
				return p, err
			}
		}
		return p, nil
	}
	if rt, ok := s.routes.Snapshot()[p.SliceID]; ok {
		p.Stage, p.AllocID = slicehub.StageHealthy, rt.AllocID
		p.Ready = p.State.Routable()
		return p, nil
	}
	if seen, ok := s.allocOf(ctx, p.JobID); ok && seen.running {
		p.Stage, p.AllocID = slicehub.StageRunning, seen.allocID
	}
	return p, nil
}

func (s *Scheduler) allocOf(ctx context.Context, jobID string) (allocSeen, bool) {
	now := time.Now()
	s.mu.Lock()
	seen, ok := s.progress[jobID]
	s.mu.Unlock()
	if ok && now.Sub(seen.at) < s.cfg.ProgressCacheTTL {
		return seen, true
	}
	allocs, err := s.nomad.JobAllocations(ctx, jobID)
	if err != nil {
		s.log.Debug("progress: Nomad did not answer", "job_id", jobID, "err", err)
		return seen, ok
	}
	seen = allocSeen{at: now}
	for _, a := range allocs {
		if a.Running() {
			seen.running, seen.allocID = true, a.ID
			break
		}
	}
	s.mu.Lock()
	s.progress[jobID] = seen
	// Jobs pass through this stage for seconds; keep the map small.
	if len(s.progress) > 256 {
		for job, v := range s.progress {
			if now.Sub(v.at) > time.Minute {
				delete(s.progress, job)
			}
		}
	}
	s.mu.Unlock()
	return seen, true
}
