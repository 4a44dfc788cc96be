package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/slicehub/slicehub"
	"github.com/slicehub/slicehub/postgres"
)

var sliceDBs atomic.Int64

// openSlicesDB returns a migrated gateway database whose slice ids start in
// a range of their own: slice databases and roles are the server's, shared
// by every test of the package.
func openSlicesDB(t *testing.T) *postgres.DB {
	t.Helper()
	ctx := t.Context()
	db := openDB(t)
	n := sliceDBs.Add(1)
	if _, err := db.Pool.Exec(ctx, fmt.Sprintf(`ALTER SEQUENCE slices_id_seq RESTART WITH %d`, 1_000_000+n*10_000)); err != nil {
		t.Fatal(err)
	}
	return db
}

func newUser(t *testing.T, db *postgres.DB, email string) int64 {
	t.Helper()
	var id int64
	if err := db.Pool.QueryRow(t.Context(), `INSERT INTO users (email, password_hash) VALUES ($1, 'x') RETURNING id`, email).Scan(&id); err != nil {
		t.Fatal(err)
	}
	return id
}

// connectAs opens database name over TCP with a slice's role and password,
// taken from the credentials the slice receives at bootstrap.
func connectAs(ctx context.Context, creds slicehub.SliceCredentials, name string) (*pgx.Conn, error) {
	u, err := url.Parse(creds.DatabaseURL)
	if err != nil {
		return nil, err
	}
	u.Path = "/" + name
	u.RawQuery = "sslmode=disable&connect_timeout=5"
	return pgx.Connect(ctx, u.String())
}

// One slice's role reaches its own database and nothing else on the
// server: not another slice's database, not the gateway's, not the
// maintenance databases. Over TCP, with the role's real password.
func TestSliceRoleCannotReachOtherDatabases(t *testing.T) {
	db := openSlicesDB(t)
	ctx := t.Context()
	if err := db.LockDownPublicConnect(ctx); err != nil {
		t.Fatal(err)
	}
	var gateway string
	if err := db.Pool.QueryRow(ctx, `SELECT current_database()`).Scan(&gateway); err != nil {
		t.Fatal(err)
	}
	var creds [2]slicehub.SliceCredentials
	var ids [2]int64
	for i := range 2 {
		sl, err := db.CreateSlice(ctx, 0, "scheduler", "test")
		if err != nil {
			t.Fatal(err)
		}
		if err := db.ProvisionDatabase(ctx, sl.ID); err != nil {
			t.Fatal(err)
		}
		if creds[i], err = db.SliceCredentials(ctx, sl.ID, ""); err != nil {
			t.Fatal(err)
		}
		ids[i] = sl.ID
	}
	own, other := slicehub.DatabaseName(ids[0]), slicehub.DatabaseName(ids[1])

	conn, err := connectAs(ctx, creds[0], own)
	if err != nil {
		t.Fatalf("slice %d cannot open its own database: %v", ids[0], err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `CREATE TABLE contacts (name text); INSERT INTO contacts VALUES ('mine')`); err != nil {
		t.Fatalf("slice %d cannot write its own database: %v", ids[0], err)
	}
	// Not a member of the other role, and no way to become one.
	if _, err := conn.Exec(ctx, `SET ROLE `+pgx.Identifier{other}.Sanitize()); err == nil {
		t.Errorf("slice %d could SET ROLE %s", ids[0], other)
	}
	var super, createDB, createRole bool
	if err := conn.QueryRow(ctx, `SELECT rolsuper, rolcreatedb, rolcreaterole FROM pg_roles WHERE rolname = current_user`).Scan(&super, &createDB, &createRole); err != nil {
		t.Fatal(err)
	}
	if super || createDB || createRole {
		t.Errorf("slice role: superuser %v, createdb %v, createrole %v; want none", super, createDB, createRole)
	}

	for _, name := range []string{other, gateway, "postgres", "template1"} {
		c, err := connectAs(ctx, creds[0], name)
		if err == nil {
			c.Close(ctx)
			t.Errorf("slice %d's role opened database %s", ids[0], name)
			continue
		}
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "42501" {
			t.Errorf("opening %s as slice %d: %v; want permission denied (42501)", name, ids[0], err)
		}
	}
	// The other slice's password does not open this one either.
	if c, err := connectAs(ctx, creds[1], own); err == nil {
		c.Close(ctx)
		t.Errorf("slice %d's role opened %s", ids[1], own)
	}
	// And a wrong password is refused outright.
	bad := creds[0]
	u, _ := url.Parse(bad.DatabaseURL)
	u.User = url.UserPassword(u.User.Username(), "not-the-password")
	bad.DatabaseURL = u.String()
	if c, err := connectAs(ctx, bad, own); err == nil {
		c.Close(ctx)
		t.Errorf("a wrong password opened %s", own)
	}
}

// ProvisionDatabase is idempotent and keeps the first secrets, so a slice
// that bootstrapped before a retry still has working credentials.
func TestProvisionDatabaseIsIdempotent(t *testing.T) {
	db := openSlicesDB(t)
	ctx := t.Context()
	sl, err := db.CreateSlice(ctx, 0, "scheduler", "test")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make([]error, 3)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = db.ProvisionDatabase(ctx, sl.ID)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatalf("concurrent ProvisionDatabase: %v", err)
		}
	}
	first, _ := db.SliceCredentials(ctx, sl.ID, "")
	if err := db.ProvisionDatabase(ctx, sl.ID); err != nil {
		t.Fatal(err)
	}
	again, _ := db.SliceCredentials(ctx, sl.ID, "")
	if first != again {
		t.Fatalf("credentials changed on a second provisioning")
	}
	c, err := connectAs(ctx, again, slicehub.DatabaseName(sl.ID))
	if err != nil {
		t.Fatalf("credentials do not work after re-provisioning: %v", err)
	}
	c.Close(ctx)
	p, err := db.SliceProgress(ctx, 0)
	if slicehub.KindOf(err) != slicehub.KindNotFound {
		t.Fatalf("progress of no user: %+v, %v", p, err)
	}
}

