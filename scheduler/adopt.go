package scheduler

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/slicehub/slicehub"
)

// Dispatches by hand. `nomad job dispatch -meta slice_id=<id> slice` is one
// of the platform's operator entry points. PostgreSQL stays the truth: the
// reconcile makes it learn about the dispatch, and never lets Nomad
// overrule it. A child is a hand dispatch when its ID does not carry a
// slice and a generation (the scheduler's own children always do).
//
//   - an id no row holds: a new slice (row, event, database and role, the id
//     sequence moved past it) whose allocation is this child; it turns warm
//     when healthy, like any refill;
//   - an id whose slice has no live job (provisioning not yet dispatched,
//     warm or assigned whose job is gone, failed): the child becomes its
//     new allocation, a new generation: the operator's restart (a failed
//     slice gets a fresh restart budget, as with the admin's restart);
//   - an id whose slice runs already: the child is a duplicate and is
//     stopped; the live one is never replaced;
//   - a suspended or retired slice: the child is stopped (a dispatch does
//     not resume, billing or an admin does);
//   - no slice_id, or not a number: stopped.
//
// Every case leaves an event (slice_events, or the admin audit when there
// is no slice to carry it) and a log line. Nomad 1.6 does not record who
// dispatched a job (its audit log is an Enterprise feature), so the event
// names the operator by the channel (handActor) and the dispatch by its
// job ID and submit time.

// handActor is the actor of the events that hand dispatches cause.
const handActor = "operator:nomad-dispatch"

// describe names a hand dispatch in events and logs.
func describe(c Child) string {
	at := "at an unknown time"
	if !c.SubmitTime.IsZero() && c.SubmitTime.Unix() > 0 {
		at = "submitted " + c.SubmitTime.UTC().Format(time.RFC3339)
	}
	return fmt.Sprintf("hand dispatch %s (%s; Nomad does not record which operator)", c.JobID, at)
}

// adoptHandDispatches handles the alive hand dispatches no row records
// yet, oldest first, and returns rows with the slices it created. A child
// it leaves for the next pass (its slice changed meanwhile, PostgreSQL
// failed) is marked owned, so that this pass does not stop it as a stray.
func (s *Scheduler) adoptHandDispatches(ctx context.Context, p *pass, rows []slicehub.Slice) ([]slicehub.Slice, error) {
	recorded := make(map[string]bool, len(rows))
	index := make(map[int64]int, len(rows))
	for i, sl := range rows {
		index[sl.ID] = i
		if sl.JobID != "" {
			recorded[sl.JobID] = true
		}
	}
	var hand []Child
	for _, c := range p.children {
		if c.Alive() && c.Hand() && !recorded[c.JobID] {
			hand = append(hand, c)
		}
	}
	sort.Slice(hand, func(i, j int) bool {
		if !hand[i].SubmitTime.Equal(hand[j].SubmitTime) {
			return hand[i].SubmitTime.Before(hand[j].SubmitTime)
		}
		return hand[i].JobID < hand[j].JobID
	})
	var errs []error
	for _, c := range hand {
		var err error
		if c.SliceID == 0 {
			err = s.refuseHand(ctx, p, c, nil, "malformed", "its slice_id meta is missing or not a positive integer")
		} else if i, ok := index[c.SliceID]; ok {
			err = s.handForRow(ctx, p, &rows[i], c)
		} else {
			var sl slicehub.Slice
			sl, err = s.handForUnknown(ctx, p, c)
			if err == nil && sl.ID != 0 {
				rows = append(rows, sl)
				index[sl.ID] = len(rows) - 1
			}
		}
		if err != nil {
			p.owned[c.JobID] = true // leave it for the next pass
			errs = append(errs, fmt.Errorf("hand dispatch %s: %w", c.JobID, err))
		}
	}
	return rows, errors.Join(errs...)
}

// handForRow handles a hand dispatch for a slice of this pass's rows.
func (s *Scheduler) handForRow(ctx context.Context, p *pass, sl *slicehub.Slice, c Child) error {
	switch {
	case sl.State == slicehub.StateSuspended:
		return s.refuseHand(ctx, p, c, sl, "suspended",
			"the slice is suspended and stays so: a dispatch does not resume it (billing or an admin does)")
	case sl.State == slicehub.StateFailed:
		return s.adoptHand(ctx, p, sl, c)
	case sl.JobID != "" && p.alive(sl.JobID):
		return s.refuseHand(ctx, p, c, sl, "duplicate",
			fmt.Sprintf("a duplicate: the slice already runs as %s, which it keeps (two allocations would share one database and profile)", sl.JobID))
	default:
		return s.adoptHand(ctx, p, sl, c)
	}
}

