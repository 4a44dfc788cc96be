package scheduler_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/slicehub/slicehub"
	"github.com/slicehub/slicehub/scheduler"
)

// inFlight counts dispatched slices that are not healthy yet: what the
// dispatch cap bounds.
func (e *env) inFlight(t testing.TB) int {
	t.Helper()
	rows, err := e.db.Slices(context.Background(), slicehub.StateProvisioning)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, sl := range rows {
		if sl.JobID != "" {
			n++
		}
	}
	return n
}

// Six users claim an empty pool at once with a cap of two dispatches in
// flight: never more than two are dispatched and unhealthy, every user is
// served, and those waiting see their places, in claim order, move up.
func TestDispatchCapHoldsAndQueuesInOrder(t *testing.T) {
	e := newEnv(t, scheduler.Config{MinWarm: 0, MaxSlices: 50, Admission: scheduler.Admission{Dispatches: 2}})
	ctx := context.Background()
	var users []int64
	for i := range 6 {
		u := e.user(t, fmt.Sprintf("burst%d@example.com", i))
		if _, err := e.sched.Claim(ctx, u); err != nil {
			t.Fatal(err)
		}
		users = append(users, u)
	}
	served := map[int64]bool{}
	for round := 0; len(served) < len(users); round++ {
		if round > 10 {
			t.Fatalf("not every user served after %d rounds: %v", round, served)
		}
		e.reconcile(t)
		if n := e.inFlight(t); n > 2 {
			t.Fatalf("round %d: %d slices in flight, cap 2", round, n)
		}
		if got := value(t, e.cfg.Metrics.DispatchesInFlight); got > 2 {
			t.Fatalf("round %d: in-flight gauge %v, cap 2", round, got)
		}
		// The waiting users' places: 1, 2, ... in the order they claimed.
		want := 1
		for _, u := range users {
			p, err := e.sched.Progress(ctx, u)
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case p.JobID != "" || p.State != slicehub.StateProvisioning:
				if p.Queue != nil {
					t.Fatalf("round %d: user %d dispatched (%s) but queued %+v", round, u, p.State, p.Queue)
				}
			case p.Queue == nil || p.Queue.For != slicehub.QueueDispatch || p.Queue.Position != want:
				t.Fatalf("round %d: user %d progress %+v queue %+v; want dispatch place %d", round, u, p, p.Queue, want)
			default:
				want++
			}
		}
		e.healAll(t)
		e.reconcile(t)
		for _, u := range users {
			if sl, err := e.db.SliceForUser(ctx, u); err == nil && sl.State == slicehub.StateAssigned {
				served[u] = true
			}
		}
	}
	if n := e.nomad.dispatchCount(); n != len(users) {
		t.Fatalf("%d dispatches for %d users", n, len(users))
	}
}

// Without a cap nothing waits: all six are dispatched in one pass.
func TestNoDispatchCapDispatchesAll(t *testing.T) {
	e := newEnv(t, scheduler.Config{MinWarm: 0, MaxSlices: 50})
	ctx := context.Background()
	for i := range 6 {
		if _, err := e.sched.Claim(ctx, e.user(t, fmt.Sprintf("nocap%d@example.com", i))); err != nil {
			t.Fatal(err)
		}
	}
	e.reconcile(t)
	if n := e.inFlight(t); n != 6 {
		t.Fatalf("%d in flight without a cap, want 6", n)
	}
}

