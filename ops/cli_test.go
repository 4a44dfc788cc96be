package ops

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/slicehub/slicehub/postgres"
	"github.com/slicehub/slicehub/testsupport"
)

func TestMain(m *testing.M) { testsupport.Main(m, testsupport.Options{}) }

func TestDBMigrateAppliesOnceThenNothing(t *testing.T) {
	url := testsupport.NewDatabase(t)
	run := func() string {
		var out, errb bytes.Buffer
		root := NewRoot(&out, &errb)
		root.SetArgs([]string{"db", "migrate", "--database-url", url})
		if err := root.ExecuteContext(context.Background()); err != nil {
			t.Fatalf("slicectl db migrate: %v\n%s", err, errb.String())
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
	db, err := postgres.Open(context.Background(), url, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int
	if err := db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM information_schema.tables WHERE table_name IN ('users','sessions','slices','slice_events')`).Scan(&n); err != nil || n != 4 {
		t.Fatalf("gateway tables after migrate: %d (%v); want 4", n, err)
	}
}

func TestDBMigrateWithoutDatabaseFailsClearly(t *testing.T) {
	var out, errb bytes.Buffer
	root := NewRoot(&out, &errb)
	root.SetArgs([]string{"db", "migrate", "--database-url", ""})
	err := root.ExecuteContext(context.Background())
	if err == nil || !strings.Contains(err.Error(), "DATABASE_URL") {
		t.Fatalf("err = %v; want a message naming DATABASE_URL", err)
	}
}
