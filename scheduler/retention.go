package scheduler

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/slicehub/slicehub"
)

// profileReaper is implemented by a Nomad adapter that can delete a
// retired slice's Chromium profile on the nodes (nomad.Client.ReapProfile).
type profileReaper interface {
	ReapProfile(ctx context.Context, sliceID int64) (bool, error)
}

// reapProfile deletes a retired slice's profile once its tasks are gone:
// the WhatsApp login in it is a credential, and the slice's database keeps
// the snapshot for the retention period anyway. Once per slice per leader
// (a new leader dispatches again; the reaper finds nothing left to do).
func (s *Scheduler) reapProfile(ctx context.Context, id int64) error {
	r, ok := s.nomad.(profileReaper)
	if !ok {
		return nil
	}
	s.mu.Lock()
	done := s.reaped[id]
	s.mu.Unlock()
	if done {
		return nil
	}
	dispatched, err := r.ReapProfile(ctx, id)
	if err != nil {
		s.cfg.Metrics.Retention.WithLabelValues("profile_deleted", "error").Inc()
		return fmt.Errorf("deleting the profile of slice %d: %w", id, err)
	}
	s.mu.Lock()
	if s.reaped == nil {
		s.reaped = map[int64]bool{}
	}
	s.reaped[id] = true
	s.mu.Unlock()
	if dispatched {
		s.cfg.Metrics.Retention.WithLabelValues("profile_deleted", "dispatched").Inc()
		s.log.Info("deleting the profile of a retired slice on every node", "slice_id", id)
	}
	return nil
}

// retention is the periodic step of the reconcile that finishes retired
// slices: once nothing of a slice's job can still write to its database, it
// takes the final pg_dump (for a slice that served a user) into DumpDir, and
// drops the database and role once DBRetention has passed since the
// retirement. Each step is recorded as an event and marked in the slice row,
// so a crash between steps repeats at most the step in progress (a dump is
// written under a temporary name and renamed only when complete). A
// database that needs a dump is never dropped without one.
func (s *Scheduler) retention(ctx context.Context, p *pass) error {
	// Paced by the wall clock: this is how often the work is done, not a
	// decision about any slice (those use Config.Now).
	s.mu.Lock()
	due := s.lastRetain.IsZero() || time.Since(s.lastRetain) >= s.cfg.RetentionInterval
	if due {
		s.lastRetain = time.Now()
	}
	s.mu.Unlock()
	if !due {
		return nil
	}
	list, err := s.store.Retirements(ctx)
	if err != nil {
		return err
	}
	m := s.cfg.Metrics.Retention
	var errs []error
	for _, r := range list {
		if r.JobID != "" && (p.alive(r.JobID) || p.holds(r.JobID)) {
			continue // the stray sweep stops it; dump once its tasks are gone
		}
		if err := s.reapProfile(ctx, r.SliceID); err != nil {
			errs = append(errs, err)
		}
		if r.NeedsDump && r.DumpPath == "" {
			if s.cfg.DumpDir == "" {
				s.mu.Lock()
				warned := s.dumpWarned
				s.dumpWarned = true
				s.mu.Unlock()
				if !warned {
					s.log.Warn("retired slices keep their databases: no dump directory is configured", "slice_id", r.SliceID)
				}
				continue
			}
			path, err := s.store.DumpDatabase(ctx, r.SliceID, s.cfg.DumpDir, s.cfg.PgDump)
			if slicehub.KindOf(err) == slicehub.KindNotFound {
				// Never created, or dropped by hand: nothing to keep.
				m.WithLabelValues("dumped", "no_database").Inc()
				if err := s.store.MarkDropped(ctx, r.SliceID, "scheduler", "no database to dump or drop"); err != nil {
					errs = append(errs, err)
				}
				continue
			}
			if err != nil {
				m.WithLabelValues("dumped", "error").Inc()
				errs = append(errs, fmt.Errorf("final dump of slice %d: %w", r.SliceID, err))
				continue
			}
			if err := s.store.MarkDumped(ctx, r.SliceID, path, "scheduler"); err != nil {
				errs = append(errs, err)
				continue
			}
			m.WithLabelValues("dumped", "ok").Inc()
			s.log.Info("final dump of a retired slice written", "slice_id", r.SliceID, "path", path)
			r.DumpPath = path
		}
		keep := s.cfg.DBRetention
		if !r.NeedsDump {
			keep = 0 // never held a user's data
		}
		if p.now.Before(r.RetiredAt.Add(keep)) {
			continue
		}
		if err := s.store.DropDatabase(ctx, r.SliceID); err != nil {
			m.WithLabelValues("dropped", "error").Inc()
			errs = append(errs, err)
			continue
		}
		why := "database dropped after the retention period"
		if !r.NeedsDump {
			why = "database dropped: it never held a user's data"
		}
		if err := s.store.MarkDropped(ctx, r.SliceID, "scheduler", why); err != nil {
			errs = append(errs, err)
			continue
		}
		m.WithLabelValues("dropped", "ok").Inc()
		s.log.Info("dropped the database of a retired slice", "slice_id", r.SliceID, "dump", r.DumpPath)
	}
	return errors.Join(errs...)
}
