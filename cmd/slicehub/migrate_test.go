package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/slicehub/slicehub/testsupport"
)

func TestMigrateAppliesOnceThenNothing(t *testing.T) {
	url := testsupport.NewDatabase(t)
	env := func(k string) string {
		if k == "DATABASE_URL" {
			return url
		}
		return ""
	}
	run := func() string {
		var out bytes.Buffer
		if err := runMigrate(t.Context(), nil, env, &out); err != nil {
			t.Fatalf("slicehub migrate: %v", err)
		}
		return out.String()
	}
	first := run()
	if !strings.Contains(first, "migrations applied: ") || strings.Contains(first, "migrations applied: 0;") {
		t.Fatalf("first run: %q; want some migrations applied", first)
	}
	if second := run(); !strings.Contains(second, "migrations applied: 0;") {
		t.Fatalf("second run: %q; want nothing left to apply", second)
	}
	// The schema is really there.
	db := migrate(t, url)
	var n int
	if err := db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM information_schema.tables WHERE table_name IN ('users','sessions','slices','slice_events')`).Scan(&n); err != nil || n != 4 {
		t.Fatalf("gateway tables after migrate: %d (%v); want 4", n, err)
	}
}

func TestMigrateWithoutDatabaseFailsClearly(t *testing.T) {
	var out bytes.Buffer
	err := runMigrate(t.Context(), []string{"-database-url", ""}, func(string) string { return "" }, &out)
	if err == nil || !strings.Contains(err.Error(), "DATABASE_URL") {
		t.Fatalf("err = %v; want a message naming DATABASE_URL", err)
	}
}