// handForUnknown handles a hand dispatch for an id that no row of this
// pass holds: a new slice, or a retired one. It returns the new slice.
func (s *Scheduler) handForUnknown(ctx context.Context, p *pass, c Child) (slicehub.Slice, error) {
	sl, err := s.store.Slice(ctx, c.SliceID)
	switch {
	case slicehub.KindOf(err) == slicehub.KindNotFound:
	case err != nil:
		return slicehub.Slice{}, err
	case sl.State == slicehub.StateRetired:
		return slicehub.Slice{}, s.refuseHand(ctx, p, c, &sl, "retired", "the slice is retired; its id is never used again")
	default:
		// Created or moved after this pass read the rows: the next pass
		// sees it.
		p.owned[c.JobID] = true
		return slicehub.Slice{}, nil
	}
	sl, err = s.store.AdoptSlice(ctx, c.SliceID, handActor, describe(c)+": adopted as a new slice")
	if slicehub.KindOf(err) == slicehub.KindConflict {
		p.owned[c.JobID] = true // someone took the id meanwhile: the next pass decides
		return slicehub.Slice{}, nil
	}
	if err != nil {
		return slicehub.Slice{}, err
	}
	s.log.Info("a hand dispatch becomes a new slice", "slice_id", sl.ID, "job_id", c.JobID, "submitted", c.SubmitTime)
	if err := s.adoptHand(ctx, p, &sl, c); err != nil {
		return sl, err
	}
	return sl, nil
}

// adoptHand makes c the slice's allocation: a new generation, unless the
// slice never had a job. A slice still provisioning gets its database
// first (idempotent), since no dispatch of the scheduler made it.
func (s *Scheduler) adoptHand(ctx context.Context, p *pass, sl *slicehub.Slice, c Child) error {
	p.owned[c.JobID] = true
	if sl.State == slicehub.StateProvisioning {
		if err := s.store.ProvisionDatabase(ctx, sl.ID); err != nil {
			return err
		}
	}
	if sl.State == slicehub.StateFailed {
		if err := s.store.ResetFailures(ctx, sl.ID); err != nil {
			return err
		}
	}
	why := describe(c) + ": adopted as the slice's allocation"
	if sl.JobID != "" || sl.State != slicehub.StateProvisioning {
		why = describe(c) + ": adopted as the slice's new allocation (an operator's restart)"
	}
	job := c.JobID
	next, err := s.store.Transition(ctx, sl.ID,
		slicehub.Adopt(handActor, job, why, sl.JobID != "" || sl.State != slicehub.StateProvisioning).At(sl.State))
	if slicehub.KindOf(err) == slicehub.KindConflict {
		return nil // moved meanwhile; the next pass looks again
	}
	if err != nil {
		return err
	}
	was := *sl
	*sl = next
	s.cfg.Metrics.Repairs.WithLabelValues("hand_adopted").Inc()
	s.log.Info("adopted a hand dispatch", "slice_id", sl.ID, "job_id", job, "was", was.State, "previous_job", was.JobID,
		"generation", sl.Restarts, "user_id", sl.UserID)
	return nil
}

// refuseHand stops and purges a hand dispatch, and records why on the
// slice (sl) or, without one, in the admin audit.
func (s *Scheduler) refuseHand(ctx context.Context, p *pass, c Child, sl *slicehub.Slice, kind, why string) error {
	p.owned[c.JobID] = true
	reason := describe(c) + " stopped: " + why
	var err error
	if sl != nil {
		err = s.store.NoteSlice(ctx, sl.ID, handActor, reason)
	} else {
		err = s.store.NoteDispatch(ctx, c.JobID, handActor, "stop_dispatch", reason)
	}
	if err != nil {
		return err // not stopped unrecorded: the next pass tries both again
	}
	if err := s.nomad.Stop(ctx, c.JobID, true); err != nil {
		return err
	}
	s.cfg.Metrics.Repairs.WithLabelValues("hand_" + kind).Inc()
	var id int64
	if sl != nil {
		id = sl.ID
	}
	s.log.Warn("stopped a hand dispatch", "job_id", c.JobID, "slice_id", id, "kind", kind, "why", why)
	return nil
}
