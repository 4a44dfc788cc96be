package scheduler

import (
	"context"
	"strings"

	"github.com/slicehub/slicehub"
)

// The operations billing and admins perform on one slice. Each one:
//   - is a guarded transition of the state machine, so two calls racing on
//     the same slice cannot both act: one wins, the other finds the slice
//     already where it wanted it and returns it (done twice = done once);
//   - is recorded in slice_events with the actor ("billing", "admin:3");
//   - may run on any replica. It stops a job itself when that is all it
//     takes (stopping is idempotent), and leaves every dispatch to the
//     leader, which the transition wakes (LISTEN/NOTIFY → Kick).

// Suspend stops a user's slice and keeps its database and profile: billing
// or an admin. The slice stays bound to its user, who sees it suspended.
// Suspending a suspended slice does nothing.
func (s *Scheduler) Suspend(ctx context.Context, sliceID int64, actor string) (slicehub.Slice, error) {
	const op = "scheduler.suspend"
	before, sl, changed, err := s.apply(ctx, op, sliceID, actor, opSpec{
		done:   []slicehub.SliceState{slicehub.StateSuspended},
		change: slicehub.Suspend(actor, "suspended by "+actor),
		check: func(sl slicehub.Slice) error {
			// A warm-pool slice still starting serves nobody.
			if sl.State == slicehub.StateProvisioning && sl.UserID == 0 {
				return slicehub.Errorf(op, slicehub.KindConflict, "slice_unbound", "slice %d serves no user; retire it instead", sl.ID)
			}
			return nil
		},
	})
	if err == nil && changed {
		s.stopAfterOp(ctx, op, before)
	}
	return sl, err
}

// Resume dispatches a suspended slice again: same database, same profile
// (a new generation of its job, from the leader). It turns assigned when
// healthy. Resuming a slice that is already starting or assigned does
// nothing.
func (s *Scheduler) Resume(ctx context.Context, sliceID int64, actor string) (slicehub.Slice, error) {
	const op = "scheduler.resume"
	_, sl, _, err := s.apply(ctx, op, sliceID, actor, opSpec{
		// Running, or starting, for its user again.
		done:   slicehub.StatesWhere(slicehub.SliceState.Billable),
		change: slicehub.Resume(actor, "resumed by "+actor),
		check: func(sl slicehub.Slice) error {
			if sl.UserID == 0 {
				// A slice parked by Reassign holds someone's data: it must
				// never turn warm and be claimed by someone else.
				return slicehub.Errorf(op, slicehub.KindConflict, "slice_unbound", "slice %d serves no user; reassign or retire it", sl.ID)
			}
			return nil
		},
	})
	return sl, err
}

// Restart replaces a slice's job with a new generation (same database,
// same profile, same user), and gives a failed slice a fresh restart
// budget. Restarting a slice that is already starting does nothing: a
// second click while the first restart runs must not restart it again.
func (s *Scheduler) Restart(ctx context.Context, sliceID int64, actor string) (slicehub.Slice, error) {
	const op = "scheduler.restart"
	before, sl, changed, err := s.apply(ctx, op, sliceID, actor, opSpec{
		done:   []slicehub.SliceState{slicehub.StateProvisioning},
		change: slicehub.Restart(actor, "restarted by "+actor),
		prepare: func(ctx context.Context, sl slicehub.Slice) error {
			if sl.State == slicehub.StateFailed {
				return s.store.ResetFailures(ctx, sl.ID)
			}
			return nil
		},
	})
	if err == nil && changed {
		s.stopAfterOp(ctx, op, before)
	}
	return sl, err
}

// Retire stops and purges a slice for good and releases its user. The
// leader then takes a final pg_dump of its database into DumpDir and drops
// the database after DBRetention (see retention). Retiring a retired slice
// does nothing.
func (s *Scheduler) Retire(ctx context.Context, sliceID int64, actor string) (slicehub.Slice, error) {
	const op = "scheduler.retire"
	var out slicehub.Slice
	before, sl, changed, err := s.apply(ctx, op, sliceID, actor, opSpec{
		done:   []slicehub.SliceState{slicehub.StateRetired},
		change: slicehub.Retire(actor, "retired by "+actor),
		commit: func(ctx context.Context, c slicehub.Change) (slicehub.Slice, error) {
			var err error
			out, err = s.store.Retire(ctx, sliceID, c.From, c.Actor, c.Reason, true)
			return out, err
		},
	})
	if err == nil && changed {
		s.stopAfterOp(ctx, op, before)
	}
	return sl, err
}

