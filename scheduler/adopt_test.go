package scheduler_test

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/slicehub/slicehub"
	"github.com/slicehub/slicehub/scheduler"
)

// The hand-dispatch cases on the fake Nomad (fast, every branch); the same
// flows run on real Nomad and Consul in TestRealHandDispatches.

const handActor = "operator:nomad-dispatch"

// lastEvent returns the newest event of slice id.
func lastEvent(t testing.TB, e *env, id int64) slicehub.SliceEvent {
	t.Helper()
	evs, err := e.db.SliceEvents(context.Background(), id)
	if err != nil || len(evs) == 0 {
		t.Fatalf("events of slice %d: %v, %v", id, evs, err)
	}
	return evs[len(evs)-1]
}

// freeID is an id no slice holds yet, in this test's range.
func freeID(t testing.TB, e *env) int64 {
	t.Helper()
	var last int64
	if err := e.db.Pool.QueryRow(context.Background(), `SELECT last_value FROM slices_id_seq`).Scan(&last); err != nil {
		t.Fatal(err)
	}
	return last + 50
}

func TestHandDispatchOfANewIDBecomesAWarmSliceOfThePool(t *testing.T) {
	e := newEnv(t, scheduler.Config{MinWarm: 1, MaxSlices: 10})
	e.settle(t)
	ctx := context.Background()
	id := freeID(t, e)
	before := e.nomad.dispatchCount()
	job, alloc := e.nomad.handDispatch(strconv.FormatInt(id, 10))
	e.reconcile(t)

	sl := e.slice(t, id)
	if sl.State != slicehub.StateProvisioning || sl.JobID != job || sl.Restarts != 0 {
		t.Fatalf("adopted slice %+v; want provisioning with job %s, generation 0", sl, job)
	}
	evs, _ := e.db.SliceEvents(ctx, id)
	if len(evs) < 2 || evs[0].Actor != handActor || !strings.Contains(evs[0].Reason, job) ||
		!strings.Contains(evs[0].Reason, "Nomad does not record which operator") {
		t.Fatalf("events %+v; want the first by %s naming %s and saying Nomad does not record the operator", evs, handActor, job)
	}
	// Its database and role exist: the allocation's bootstrap succeeds.
	creds, err := e.sched.Bootstrap(ctx, slicehub.BootstrapRequest{SliceID: strconv.FormatInt(id, 10), AllocID: alloc})
	if err != nil || creds.DatabaseURL == "" {
		t.Fatalf("bootstrap of the hand-dispatched allocation: %+v, %v", creds, err)
	}
	writeAsSlice(t, creds.DatabaseURL, `CREATE TABLE adopted (x int)`)
	// The id sequence moved past it.
	next, err := e.db.CreateSlice(ctx, 0, "test", "after the adoption")
	if err != nil || next.ID <= id {
		t.Fatalf("next slice id %d, %v; want past %d", next.ID, err, id)
	}
	if _, err := e.sched.Retire(ctx, next.ID, "admin:1"); err != nil {
		t.Fatal(err)
	}
	// It joins the pool: warm once healthy, and the pool does not dispatch
	// a slice of its own for it.
	e.healAll(t)
	e.reconcile(t)
	if got := e.slice(t, id); got.State != slicehub.StateWarm || got.JobID != job {
		t.Fatalf("after health: %+v; want warm on %s", got, job)
	}
	if d := e.nomad.dispatchCount(); d != before {
		t.Errorf("the scheduler dispatched %d children after the hand dispatch; want none", d-before)
	}
	if n := value(t, e.cfg.Metrics.Repairs.WithLabelValues("hand_adopted")); n != 1 {
		t.Errorf("repairs{hand_adopted} = %v, want 1", n)
	}
}

// A slice whose job is gone takes a hand dispatch as its new allocation
// (the operator's restart): same user, same database, next generation, and
// the scheduler does not dispatch one of its own.
func TestHandDispatchRestartsASliceWithoutALiveJob(t *testing.T) {
	e := newEnv(t, scheduler.Config{MinWarm: 1, MaxSlices: 10})
	e.settle(t)
	ctx := context.Background()
	u := e.user(t, "restart@example.com")
	sl, err := e.sched.Claim(ctx, u)
	if err != nil {
		t.Fatal(err)
	}
	e.settle(t)
	if err := e.nomad.Stop(ctx, sl.JobID, true); err != nil { // lost
		t.Fatal(err)
	}
	e.routes.set(sl.ID, false) // and its registration with it
	before := e.nomad.dispatchCount()
	job, _ := e.nomad.handDispatch(sl.IDString())
	e.reconcile(t)
	got := e.slice(t, sl.ID)
	if got.JobID != job || got.State != slicehub.StateProvisioning || got.UserID != u || got.Restarts != sl.Restarts+1 {
		t.Fatalf("after the hand dispatch %+v; want provisioning for user %d on %s, generation %d", got, u, job, sl.Restarts+1)
	}
	if ev := lastEvent(t, e, sl.ID); ev.Actor != handActor || !strings.Contains(ev.Reason, "operator's restart") {
		t.Errorf("last event %+v; want the operator's restart by %s", ev, handActor)
	}
	if d := e.nomad.dispatchCount(); d != before {
		t.Errorf("the scheduler dispatched %d children of its own", d-before)
	}
	e.healAll(t)
	e.reconcile(t)
	if got := e.slice(t, sl.ID); got.State != slicehub.StateAssigned || got.UserID != u {
		t.Fatalf("after health %+v; want assigned to %d again", got, u)
	}

	// A failed slice too, with a fresh restart budget.
	if _, err := e.db.Transition(ctx, sl.ID, slicehub.Change{From: []slicehub.SliceState{slicehub.StateAssigned},
		To: slicehub.StateFailed, Actor: "test", Reason: "budget"}); err != nil {
		t.Fatal(err)
	}
	e.reconcile(t) // stops its job
	e.routes.set(sl.ID, false)
	job2, _ := e.nomad.handDispatch(sl.IDString())
	e.reconcile(t)
	if got := e.slice(t, sl.ID); got.JobID != job2 || got.State != slicehub.StateProvisioning {
		t.Fatalf("failed slice after a hand dispatch %+v; want provisioning on %s", got, job2)
	}
}