// The pairing gate: one QR code at a time per host, two linking or
// importing; places in the order asked; a permit moves on as the slice
// links and imports, expires when nobody renews it, and hosts do not share
// caps.
func TestPairingGate(t *testing.T) {
	e := newEnv(t, scheduler.Config{MinWarm: 5, MaxSlices: 10,
		Admission: scheduler.Admission{Pairings: 1, Imports: 2, TTL: time.Minute, PairingHold: 5 * time.Minute, ImportHold: 10 * time.Minute}})
	e.settle(t)
	rows, err := e.db.Slices(context.Background(), slicehub.StateWarm)
	if err != nil || len(rows) != 5 {
		t.Fatalf("%d warm slices, %v; want 5", len(rows), err)
	}
	ctx := context.Background()
	for i, sl := range rows {
		host := "10.0.0.1"
		if i == 4 {
			host = "10.0.0.2"
		}
		if _, err := e.db.Pool.Exec(ctx, `UPDATE slices SET alloc_addr = $2 WHERE id = $1`, sl.ID, fmt.Sprintf("%s:%d", host, 20000+i)); err != nil {
			t.Fatal(err)
		}
	}
	s1, s2, s3, s4, other := rows[0].ID, rows[1].ID, rows[2].ID, rows[3].ID, rows[4].ID
	ask := func(id int64, wa string, importing bool, wantGranted bool, wantPos int) {
		t.Helper()
		pm, err := e.sched.Pairing(ctx, id, wa, importing)
		if err != nil {
			t.Fatalf("Pairing(%d, %s, %v): %v", id, wa, importing, err)
		}
		pos := 0
		if pm.Queue != nil {
			pos = pm.Queue.Position
			if pm.Queue.For != slicehub.QueuePairing {
				t.Fatalf("Pairing(%d) queue %+v, want pairing", id, pm.Queue)
			}
		}
		if pm.Granted != wantGranted || pos != wantPos {
			t.Fatalf("Pairing(%d, %s, importing=%v) = granted %v place %d; want granted %v place %d", id, wa, importing, pm.Granted, pos, wantGranted, wantPos)
		}
	}
	ask(s1, slicehub.WAQR, false, true, 0)
	ask(s2, slicehub.WAQR, false, false, 1)
	ask(s3, slicehub.WAQR, false, false, 2)
	ask(other, slicehub.WAQR, false, true, 0) // another host: its own caps
	ask(s1, slicehub.WAQR, false, true, 0)    // renewed, still granted
	ask(s2, slicehub.WAQR, false, false, 1)
	// s1 links and imports: its QR slot goes to s2; imports 1 + pairing 1 = cap 2.
	ask(s1, slicehub.WAConnected, true, true, 0)
	ask(s2, slicehub.WAQR, false, true, 0)
	ask(s3, slicehub.WAQR, false, false, 1)
	// s1 done; s2 links and imports: s3's turn.
	ask(s1, slicehub.WAConnected, false, true, 0)
	ask(s2, slicehub.WAConnected, true, true, 0)
	ask(s3, slicehub.WAQR, false, true, 0)
	ask(s4, slicehub.WAQR, false, false, 1)
	// s3 closes its page: nobody renews its permit, and after the TTL s4
	// gets the code (s4 keeps asking, as its page polls).
	e.clock.Add(40 * time.Second)
	ask(s4, slicehub.WAQR, false, false, 1)
	e.clock.Add(40 * time.Second)
	ask(s2, slicehub.WAConnected, false, true, 0)
	ask(s4, slicehub.WAQR, false, true, 0)
	// s3 comes back: the back of the line.
	ask(s3, slicehub.WAQR, false, false, 1)
	// A granted code not linked within PairingHold (5 min; s4's was
	// granted 80 s in) goes to the next, and s4 joins the back of the line.
	for range 7 { // to 360 s: s4 still holds it
		e.clock.Add(40 * time.Second)
		ask(s3, slicehub.WAQR, false, false, 1)
		ask(s4, slicehub.WAQR, false, true, 0)
	}
	e.clock.Add(40 * time.Second) // 400 s
	ask(s3, slicehub.WAQR, false, true, 0)
	ask(s4, slicehub.WAQR, false, false, 1)
}

// Without caps the gate grants everything and keeps nothing.
func TestPairingGateOff(t *testing.T) {
	e := newEnv(t, scheduler.Config{MinWarm: 1, MaxSlices: 10})
	e.settle(t)
	sl := e.sliceIn(t, slicehub.StateWarm)
	pm, err := e.sched.Pairing(context.Background(), sl.ID, slicehub.WAQR, false)
	if err != nil || !pm.Granted || pm.Queue != nil {
		t.Fatalf("Pairing without caps = %+v, %v; want granted", pm, err)
	}
}

