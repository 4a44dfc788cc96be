package postgres_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/slicehub/slicehub"
	"github.com/slicehub/slicehub/postgres"
	"github.com/slicehub/slicehub/testsupport"
)

// provisionedSlice makes a slice with its database (in an id range of its
// own: slice databases belong to the server) and returns a pool connected
// as the slice's own role.
func provisionedSlice(t *testing.T, reason string) (*postgres.DB, slicehub.Slice, *pgxpool.Pool) {
	t.Helper()
	ctx := t.Context()
	db := openSlicesDB(t)
	sl, err := db.CreateSlice(ctx, 0, "test", reason)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.DropDatabase(context.Background(), sl.ID) })
	if err := db.ProvisionDatabase(ctx, sl.ID); err != nil {
		t.Fatal(err)
	}
	creds, err := db.SliceCredentials(ctx, sl.ID, testsupport.Stack().Postgres.Host)
	if err != nil {
		t.Fatal(err)
	}
	sp, err := pgxpool.New(ctx, creds.DatabaseURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sp.Close)
	return db, sl, sp
}

// A slice owns its database and may plant objects named like the catalog's
// in it. Telemetry reads that database as the monitoring role with a pinned
// search_path and qualified names: the planted view is never read, its
// function never runs, and the role it would run as has nothing to give.
func TestPlantedCatalogViewGainsNothing(t *testing.T) {
	ctx := t.Context()
	db, sl, sp := provisionedSlice(t, "planted view")
	name := slicehub.DatabaseName(sl.ID)
	// The attack, as the slice's own role: a loot table anyone may write,
	// a function that records who calls it, a view shadowing the catalog
	// view that telemetry reads, and the database's search_path pointing
	// at it.
	for _, q := range []string{
		`CREATE TABLE contacts (id serial PRIMARY KEY, name text)`,
		`INSERT INTO contacts (name) SELECT 'c' || i FROM generate_series(1, 3) i`,
		`CREATE TABLE public.loot (who text, super boolean)`,
		`GRANT INSERT, SELECT ON public.loot TO PUBLIC`,
		`CREATE FUNCTION public.steal() RETURNS bigint LANGUAGE plpgsql AS $$
		BEGIN
			INSERT INTO public.loot SELECT current_user, rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user;
			RETURN 1000;
		END $$`,
		`GRANT EXECUTE ON FUNCTION public.steal() TO PUBLIC`,
		`CREATE VIEW public.pg_stat_user_tables AS SELECT 'public'::name AS schemaname, 'contacts'::name AS relname, public.steal() AS n_live_tup`,
		`GRANT SELECT ON public.pg_stat_user_tables TO PUBLIC`,
		`GRANT USAGE ON SCHEMA public TO PUBLIC`,
		`CREATE FUNCTION public.sum(bigint) RETURNS bigint LANGUAGE sql AS 'SELECT public.steal()'`,
		fmt.Sprintf(`ALTER DATABASE %s SET search_path = public, pg_catalog`, pgx.Identifier{name}.Sanitize()),
	} {
		if _, err := sp.Exec(ctx, q); err != nil {
			t.Fatalf("as the slice: %s: %v", q, err)
		}
	}
	// The real statistics (3 contacts) reach pg_stat_user_tables within a
	// second or so; the planted view would say 1000.
	testsupport.Eventually(t, 30*time.Second, "3 contacts from the real statistics", func() (bool, error) {
		got, err := db.CRMCounts(ctx, []int64{sl.ID})
		if err != nil {
			return false, err
		}
		if c := got[sl.ID]; c.Contacts == 1000 {
			t.Fatalf("CRMCounts read the planted view: %+v", c)
		} else if c.Contacts != 3 {
			return false, fmt.Errorf("counts %+v", c)
		}
		return true, nil
	})
	var calls int
	if err := sp.QueryRow(ctx, `SELECT count(*) FROM public.loot`).Scan(&calls); err != nil || calls != 0 {
		t.Fatalf("the planted function ran %d times (err %v); want never", calls, err)
	}

	// What the monitoring role would have given had it run: nothing.
	role, password, err := db.MonitorRole(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var super, createRole, createDB bool
	var config []string
	if err := db.Pool.QueryRow(ctx, `SELECT rolsuper, rolcreaterole, rolcreatedb, coalesce(rolconfig, '{}') FROM pg_roles WHERE rolname = $1`, role).
		Scan(&super, &createRole, &createDB, &config); err != nil {
		t.Fatal(err)
	}
	if super || createRole || createDB || !slices.Contains(config, "search_path=pg_catalog") {
		t.Errorf("monitoring role %s: super %v createrole %v createdb %v config %v; want none of them, search_path=pg_catalog", role, super, createRole, createDB, config)
	}
	// It cannot open the gateway database (the daemon locks it down at start).
	if err := db.LockDownPublicConnect(ctx); err != nil {
		t.Fatal(err)
	}
	var gw string
	if err := db.Pool.QueryRow(ctx, `SELECT current_database()`).Scan(&gw); err != nil {
		t.Fatal(err)
	}
	cfg, err := pgx.ParseConfig(testsupport.Stack().Postgres.DatabaseURL(gw))
	if err != nil {
		t.Fatal(err)
	}
	cfg.User, cfg.Password = role, password
	if c, err := pgx.ConnectConfig(ctx, cfg); err == nil {
		c.Close(ctx)
		t.Errorf("the monitoring role opened the gateway database %s", gw)
	}
}

// Each slice role is limited so that one tenant cannot starve the server,
// and no role but its own (and the monitoring role) may open its database.
func TestSliceRoleLimits(t *testing.T) {
	ctx := t.Context()
	db := openSlicesDB(t)
	sl, err := db.CreateSlice(ctx, 0, "test", "limits")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.DropDatabase(context.Background(), sl.ID) })
	if err := db.ProvisionDatabase(ctx, sl.ID); err != nil {
		t.Fatal(err)
	}
	name := slicehub.DatabaseName(sl.ID)
	var limit int
	var config []string
	var publicConnect bool
	if err := db.Pool.QueryRow(ctx, `SELECT rolconnlimit, coalesce(rolconfig, '{}'),
		has_database_privilege('public', $1, 'CONNECT') FROM pg_roles WHERE rolname = $1`, name).Scan(&limit, &config, &publicConnect); err != nil {
		t.Fatal(err)
	}
	if limit != postgres.SliceConnectionLimit || publicConnect {
		t.Errorf("role %s: connection limit %d, PUBLIC may connect %v; want %d and false", name, limit, publicConnect, postgres.SliceConnectionLimit)
	}
	for _, want := range []string{"statement_timeout=" + postgres.SliceStatementTimeout, "temp_file_limit=" + postgres.SliceTempFileLimit,
		"idle_in_transaction_session_timeout=" + postgres.SliceIdleInTxTimeout} {
		if !slices.Contains(config, want) {
			t.Errorf("role %s settings %v; want %s", name, config, want)
		}
	}
	// temp_file_limit binds: the slice cannot raise it for its session.
	creds, err := db.SliceCredentials(ctx, sl.ID, testsupport.Stack().Postgres.Host)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := connectAs(ctx, creds, name)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `SET temp_file_limit = -1`); err == nil {
		t.Error("the slice lifted its own temp_file_limit")
	}
	// An older slice database is brought to the rules at the daemon's start.
	for _, q := range []string{`ALTER ROLE %s CONNECTION LIMIT -1`, `ALTER ROLE %s RESET ALL`} {
		if _, err := db.Pool.Exec(ctx, fmt.Sprintf(q, pgx.Identifier{name}.Sanitize())); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.SecureSliceDatabases(ctx); err != nil {
		t.Fatal(err)
	}
	if err := db.Pool.QueryRow(ctx, `SELECT rolconnlimit FROM pg_roles WHERE rolname = $1`, name).Scan(&limit); err != nil || limit != postgres.SliceConnectionLimit {
		t.Errorf("after SecureSliceDatabases: connection limit %d (%v); want %d", limit, err, postgres.SliceConnectionLimit)
	}
}
