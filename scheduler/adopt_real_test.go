package scheduler_test

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/slicehub/slicehub"
	"github.com/slicehub/slicehub/scheduler"
	"github.com/slicehub/slicehub/testsupport"
)

// Every hand-dispatch case on real Nomad, Consul and PostgreSQL, in the
// order an operator might meet them. Each dispatch is what
// `nomad job dispatch -meta slice_id=<id> <job>` sends.
func TestRealHandDispatches(t *testing.T) {
	r := newRealEnv(t)
	r.registerMock(t, nil)
	s := r.scheduler(t, scheduler.Config{MinWarm: 1, MaxSlices: 10})
	stop := run(t, s.Run)
	r.waitStates(t, 30*time.Second, map[slicehub.SliceState]int{slicehub.StateWarm: 1})
	ctx := context.Background()

	dispatch := func(meta string) string {
		t.Helper()
		resp, _, err := r.api.Jobs().Dispatch(r.name, map[string]string{slicehub.MetaSliceID: meta}, nil, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		return resp.DispatchedJobID
	}
	gone := func(job, what string) {
		t.Helper()
		testsupport.Eventually(t, 30*time.Second, what, func() (bool, error) {
			for _, c := range r.alive(t) {
				if c.JobID == job {
					return false, fmt.Errorf("%s still alive", job)
				}
			}
			return true, nil
		})
	}
	lastReason := func(id int64) string {
		t.Helper()
		evs, err := r.db.SliceEvents(ctx, id)
		if err != nil || len(evs) == 0 {
			t.Fatalf("events of %d: %v", id, err)
		}
		return evs[len(evs)-1].Reason
	}

	// 1. An id no row holds: a new warm slice, routed in Consul.
	var last int64
	if err := r.db.Pool.QueryRow(ctx, `SELECT last_value FROM slices_id_seq`).Scan(&last); err != nil {
		t.Fatal(err)
	}
	id := last + 77
	job := dispatch(strconv.FormatInt(id, 10))
	testsupport.Eventually(t, 30*time.Second, "the hand dispatch adopted, warm and routed", func() (bool, error) {
		sl, err := r.db.Slice(ctx, id)
		if err != nil {
			return false, err
		}
		_, routed := r.routes.Lookup(id)
		return sl.State == slicehub.StateWarm && sl.JobID == job && routed, fmt.Errorf("slice %+v routed %v", sl, routed)
	})
	evs, _ := r.db.SliceEvents(ctx, id)
	if evs[0].Actor != "operator:nomad-dispatch" || !strings.Contains(evs[0].Reason, job) {
		t.Errorf("first event %+v; want the operator's dispatch %s", evs[0], job)
	}
	var dbExists bool
	if err := r.db.Pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, slicehub.DatabaseName(id)).Scan(&dbExists); err != nil || !dbExists {
		t.Fatalf("database %s exists = %v, %v", slicehub.DatabaseName(id), dbExists, err)
	}
	if err := r.db.Pool.QueryRow(ctx, `SELECT last_value FROM slices_id_seq`).Scan(&last); err != nil || last < id {
		t.Fatalf("slices_id_seq at %d, %v; want at least %d", last, err, id)
	}
	if n := len(r.alive(t)); n != 2 {
		t.Errorf("%d children alive; want 2 (the pool's warm slice and the adopted one, nothing more)", n)
	}

	// 2. The same id again while it runs: a duplicate, stopped; the live
	// allocation stays.
	dup := dispatch(strconv.FormatInt(id, 10))
	gone(dup, "the duplicate stopped")
	if sl, _ := r.db.Slice(ctx, id); sl.JobID != job || sl.State != slicehub.StateWarm {
		t.Fatalf("slice after the duplicate %+v; want warm on %s", sl, job)
	}
	if why := lastReason(id); !strings.Contains(why, "duplicate") || !strings.Contains(why, dup) {
		t.Errorf("last event %q; want the duplicate %s", why, dup)
	}

	// 3. Its job lost while no scheduler runs, then dispatched by hand: the
	// dispatch is its new allocation (the operator's restart), not a
	// second one of the scheduler's.
	stop()
	if err := r.nomad.Stop(ctx, job, true); err != nil {
		t.Fatal(err)
	}
	restart := dispatch(strconv.FormatInt(id, 10))
	s = r.scheduler(t, scheduler.Config{MinWarm: 1, MaxSlices: 10})
	run(t, s.Run)
	testsupport.Eventually(t, 30*time.Second, "the restart adopted and warm", func() (bool, error) {
		sl, err := r.db.Slice(ctx, id)
		return err == nil && sl.JobID == restart && sl.State == slicehub.StateWarm && sl.Restarts == 1, fmt.Errorf("slice %+v, %v", sl, err)
	})

	// 4. A new user claims it (the only other warm slice is older, so
	// claim that one first), and it is routed.
	first, err := s.Claim(ctx, r.user(t, "first@example.com"))
	if err != nil {
		t.Fatal(err)
	}
	var mine slicehub.Slice
	if first.ID == id {
		mine = first
	} else if mine, err = s.Claim(ctx, r.user(t, "second@example.com")); err != nil {
		t.Fatal(err)
	}
	if mine.ID != id || mine.State != slicehub.StateAssigned {
		t.Fatalf("claims gave %d and %d; want the adopted %d assigned", first.ID, mine.ID, id)
	}
	if _, ok := r.routes.Lookup(id); !ok {
		t.Fatal("the adopted slice is not routed")
	}

	// 5. Suspended: a dispatch does not resume it.
	if _, err := s.Suspend(ctx, id, "billing"); err != nil {
		t.Fatal(err)
	}
	gone(restart, "the suspended slice's job stopped")
	susp := dispatch(strconv.FormatInt(id, 10))
	gone(susp, "the dispatch of a suspended slice stopped")
	if sl, _ := r.db.Slice(ctx, id); sl.State != slicehub.StateSuspended {
		t.Fatalf("slice %+v; want still suspended", sl)
	}
	if why := lastReason(id); !strings.Contains(why, "suspended and stays so") {
		t.Errorf("last event %q; want the refusal", why)
	}

	// 6. Retired: never used again.
	if _, err := s.Retire(ctx, id, "admin:1"); err != nil {
		t.Fatal(err)
	}
	ret := dispatch(strconv.FormatInt(id, 10))
	gone(ret, "the dispatch of a retired slice stopped")
	if why := lastReason(id); !strings.Contains(why, "retired") || !strings.Contains(why, ret) {
		t.Errorf("last event %q; want the refusal of %s", why, ret)
	}

	// 7. Malformed: stopped, in the admin audit.
	bad := dispatch("twelve")
	gone(bad, "the malformed dispatch stopped")
	audits, err := r.db.AdminAudits(ctx, 5)
	if err != nil || len(audits) == 0 || audits[0].Target != bad {
		t.Fatalf("admin audit %+v, %v; want the malformed %s", audits, err, bad)
	}
}