// A compromised slice reports "importing" forever, with its workspace page
// open (the gate is asked at every look). The gateway takes its word for
// one import permit per link: held at most ImportHold, never granted again
// for the same link (not by reporting done then importing, nor a QR code
// it was never granted), and once expired the other tenant waiting on the
// host gets the slot. A new pairing or a new allocation is a new link.
func TestHostileImportHoldsOnePermit(t *testing.T) {
	const hold = 3 * time.Minute
	e := newEnv(t, scheduler.Config{MinWarm: 2, MaxSlices: 10,
		Admission: scheduler.Admission{Pairings: 1, Imports: 1, TTL: time.Minute, PairingHold: 5 * time.Minute, ImportHold: hold}})
	e.settle(t)
	rows, err := e.db.Slices(context.Background(), slicehub.StateWarm)
	if err != nil || len(rows) != 2 {
		t.Fatalf("%d warm slices, %v; want 2", len(rows), err)
	}
	ctx := context.Background()
	for i, sl := range rows {
		if _, err := e.db.Pool.Exec(ctx, `UPDATE slices SET alloc_addr = $2, alloc_id = $3 WHERE id = $1`,
			sl.ID, fmt.Sprintf("10.0.0.1:%d", 20000+i), fmt.Sprintf("alloc-%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	hostile, tenant := rows[0].ID, rows[1].ID
	ask := func(id int64, wa string, importing bool) slicehub.Permit {
		t.Helper()
		pm, err := e.sched.Pairing(ctx, id, wa, importing)
		if err != nil {
			t.Fatalf("Pairing(%d, %s, %v): %v", id, wa, importing, err)
		}
		return pm
	}
	holding := func(id int64) bool {
		t.Helper()
		var n int
		if err := e.db.Pool.QueryRow(ctx, `SELECT count(*) FROM admission_permits WHERE slice_id = $1 AND kind IN ('pairing', 'import')`, id).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n > 0
	}

	if pm := ask(hostile, slicehub.WAQR, false); !pm.Granted {
		t.Fatalf("hostile's first QR code: %+v; want granted", pm)
	}
	ask(hostile, slicehub.WAConnected, true) // linked, importing: the one permit
	if pm := ask(tenant, slicehub.WAQR, false); pm.Granted || pm.Queue == nil || pm.Queue.Position != 1 {
		t.Fatalf("tenant while the import slot is held: %+v; want place 1", pm)
	}
	start := e.clock.Now()
	var servedAt time.Duration
	for step := 0; e.clock.Now().Sub(start) < 10*time.Minute; step++ {
		e.clock.Add(20 * time.Second)
		since := e.clock.Now().Sub(start)
		// The hostile slice tries each way to get its permit back: importing
		// at every look, done then importing, a QR code then importing.
		switch step % 3 {
		case 1:
			ask(hostile, slicehub.WAConnected, false)
		case 2:
			ask(hostile, slicehub.WAQR, false)
		}
		ask(hostile, slicehub.WAConnected, true)
		if holding(hostile) && since > hold {
			t.Fatalf("%v after its grant the hostile slice still holds a permit (hold %v)", since, hold)
		}
		pm := ask(tenant, slicehub.WAQR, false)
		if servedAt == 0 && pm.Granted {
			servedAt = since
		}
		if servedAt != 0 && !pm.Granted {
			t.Fatalf("%v: the tenant, granted at %v, lost its QR code to %+v", since, servedAt, pm)
		}
	}
	if servedAt == 0 || servedAt > hold+20*time.Second {
		t.Fatalf("the tenant got the slot at %v; want within one look after the hold (%v)", servedAt, hold)
	}
	// The tenant links: its link's import permit is granted and held.
	ask(tenant, slicehub.WAConnected, true)
	if !holding(tenant) {
		t.Fatal("the tenant's import holds no permit")
	}
	ask(tenant, slicehub.WAConnected, false)
	// A new pairing is a new link: the hostile slice, granted a QR code
	// again (at the back of the line), may hold one import again.
	if pm := ask(hostile, slicehub.WAQR, false); !pm.Granted {
		t.Fatalf("hostile's QR code with the host free: %+v; want granted", pm)
	}
	ask(hostile, slicehub.WAConnected, true)
	if !holding(hostile) {
		t.Fatal("a new pairing took no import permit")
	}
	e.clock.Add(hold + time.Second)
	ask(hostile, slicehub.WAConnected, true)
	if holding(hostile) {
		t.Fatal("the second link's import permit outlived the hold")
	}
	// So is a new allocation (the slice restarted, linked from its profile).
	if _, err := e.db.Pool.Exec(ctx, `UPDATE slices SET alloc_id = 'alloc-9' WHERE id = $1`, hostile); err != nil {
		t.Fatal(err)
	}
	ask(hostile, slicehub.WAConnected, true)
	if !holding(hostile) {
		t.Fatal("a new allocation's import took no permit")
	}
}
