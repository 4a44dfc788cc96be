package main

import (
	"fmt"
	"strings"
	"testing"

	"github.com/slicehub/slicehub/postgres"
	"github.com/slicehub/slicehub/scheduler"
	"github.com/slicehub/slicehub/testsupport"
)

// The pool settings an admin stored reach a starting (or notified)
// replica's scheduler; a stored target above this replica's max_slices is
// refused and the previous one holds.
func TestStoredPoolSettingsApplied(t *testing.T) {
	ctx := t.Context()
	log := testsupport.Logger(t)
	db := migratedDB(t)
	m := &Main{DB: db, Log: log,
		Scheduler: scheduler.New(db, nil, nil, scheduler.Config{MinWarm: 1, MaxSlices: 5, Logger: log})}

	m.applyPoolSettings(ctx) // nothing stored: the configuration holds
	if m.Scheduler.Paused() || m.Scheduler.MinWarm() != 1 {
		t.Fatalf("with nothing stored: paused=%v min_warm=%d; want false, 1", m.Scheduler.Paused(), m.Scheduler.MinWarm())
	}
	if err := db.SetPoolPaused(ctx, true, "admin:1"); err != nil {
		t.Fatal(err)
	}
	if err := db.SetPoolMinWarm(ctx, 3, "admin:1"); err != nil {
		t.Fatal(err)
	}
	m.applyPoolSettings(ctx)
	if !m.Scheduler.Paused() || m.Scheduler.MinWarm() != 3 {
		t.Fatalf("after applying: paused=%v min_warm=%d; want true, 3", m.Scheduler.Paused(), m.Scheduler.MinWarm())
	}
	if err := db.SetPoolMinWarm(ctx, 9, "admin:1"); err != nil {
		t.Fatal(err)
	}
	m.applyPoolSettings(ctx)
	if m.Scheduler.MinWarm() != 3 {
		t.Errorf("a stored target above max_slices: min_warm=%d; want 3 kept", m.Scheduler.MinWarm())
	}
}

// The dashboard's audit log: slice transitions and the other admin actions
// together, newest first, without the slice actions twice.
func TestAuditLogMergesAdminActions(t *testing.T) {
	ctx := t.Context()
	db := migratedDB(t)
	sl, err := db.CreateSlice(ctx, 0, "scheduler", "warm pool")
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range []postgres.AdminAudit{
		{Actor: "admin:1", Action: "suspend", Target: fmt.Sprintf("slice:%d", sl.ID)}, // in slice_events already
		{Actor: "admin:1", Action: "slice_backup", Target: fmt.Sprintf("slice:%d", sl.ID)},
		{Actor: "admin:1", KeyID: 2, Action: "disable_user", Target: "user:7", Detail: map[string]any{"user_id": 7}},
	} {
		if err := db.Audit(ctx, a); err != nil {
			t.Fatal(err)
		}
	}
	evs, err := auditLog{db}.RecentSliceEvents(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range evs {
		got = append(got, fmt.Sprintf("%d %s %s", e.SliceID, e.Actor, e.To))
	}
	want := []string{"0 admin:1 disable_user", fmt.Sprintf("%d admin:1 slice_backup", sl.ID), fmt.Sprintf("%d scheduler provisioning", sl.ID)}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("audit log = %q; want %q", got, want)
	}
	if evs[0].Reason != `user:7 {"user_id": 7}` || evs[0].ID >= 0 {
		t.Errorf("the disable's row: id %d, reason %q; want a negative id and the target with its details", evs[0].ID, evs[0].Reason)
	}
}