// Reassign binds a slice to another user, or moves a user to another
// slice (postgres.DB.Reassign says what happens to the slices and users
// left behind). Admins only: the actor must be "admin:<id>". Binding a
// slice to the user it already serves does nothing.
func (s *Scheduler) Reassign(ctx context.Context, sliceID, userID int64, actor string) (slicehub.Slice, error) {
	const op = "scheduler.reassign"
	if !strings.HasPrefix(actor, "admin:") {
		s.cfg.Metrics.Operations.WithLabelValues("reassign", "error").Inc()
		return slicehub.Slice{}, slicehub.Errorf(op, slicehub.KindForbidden, "admin_only", "only an admin may reassign slices")
	}
	if err := checkActor(op, actor); err != nil {
		return slicehub.Slice{}, err
	}
	if userID <= 0 {
		return slicehub.Slice{}, slicehub.Errorf(op, slicehub.KindInvalid, "invalid_user", "a user id is required")
	}
	before, err := s.store.Slice(ctx, sliceID)
	if err != nil {
		s.cfg.Metrics.Operations.WithLabelValues("reassign", "error").Inc()
		return before, err
	}
	sl, err := s.store.Reassign(ctx, sliceID, userID, actor)
	if err != nil {
		s.cfg.Metrics.Operations.WithLabelValues("reassign", "error").Inc()
		return sl, err
	}
	result := "done"
	if before.UserID == userID {
		result = "noop"
	}
	s.cfg.Metrics.Operations.WithLabelValues("reassign", result).Inc()
	s.log.Info("slice operation", "op", "reassign", "slice_id", sliceID, "user_id", userID, "from_user", before.UserID, "actor", actor, "result", result)
	s.Kick() // a slice left behind is parked: the leader stops its job
	return sl, nil
}

// opSpec describes one operation for apply.
type opSpec struct {
	// done: the slice is already where the operation would bring it.
	done []slicehub.SliceState
	// change is the transition (slicehub's constructor): its From are the
	// states the operation applies to; any other is a conflict.
	change slicehub.Change
	check  func(slicehub.Slice) error
	// prepare runs before the transition (only when it will be attempted).
	prepare func(context.Context, slicehub.Slice) error
	// commit replaces the store's Transition for operations with a store
	// method of their own; it gets the change narrowed to the state read.
	commit func(context.Context, slicehub.Change) (slicehub.Slice, error)
}

// apply runs an operation as one guarded transition from the state just
// read. When another actor moves the slice in between, the transition
// fails with a conflict and apply looks again: the slice may now be done
// (a concurrent twin won) or in a state the operation refuses. It returns
// the slice before and after, and whether this call changed it.
func (s *Scheduler) apply(ctx context.Context, op string, id int64, actor string, spec opSpec) (before, after slicehub.Slice, changed bool, err error) {
	name := strings.TrimPrefix(op, "scheduler.")
	defer func() {
		result := "done"
		switch {
		case err != nil:
			result = "error"
		case !changed:
			result = "noop"
		}
		s.cfg.Metrics.Operations.WithLabelValues(name, result).Inc()
		if err == nil {
			s.log.Info("slice operation", "op", name, "slice_id", id, "actor", actor, "result", result, "state", after.State)
		}
	}()
	if err := checkActor(op, actor); err != nil {
		return before, after, false, err
	}
	for attempt := 0; attempt < 3; attempt++ {
		before, err = s.store.Slice(ctx, id)
		if err != nil {
			return before, before, false, err
		}
		if contains(spec.done, before.State) && (spec.check == nil || spec.check(before) == nil) {
			return before, before, false, nil
		}
		if !spec.change.StartsFrom(before.State) {
			return before, before, false, slicehub.Errorf(op, slicehub.KindConflict, "slice_state", "cannot %s a %s slice", name, before.State)
		}
		if spec.check != nil {
			if err := spec.check(before); err != nil {
				return before, before, false, err
			}
		}
		if spec.prepare != nil {
			if err := spec.prepare(ctx, before); err != nil {
				return before, before, false, err
			}
		}
		c := spec.change.At(before.State)
		if spec.commit != nil {
			after, err = spec.commit(ctx, c)
		} else {
			after, err = s.store.Transition(ctx, id, c)
		}
		if slicehub.KindOf(err) == slicehub.KindConflict {
			continue // moved under us: look again
		}
		if err != nil {
			return before, after, false, err
		}
		s.Kick()
		return before, after, true, nil
	}
	return before, before, false, slicehub.Errorf(op, slicehub.KindConflict, "concurrent_change", "the slice keeps changing; try again")
}

// stopAfterOp stops the job a slice had before an operation took it out of
// service. A failure is only logged: the leader's reconcile stops any job
// that no running slice owns.
func (s *Scheduler) stopAfterOp(ctx context.Context, op string, before slicehub.Slice) {
	if before.JobID == "" {
		return
	}
	if err := s.nomad.Stop(ctx, before.JobID, true); err != nil {
		s.log.Warn("could not stop the job after an operation; the reconcile will", "op", op, "slice_id", before.ID, "job_id", before.JobID, "err", err)
	}
}

func checkActor(op, actor string) error {
	if actor == "" || len(actor) > 100 || strings.ContainsAny(actor, "\r\n") {
		return slicehub.Errorf(op, slicehub.KindInvalid, "invalid_actor", "an actor (who asks) is required")
	}
	return nil
}

func contains(set []slicehub.SliceState, s slicehub.SliceState) bool {
	for _, v := range set {
		if v == s {
			return true
		}
	}
	return false
}
