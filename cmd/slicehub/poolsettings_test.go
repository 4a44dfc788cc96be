package main

import (
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
	db, err := postgres.Open(ctx, testsupport.NewDatabase(t), log)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
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
