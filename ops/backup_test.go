package ops

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/slicehub/slicehub"
	"github.com/slicehub/slicehub/admin"
	"github.com/slicehub/slicehub/postgres"
	"github.com/slicehub/slicehub/testsupport"
)

// A slice's database with real data, backed up and restored through the
// admin API with the real pg_dump and pg_restore: the round trip, a corrupt
// dump that must leave the data alone, the gateway's database, and the
// refusals.
func TestSliceBackupRestoreRoundTrip(t *testing.T) {
	ctx := t.Context()
	var pool *statePool
	env := startAPI(t, func(d *admin.Deps, db *postgres.DB) {
		pool = &statePool{db: db}
		d.Pool, d.Backups = pool, db
	})
	db := env.db

	// An assigned slice with its own role and database, and contacts in it
	// written as that role (as the slice writes them).
	u, err := db.CreateUser(ctx, "backup@example.com", "x")
	if err != nil {
		t.Fatal(err)
	}
	sl, err := db.CreateSlice(ctx, u.ID, "test", "backup test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.DropDatabase(context.Background(), sl.ID) })
	if err := db.ProvisionDatabase(ctx, sl.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Transition(ctx, sl.ID, slicehub.Change{From: []slicehub.SliceState{slicehub.StateProvisioning},
		To: slicehub.StateAssigned, Actor: "test"}); err != nil {
		t.Fatal(err)
	}
	creds, err := db.SliceCredentials(ctx, sl.ID, testsupport.Stack(t).Postgres.Host)
	if err != nil {
		t.Fatal(err)
	}
	sliceSQL := func(sql string, args ...any) int {
		t.Helper()
		// The slice's URL is a pgxpool one (pool_max_conns).
		conn, err := pgxpool.New(ctx, creds.DatabaseURL)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if strings.HasPrefix(sql, "SELECT") {
			var n int
			if err := conn.QueryRow(ctx, sql, args...).Scan(&n); err != nil {
				t.Fatal(err)
			}
			return n
		}
		if _, err := conn.Exec(ctx, sql, args...); err != nil {
			t.Fatal(err)
		}
		return 0
	}
	sliceSQL(`CREATE TABLE contacts (id serial PRIMARY KEY, name text NOT NULL)`)
	sliceSQL(`INSERT INTO contacts (name) SELECT 'contact ' || i FROM generate_series(1, 500) i`)

	cli := func(args ...string) (int, string, string) {
		return runCLI(t, append([]string{"--gateway", env.url, "--key", "shk_test"}, args...)...)
	}
	dir := t.TempDir()
	id := fmt.Sprint(sl.ID)
	dump := filepath.Join(dir, "slice.dump")
	if code, _, errs := cli("db", "backup", "--slice", id, "-o", dump); code != 0 {
		t.Fatalf("db backup: exit %d: %s", code, errs)
	} else if !strings.Contains(errs, "downloaded") {
		t.Errorf("db backup stderr %q; want a byte progress line", errs)
	}
	raw, err := os.ReadFile(dump)
	if err != nil || !strings.HasPrefix(string(raw), "PGDMP") {
		t.Fatalf("backup file: %v, %d bytes; want a custom-format dump", err, len(raw))
	}
	if st, _ := os.Stat(dump); st.Mode().Perm() != 0o600 {
		t.Errorf("backup file mode %v; want 0600", st.Mode().Perm())
	}

	// Lose data, then restore it.
	sliceSQL(`DELETE FROM contacts WHERE id > 10`)
	sliceSQL(`CREATE TABLE junk (x int)`)
	if code, _, errs := cli("db", "restore", "--slice", id, "-i", dump); code != ExitUsage || !strings.Contains(errs, "--yes") {
		t.Errorf("restore without --yes: exit %d %q; want 2 asking for --yes", code, errs)
	}
	if code, _, errs := cli("db", "restore", "--slice", id, "-i", dump, "--yes"); code != 0 {
		t.Fatalf("db restore: exit %d: %s", code, errs)
	}
	if n := sliceSQL(`SELECT count(*) FROM contacts`); n != 500 {
		t.Errorf("contacts after the restore: %d; want 500", n)
	}
	if n := sliceSQL(`SELECT count(*) FROM pg_tables WHERE tablename = 'junk'`); n != 0 {
		t.Errorf("a table made after the backup survived the restore")
	}
	// The slice's role owns what was restored, and can still write to it.
	if n := sliceSQL(`SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tableowner <> current_user`); n != 0 {
		t.Errorf("%d restored tables not owned by the slice's role", n)
	}
	sliceSQL(`INSERT INTO contacts (name) VALUES ('after restore')`)
	if got, want := pool.Calls(), []string{"suspend", "resume"}; !slices.Equal(got, want) {
		t.Errorf("scheduler calls around the restore: %v; want %v", got, want)
	}

	// A corrupt dump (the real one cut in half) changes nothing.
	if _, err := db.Transition(ctx, sl.ID, slicehub.Change{From: []slicehub.SliceState{slicehub.StateProvisioning},
		To: slicehub.StateAssigned, Actor: "test"}); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "bad.dump")
	if err := os.WriteFile(bad, raw[:len(raw)/2], 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, errs := cli("db", "restore", "--slice", id, "-i", bad, "--yes")
	if code != ExitUsage || !strings.Contains(errs, "restore_failed") {
		t.Errorf("restore of a corrupt dump: exit %d %q; want 2 and restore_failed", code, errs)
	}
	if n := sliceSQL(`SELECT count(*) FROM contacts`); n != 501 {
		t.Errorf("contacts after a failed restore: %d; want the 501 from before", n)
	}
	var scratch int
	if err := db.Pool.QueryRow(ctx, `SELECT count(*) FROM pg_database WHERE datname LIKE $1`, slicehub.DatabaseName(sl.ID)+"_%").Scan(&scratch); err != nil || scratch != 0 {
		t.Errorf("scratch databases left after a failed restore: %d (%v)", scratch, err)
	}
	if got := pool.Calls(); len(got) != 4 || got[3] != "resume" {
		t.Errorf("scheduler calls: %v; want the slice resumed after the failed restore too", got)
	}

	// The gateway's database: backed up through the API, restored straight
	// into PostgreSQL (here into an empty database).
	gw := filepath.Join(dir, "gateway.dump")
	if code, _, errs := cli("db", "backup", "--gateway-db", "-o", gw); code != 0 {
		t.Fatalf("db backup --gateway: exit %d: %s", code, errs)
	}
	target := testsupport.NewDatabase(t)
	if code, _, errs := cli("db", "restore", "--gateway-db", "-i", gw, "--database-url", target); code != ExitUsage || !strings.Contains(errs, "stop every gateway") {
		t.Errorf("gateway restore without --yes: exit %d %q; want 2 saying to stop the gateways", code, errs)
	}
	if code, _, errs := cli("db", "restore", "--gateway-db", "-i", gw, "--database-url", target, "--yes"); code != 0 {
		t.Fatalf("gateway restore: exit %d: %s", code, errs)
	}
	restored, err := postgres.Open(ctx, target, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer restored.Close()
	if got, err := restored.Slice(ctx, sl.ID); err != nil || got.UserID != u.ID {
		t.Errorf("slice %d in the restored gateway database: %+v %v", sl.ID, got, err)
	}

	// Refusals: the CLI's usage errors, and the API's JSON errors.
	for _, args := range [][]string{
		{"db", "backup", "-o", gw},
		{"db", "backup", "--slice", id, "--gateway-db", "-o", gw},
		{"db", "backup", "--slice", id},
		{"db", "restore", "--slice", id, "-i", filepath.Join(dir, "missing.dump"), "--yes"},
	} {
		if code, _, _ := cli(args...); code != ExitUsage {
			t.Errorf("slicectl %s: exit %d; want 2", strings.Join(args, " "), code)
		}
	}
	if code, _, _ := cli("db", "backup", "--slice", "99999", "-o", gw); code != ExitUnhealthy {
		t.Errorf("backup of an unknown slice: exit %d; want 3", code)
	}
	for _, c := range []struct {
		method, path string
		want         int
	}{
		{"GET", "/admin/api/slices/99999/backup", 404},
		{"GET", "/admin/api/slices/x/backup", 400},
		{"POST", "/admin/api/slices/" + id + "/restore", 400}, // no confirm
		{"POST", "/admin/api/slices/99999/restore?confirm=99999", 404},
	} {
		req, _ := http.NewRequest(c.method, env.url+c.path, strings.NewReader("PGDMP"))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var body struct{ Error, Code string }
		err = json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if resp.StatusCode != c.want || err != nil || body.Error == "" || body.Code == "" {
			t.Errorf("%s %s: %d %+v (%v); want %d with {error, code}", c.method, c.path, resp.StatusCode, body, err, c.want)
		}
	}
}