func TestFailuresCountOncePerObservation(t *testing.T) {
	db := openSlicesDB(t)
	ctx := t.Context()
	sl, _ := db.CreateSlice(ctx, 0, "scheduler", "test")
	now := time.Now()
	steps := []struct {
		observed, want int
	}{{2, 2}, {2, 0}, {1, 0}, {5, 3}}
	for _, s := range steps {
		got, err := db.RecordFailures(ctx, sl.ID, "slice/j1", s.observed, "test", now)
		if err != nil || got != s.want {
			t.Fatalf("RecordFailures(observed %d) = %d, %v; want %d new", s.observed, got, err, s.want)
		}
	}
	// Another job's count starts from zero.
	if got, _ := db.RecordFailures(ctx, sl.ID, "slice/j2", 1, "test", now); got != 1 {
		t.Fatalf("a new job's first failure counted %d", got)
	}
	if err := db.RecordRepair(ctx, sl.ID, "slice/j2", "lost", now); err != nil {
		t.Fatal(err)
	}
	if n, _ := db.RecentFailures(ctx, sl.ID, now.Add(-time.Minute)); n != 7 {
		t.Fatalf("RecentFailures = %d, want 7", n)
	}
	if n, _ := db.RecentFailures(ctx, sl.ID, now.Add(time.Minute)); n != 0 {
		t.Fatalf("RecentFailures after the window = %d, want 0", n)
	}
	if err := db.ResetFailures(ctx, sl.ID); err != nil {
		t.Fatal(err)
	}
	if n, _ := db.RecentFailures(ctx, sl.ID, time.Time{}); n != 0 {
		t.Fatalf("after reset: %d", n)
	}
}

// Concurrent reassignments in opposite directions never deadlock, and
// always leave one slice a user and one user a slice.
func TestReassignConcurrently(t *testing.T) {
	db := openSlicesDB(t)
	ctx := t.Context()
	var users [2]int64
	var slices [2]slicehub.Slice
	for i := range 2 {
		users[i] = newUser(t, db, fmt.Sprintf("r%d@example.com", i))
		var err error
		if slices[i], err = db.CreateSlice(ctx, users[i], fmt.Sprintf("user:%d", users[i]), "test"); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	for round := range 10 {
		for i := range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, err := db.Reassign(ctx, slices[i].ID, users[(i+round)%2], "admin:1")
				if err != nil && slicehub.KindOf(err) != slicehub.KindConflict {
					t.Errorf("Reassign: %v", err)
				}
			}()
		}
		wg.Wait()
	}
	var n int
	if err := db.Pool.QueryRow(ctx, `SELECT count(DISTINCT user_id) FROM slices WHERE user_id IS NOT NULL`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	var bound int
	_ = db.Pool.QueryRow(ctx, `SELECT count(*) FROM slices WHERE user_id IS NOT NULL`).Scan(&bound)
	if n != bound {
		t.Fatalf("%d bound slices for %d users", bound, n)
	}
	if _, err := db.Reassign(ctx, slices[0].ID, 999999, "admin:1"); slicehub.KindOf(err) != slicehub.KindNotFound {
		t.Fatalf("reassign to a missing user: %v; want not found", err)
	}
}