// A duplicate never replaces the live allocation; a suspended slice stays
// suspended; a retired id is never used again; a malformed dispatch is
// stopped. Each leaves an event.
func TestHandDispatchesThatAreRefused(t *testing.T) {
	e := newEnv(t, scheduler.Config{MinWarm: 1, MaxSlices: 10})
	e.settle(t)
	ctx := context.Background()
	warm := e.sliceIn(t, slicehub.StateWarm)

	dup, _ := e.nomad.handDispatch(warm.IDString())
	e.reconcile(t)
	if e.nomad.running(dup) {
		t.Fatal("the duplicate still runs")
	}
	if got := e.slice(t, warm.ID); got.JobID != warm.JobID || got.State != slicehub.StateWarm || !e.nomad.running(warm.JobID) {
		t.Fatalf("slice %+v after a duplicate; want warm on %s, still running", got, warm.JobID)
	}
	if ev := lastEvent(t, e, warm.ID); ev.Actor != handActor || !strings.Contains(ev.Reason, "duplicate") ||
		!strings.Contains(ev.Reason, dup) || ev.From != slicehub.StateWarm || ev.To != slicehub.StateWarm {
		t.Errorf("last event %+v; want a duplicate %s recorded by %s", ev, dup, handActor)
	}

	// Suspended.
	u := e.user(t, "suspended@example.com")
	sl, err := e.sched.Claim(ctx, u)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.sched.Suspend(ctx, sl.ID, "billing"); err != nil {
		t.Fatal(err)
	}
	e.reconcile(t)
	susp, _ := e.nomad.handDispatch(sl.IDString())
	e.reconcile(t)
	if e.nomad.running(susp) {
		t.Fatal("a hand dispatch of a suspended slice still runs")
	}
	if got := e.slice(t, sl.ID); got.State != slicehub.StateSuspended {
		t.Fatalf("slice %+v; want it still suspended", got)
	}
	if ev := lastEvent(t, e, sl.ID); !strings.Contains(ev.Reason, "suspended and stays so") {
		t.Errorf("last event %+v; want the refusal recorded", ev)
	}

	// Retired.
	if _, err := e.sched.Retire(ctx, sl.ID, "admin:1"); err != nil {
		t.Fatal(err)
	}
	ret, _ := e.nomad.handDispatch(sl.IDString())
	e.reconcile(t)
	if e.nomad.running(ret) {
		t.Fatal("a hand dispatch of a retired slice still runs")
	}
	if ev := lastEvent(t, e, sl.ID); ev.To != slicehub.StateRetired || !strings.Contains(ev.Reason, "retired") {
		t.Errorf("last event %+v; want the refusal recorded on the retired slice", ev)
	}

	// Malformed: recorded in the admin audit.
	bad, _ := e.nomad.handDispatch("not-a-number")
	e.reconcile(t)
	if e.nomad.running(bad) {
		t.Fatal("a malformed dispatch still runs")
	}
	audits, err := e.db.AdminAudits(ctx, 10)
	if err != nil || len(audits) == 0 || audits[0].Target != bad || audits[0].Actor != handActor {
		t.Fatalf("admin audit %+v, %v; want the stopped %s", audits, err, bad)
	}
	for kind, want := range map[string]float64{"hand_duplicate": 1, "hand_suspended": 1, "hand_retired": 1, "hand_malformed": 1} {
		if n := value(t, e.cfg.Metrics.Repairs.WithLabelValues(kind)); n != want {
			t.Errorf("repairs{%s} = %v, want %v", kind, n, want)
		}
	}
}

// Two hand dispatches of one new id: the first becomes the slice, the
// second is its duplicate.
func TestTwoHandDispatchesOfOneNewID(t *testing.T) {
	e := newEnv(t, scheduler.Config{MinWarm: 0, MaxSlices: 10})
	id := freeID(t, e)
	first, _ := e.nomad.handDispatch(fmt.Sprint(id))
	second, _ := e.nomad.handDispatch(fmt.Sprint(id))
	e.reconcile(t)
	if got := e.slice(t, id); got.JobID != first {
		t.Fatalf("slice %+v; want it on the first dispatch %s", got, first)
	}
	if e.nomad.running(second) || !e.nomad.running(first) {
		t.Fatalf("first running %v, second running %v; want only the first", e.nomad.running(first), e.nomad.running(second))
	}
}
