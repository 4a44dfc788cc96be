package main

import (
	"testing"

	"github.com/slicehub/slicehub"
	"github.com/slicehub/slicehub/postgres"
)

// The dashboard's audit log shows each admin action once: the actions that
// slice_events records (slicehub.AdminActions' Event rows: transitions and
// notes) come from there, every other one from admin_audit.
func TestAuditLogShowsEachActionOnce(t *testing.T) {
	ctx := t.Context()
	db := migratedDB(t)
	sl, err := db.CreateSlice(ctx, 0, "scheduler", "test")
	if err != nil {
		t.Fatal(err)
	}
	// What the admin API writes for a note and for a user disable.
	if err := db.NoteSlice(ctx, sl.ID, "admin:1", "note: called the customer"); err != nil {
		t.Fatal(err)
	}
	for _, a := range []postgres.AdminAudit{
		{Actor: "admin:1", Action: string(slicehub.ActionNote), Target: "slice:1", Detail: map[string]any{}},
		{Actor: "admin:1", Action: "disable_user", Target: "user:2", Detail: map[string]any{}},
	} {
		if err := db.Audit(ctx, a); err != nil {
			t.Fatal(err)
		}
	}
	evs, err := auditLog{db}.RecentSliceEvents(ctx, 50)
	if err != nil {
		t.Fatal(err)
	}
	notes, disables := 0, 0
	for _, e := range evs {
		if e.Reason == "note: called the customer" || e.To == slicehub.SliceState(slicehub.ActionNote) {
			notes++
		}
		if e.To == "disable_user" {
			disables++
		}
	}
	if notes != 1 || disables != 1 {
		t.Errorf("audit log %+v: %d notes and %d disables; want each once", evs, notes, disables)
	}
}