// A slice claimed while it starts cannot be made warm by a caller that read
// it before the claim (the scheduler's pass that saw it healthy): that is
// a conflict to re-read, not a constraint violation that stops the pass.
func TestWarmingAClaimedSliceIsAConflict(t *testing.T) {
	db := openSlicesDB(t)
	ctx := t.Context()
	sl, err := db.CreateSlice(ctx, 0, "scheduler", "test")
	if err != nil {
		t.Fatal(err)
	}
	u := newUser(t, db, "waiting@example.com")
	claimed, err := db.ClaimProvisioning(ctx, u, "user")
	if err != nil || claimed.ID != sl.ID {
		t.Fatalf("ClaimProvisioning: %+v, %v", claimed, err)
	}
	_, err = db.Transition(ctx, sl.ID, slicehub.Change{From: []slicehub.SliceState{slicehub.StateProvisioning},
		To: slicehub.StateWarm, Actor: "scheduler", Reason: "healthy in Consul"})
	if slicehub.KindOf(err) != slicehub.KindConflict || slicehub.CodeOf(err) != "slice_claimed" {
		t.Fatalf("warming a claimed slice: %v; want a slice_claimed conflict", err)
	}
	got, err := db.Transition(ctx, sl.ID, slicehub.Change{From: []slicehub.SliceState{slicehub.StateProvisioning},
		To: slicehub.StateAssigned, Actor: "scheduler", Reason: "healthy in Consul"})
	if err != nil || got.State != slicehub.StateAssigned || got.UserID != u {
		t.Fatalf("assigning it: %+v, %v", got, err)
	}
}

// The slices table's CHECK and the domain's list of states agree: every
// state of slicehub.States can be stored (with a user or without, as the
// table's other checks want), and a state the domain does not know cannot.
// A new state that forgets its migration fails here.
func TestEveryStateFitsTheSlicesTable(t *testing.T) {
	db := openSlicesDB(t)
	ctx := t.Context()
	sl, err := db.CreateSlice(ctx, 0, "scheduler", "test")
	if err != nil {
		t.Fatal(err)
	}
	u := newUser(t, db, "states@example.com")
	stores := func(state slicehub.SliceState, user any) bool {
		tx, err := db.Pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback(ctx)
		_, err = tx.Exec(ctx, `UPDATE slices SET state = $2, user_id = $3 WHERE id = $1`, sl.ID, string(state), user)
		var pgErr *pgconn.PgError
		if err != nil && !(errors.As(err, &pgErr) && pgErr.Code == "23514") { // check_violation
			t.Fatalf("storing %s: %v", state, err)
		}
		return err == nil
	}
	for _, s := range slicehub.States {
		if !stores(s, nil) && !stores(s, u) {
			t.Errorf("the slices table refuses state %s, with or without a user; its migration is missing", s)
		}
	}
	if stores("paused", nil) || stores("paused", u) {
		t.Error("the slices table stores a state the domain does not know")
	}
}

// The route table's placements are the live slices' (slicehub's Live,
// passed as a text[]), never a retired one's.
func TestPlacementsAreTheLiveSlices(t *testing.T) {
	db := openSlicesDB(t)
	ctx := t.Context()
	var ids []int64
	for range 2 {
		sl, err := db.CreateSlice(ctx, 0, "scheduler", "test")
		if err != nil {
			t.Fatal(err)
		}
		job := fmt.Sprintf("slice/dispatch-%d", sl.ID)
		if _, err := db.Transition(ctx, sl.ID, slicehub.Dispatched("scheduler", job, "dispatched")); err != nil {
			t.Fatal(err)
		}
		if ok, err := db.RecordPlacement(ctx, sl.ID, job, fmt.Sprintf("%08d-0000-0000-0000-000000000000", sl.ID%1e8), "127.0.0.1:1"); err != nil || !ok {
			t.Fatalf("RecordPlacement: %v, %v", ok, err)
		}
		ids = append(ids, sl.ID)
	}
	if _, err := db.Retire(ctx, ids[1], slicehub.Retire("admin:1", "r").From, "admin:1", "test", false); err != nil {
		t.Fatal(err)
	}
	got, err := db.Placements(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := got[ids[0]]; !ok {
		t.Errorf("Placements lacks live slice %d: %v", ids[0], got)
	}
	if p, ok := got[ids[1]]; ok {
		t.Errorf("Placements routes retired slice %d to %+v", ids[1], p)
	}
}
