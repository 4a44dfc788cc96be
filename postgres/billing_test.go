package postgres_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/slicehub/slicehub"
	"github.com/slicehub/slicehub/postgres"
)

// The package's TestMain (accounts_test.go) starts PostgreSQL.

func billingUser(t *testing.T, db *postgres.DB, email string) slicehub.User {
	t.Helper()
	u, err := db.CreateUser(t.Context(), email, "$argon2id$x")
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func TestBillingAccountAndCustomer(t *testing.T) {
	db := openDB(t)
	ctx := t.Context()
	u := billingUser(t, db, "pay@example.com")

	if _, err := db.BillingAccount(ctx, u.ID); slicehub.KindOf(err) != slicehub.KindNotFound {
		t.Fatalf("BillingAccount before any: %v, want not found", err)
	}
	a1, err := db.EnsureBillingAccount(ctx, u.ID)
	if err != nil {
		t.Fatal(err)
	}
	a2, err := db.EnsureBillingAccount(ctx, u.ID)
	if err != nil {
		t.Fatal(err)
	}
	if a1.CustomerNonce == "" || a1.CustomerNonce != a2.CustomerNonce {
		t.Fatalf("nonce %q then %q: want one, fixed at creation", a1.CustomerNonce, a2.CustomerNonce)
	}
	if _, err := db.EnsureBillingAccount(ctx, 999999); slicehub.KindOf(err) != slicehub.KindNotFound {
		t.Errorf("EnsureBillingAccount(unknown user) = %v, want not found", err)
	}

	a, err := db.SetBillingCustomer(ctx, u.ID, "cus_first")
	if err != nil || a.CustomerID != "cus_first" {
		t.Fatalf("SetBillingCustomer = %+v, %v", a, err)
	}
	a, err = db.SetBillingCustomer(ctx, u.ID, "cus_second")
	if err != nil || a.CustomerID != "cus_first" {
		t.Fatalf("second SetBillingCustomer = %+v, %v: the first customer must win", a, err)
	}
	other := billingUser(t, db, "other@example.com")
	db.EnsureBillingAccount(ctx, other.ID)
	if _, err := db.SetBillingCustomer(ctx, other.ID, "cus_first"); slicehub.KindOf(err) != slicehub.KindConflict {
		t.Errorf("a customer given to two accounts: %v, want conflict", err)
	}

	// Save and read back every mutable field; zero times stay NULL.
	end := time.Date(2027, 1, 2, 3, 4, 5, 0, time.UTC)
	err = db.InBillingTx(ctx, func(tx postgres.BillingTx) error {
		a, err := tx.LockBillingAccountByCustomer(ctx, "cus_first")
		if err != nil {
			return err
		}
		a.SubscriptionID, a.Status, a.PriceID, a.CurrentPeriodEnd, a.CancelAtPeriodEnd = "sub_1", "past_due", "price_r", end, true
		a.PastDueSince, a.Complimentary, a.ComplimentaryReason, a.LaunchPrice = end.Add(-time.Hour), true, "friend", true
		return tx.SaveBillingAccount(ctx, a)
	})
	if err != nil {
		t.Fatal(err)
	}
	a, _ = db.BillingAccount(ctx, u.ID)
	if a.SubscriptionID != "sub_1" || a.Status != "past_due" || !a.CurrentPeriodEnd.Equal(end) || !a.CancelAtPeriodEnd ||
		!a.PastDueSince.Equal(end.Add(-time.Hour)) || !a.Complimentary || a.ComplimentaryReason != "friend" || !a.LaunchPrice ||
		!a.EndedAt.IsZero() || !a.SuspendedAt.IsZero() {
		t.Errorf("saved account read back as %+v", a)
	}
	err = db.InBillingTx(ctx, func(tx postgres.BillingTx) error {
		_, err := tx.LockBillingAccountByCustomer(ctx, "cus_nobody")
		return err
	})
	if slicehub.KindOf(err) != slicehub.KindNotFound {
		t.Errorf("locking an unknown customer: %v, want not found", err)
	}
	ids, err := db.BillingAttention(ctx)
	if err != nil || len(ids) != 1 || ids[0] != u.ID {
		t.Errorf("BillingAttention = %v, %v; want the past-due user only", ids, err)
	}
}

// errRollback makes InBillingTx roll back.
var errRollback = errors.New("roll back")

// A delivery of an event waits for a concurrent delivery of the same
// event, then finds it recorded; if the first rolled back, it records it.
func TestRecordBillingEventOnce(t *testing.T) {
	db := openDB(t)
	ctx := t.Context()
	ev := postgres.BillingEvent{ID: "evt_1", Type: "invoice.paid", CreatedAt: time.Now(), Outcome: "applied"}

	// The first delivery records the event and holds its transaction open
	// until release; then it rolls back.
	recorded, release, firstDone := make(chan error, 1), make(chan struct{}), make(chan error, 1)
	go func() {
		firstDone <- db.InBillingTx(context.Background(), func(tx postgres.BillingTx) error {
			fresh, err := tx.RecordBillingEvent(context.Background(), ev)
			if err == nil && !fresh {
				err = errors.New("not fresh")
			}
			recorded <- err
			<-release
			return errRollback
		})
	}()
	if err := <-recorded; err != nil {
		close(release)
		t.Fatalf("first record: %v", err)
	}
	second := make(chan bool, 1)
	go func() {
		var fresh bool
		_ = db.InBillingTx(context.Background(), func(tx postgres.BillingTx) error {
			var err error
			fresh, err = tx.RecordBillingEvent(context.Background(), ev)
			return err
		})
		second <- fresh
	}()
	select {
	case <-second:
		close(release)
		t.Fatal("the second delivery did not wait for the first")
	case <-time.After(200 * time.Millisecond):
	}
	close(release)
	if err := <-firstDone; !errors.Is(err, errRollback) {
		t.Fatalf("first delivery: %v, want its rollback", err)
	}
	if !<-second {
		t.Error("after the first rolled back, the second did not record the event")
	}
	err := db.InBillingTx(ctx, func(tx postgres.BillingTx) error {
		fresh, err := tx.RecordBillingEvent(ctx, ev)
		if fresh {
			t.Error("a third delivery recorded the event again")
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if seen, err := db.BillingEventSeen(ctx, "evt_1"); err != nil || !seen {
		t.Errorf("BillingEventSeen = %t, %v", seen, err)
	}
}

func TestRetireAndReleaseForBilling(t *testing.T) {
	db := openDB(t)
	ctx := t.Context()
	u := billingUser(t, db, "gone@example.com")
	sl, err := db.CreateSlice(ctx, u.ID, "test", "test")
	if err != nil {
		t.Fatal(err)
	}
	inTx := func(fn func(tx postgres.BillingTx) error) error { return db.InBillingTx(ctx, fn) }

	// Only a suspended slice is retired this way.
	err = inTx(func(tx postgres.BillingTx) error {
		_, err := tx.RetireSuspendedSlice(ctx, sl.ID, "billing", "test", "/exports/x.dump")
		return err
	})
	if slicehub.KindOf(err) != slicehub.KindConflict {
		t.Fatalf("retiring a provisioning slice: %v, want conflict", err)
	}
	if _, err := db.Transition(ctx, sl.ID, slicehub.Change{From: []slicehub.SliceState{slicehub.StateProvisioning},
		To: slicehub.StateSuspended, Actor: "billing", Reason: "test"}); err != nil {
		t.Fatal(err)
	}
	err = inTx(func(tx postgres.BillingTx) error {
		got, ok, err := tx.UserSlice(ctx, u.ID)
		if err != nil || !ok || got.ID != sl.ID {
			t.Errorf("UserSlice = %+v, %t, %v", got, ok, err)
		}
		_, err = tx.RetireSuspendedSlice(ctx, sl.ID, "billing", "retention over", "/exports/x.dump")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	got, _ := db.Slice(ctx, sl.ID)
	if got.State != slicehub.StateRetired || got.UserID != u.ID {
		t.Errorf("retired slice %+v: want retired, still bound", got)
	}
	rs, err := db.Retirements(ctx)
	if err != nil || len(rs) != 1 || !rs[0].NeedsDump || rs[0].DumpPath != "/exports/x.dump" {
		t.Errorf("Retirements = %+v, %v: want the export as the final dump", rs, err)
	}

	if err := inTx(func(tx postgres.BillingTx) error { return tx.ReleaseRetiredSlice(ctx, sl.ID, "billing", "paid again") }); err != nil {
		t.Fatal(err)
	}
	got, _ = db.Slice(ctx, sl.ID)
	evs, _ := db.SliceEvents(ctx, sl.ID)
	if got.UserID != 0 || evs[len(evs)-1].Actor != "billing" {
		t.Errorf("released slice %+v, last event %+v", got, evs[len(evs)-1])
	}
	if err := inTx(func(tx postgres.BillingTx) error { return tx.ReleaseRetiredSlice(ctx, sl.ID, "billing", "again") }); slicehub.KindOf(err) != slicehub.KindConflict {
		t.Errorf("releasing twice: %v, want conflict", err)
	}
	err = inTx(func(tx postgres.BillingTx) error {
		_, ok, err := tx.UserSlice(ctx, u.ID)
		if ok {
			t.Error("the user still has a slice")
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}

	// Exports are found by user, slice and time.
	at := time.Date(2027, 3, 1, 0, 0, 0, 0, time.UTC)
	ex, err := db.AddBillingExport(ctx, postgres.BillingExport{UserID: u.ID, SliceID: sl.ID, Path: "/exports/x.dump", SizeBytes: 42, CreatedAt: at},
		postgres.BillingAudit{UserID: u.ID, Actor: "billing", Action: "export_written"})
	if err != nil || !ex.CreatedAt.Equal(at) {
		t.Fatalf("AddBillingExport = %+v, %v", ex, err)
	}
	if _, ok, _ := db.SliceExport(ctx, u.ID, sl.ID, at); !ok {
		t.Error("SliceExport does not find an export made at since")
	}
	if _, ok, _ := db.SliceExport(ctx, u.ID, sl.ID, at.Add(time.Second)); ok {
		t.Error("SliceExport finds an export made before since")
	}
	if audit, _ := db.BillingAuditOf(ctx, u.ID); len(audit) != 1 {
		t.Errorf("audit %+v, want the export's line", audit)
	}
}

func TestBillingLockIsExclusive(t *testing.T) {
	db := openDB(t)
	ctx := t.Context()
	release, ok, err := db.TryBillingLock(ctx)
	if err != nil || !ok {
		t.Fatalf("first TryBillingLock = %t, %v", ok, err)
	}
	if _, ok2, err := db.TryBillingLock(ctx); err != nil || ok2 {
		t.Fatalf("second TryBillingLock while held = %t, %v; want false", ok2, err)
	}
	release()
	release2, ok, err := db.TryBillingLock(ctx)
	if err != nil || !ok {
		t.Fatalf("TryBillingLock after release = %t, %v", ok, err)
	}
	release2()
}
