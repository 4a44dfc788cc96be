package postgres_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/slicehub/slicehub/postgres"
	"github.com/slicehub/slicehub/testsupport"
)

func TestPoolSettingsStoredAndNotified(t *testing.T) {
	ctx := t.Context()
	db := openDB(t)
	if ps, err := db.PoolSettings(ctx); err != nil || ps.Paused || ps.MinWarm != nil {
		t.Fatalf("settings before any change: %+v %v; want the zero value", ps, err)
	}

	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	notes := make(chan string, 16)
	go db.Listen(lctx, []string{postgres.PoolSettingsChannel}, func(ch, _ string) { notes <- ch })
	// LISTEN is in place once a probe notification comes back.
	testsupport.Eventually(t, 10*time.Second, "the listener listening", func() (bool, error) {
		if err := db.SetPoolPaused(ctx, false, "test"); err != nil {
			return false, err
		}
		select {
		case <-notes:
			return true, nil
		case <-time.After(100 * time.Millisecond):
			return false, nil
		}
	})

	if err := db.SetPoolPaused(ctx, true, "admin:1"); err != nil {
		t.Fatal(err)
	}
	if err := db.SetPoolMinWarm(ctx, 4, "admin:2"); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		select {
		case <-notes:
		case <-time.After(10 * time.Second):
			t.Fatalf("notification %d of 2 not received", i+1)
		}
	}
	// Each setting is written alone: the scale did not undo the pause.
	ps, err := db.PoolSettings(ctx)
	if err != nil || !ps.Paused || ps.MinWarm == nil || *ps.MinWarm != 4 {
		t.Fatalf("settings: %+v %v; want paused with min_warm 4", ps, err)
	}
}

func TestAdminAuditRows(t *testing.T) {
	ctx := t.Context()
	db := openDB(t)
	if err := db.Audit(ctx, postgres.AdminAudit{Actor: "admin:1", Action: "disable_user", Target: "user:7", Detail: map[string]any{"user_id": 7}}); err != nil {
		t.Fatal(err)
	}
	if err := db.Audit(ctx, postgres.AdminAudit{Actor: "admin:1", KeyID: 3, Action: "pool_pause", Target: "pool"}); err != nil {
		t.Fatal(err)
	}
	rows, err := db.AdminAudits(ctx, 10)
	if err != nil || len(rows) != 2 {
		t.Fatalf("AdminAudits: %d rows, %v; want 2", len(rows), err)
	}
	if r := rows[0]; r.Action != "pool_pause" || r.KeyID != 3 || r.Target != "pool" {
		t.Errorf("newest row %+v; want the pool pause with key 3", r)
	}
	if r := rows[1]; r.Action != "disable_user" || r.KeyID != 0 || r.Detail["user_id"] != float64(7) {
		t.Errorf("oldest row %+v; want the disable of user 7, no key", r)
	}
}

// CRMCounts reads a real slice database's statistics, as the slice's role
// wrote its rows.
func TestCRMCountsOfASliceDatabase(t *testing.T) {
	ctx := t.Context()
	db, sl, sp := provisionedSlice(t, "crm counts")
	for _, q := range []string{
		`CREATE TABLE contacts (id serial PRIMARY KEY, name text)`,
		`CREATE TABLE notes (id serial PRIMARY KEY, body text)`,
		`INSERT INTO contacts (name) SELECT 'c' || i FROM generate_series(1, 30) i`,
		`INSERT INTO notes (body) SELECT 'n' || i FROM generate_series(1, 7) i`,
	} {
		if _, err := sp.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	// The statistics reach pg_stat_user_tables within a second or so.
	testsupport.Eventually(t, 30*time.Second, "30 contacts and 7 notes in the statistics", func() (bool, error) {
		got, err := db.CRMCounts(ctx, []int64{sl.ID, 99999})
		if err != nil {
			return false, err
		}
		if _, ok := got[99999]; ok {
			return false, fmt.Errorf("a slice without a database has counts: %+v", got)
		}
		if c := got[sl.ID]; c.Contacts != 30 || c.Notes != 7 {
			return false, fmt.Errorf("counts %+v", c)
		}
		return true, nil
	})
}
