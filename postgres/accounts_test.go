package postgres_test

import (
	"context"
	"crypto/sha256"
	"testing"
	"time"

	"github.com/slicehub/slicehub"
	"github.com/slicehub/slicehub/gateway"
	"github.com/slicehub/slicehub/postgres"
	"github.com/slicehub/slicehub/testsupport"
)

// TestMain starts the real PostgreSQL for the package. If another test file
// of this package gains a TestMain, keep one and delete the other: a test
// binary has one TestMain.
func TestMain(m *testing.M) { testsupport.Main(m, testsupport.Options{}) }

// The gateway's narrow interface is what this package implements.
var _ gateway.Accounts = (*postgres.DB)(nil)

func openDB(t *testing.T) *postgres.DB {
	t.Helper()
	ctx := t.Context()
	db, err := postgres.Open(ctx, testsupport.NewDatabase(t), testsupport.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	if err := db.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	return db
}

func hashOf(s string) []byte {
	h := sha256.Sum256([]byte(s))
	return h[:]
}

func wantKind(t *testing.T, what string, err error, kind slicehub.Kind, code string) {
	t.Helper()
	if err == nil || slicehub.KindOf(err) != kind || (code != "" && slicehub.CodeOf(err) != code) {
		t.Fatalf("%s: err %v (kind %v, code %q), want kind %v code %q", what, err, slicehub.KindOf(err), slicehub.CodeOf(err), kind, code)
	}
}

func TestUsers(t *testing.T) {
	db := openDB(t)
	ctx := t.Context()
	u, err := db.CreateUser(ctx, "ada@example.com", "$argon2id$hash")
	if err != nil {
		t.Fatal(err)
	}
	if u.ID == 0 || u.Email != "ada@example.com" || u.IsAdmin || u.CreatedAt.IsZero() || u.DisabledAt != nil {
		t.Fatalf("CreateUser = %+v", u)
	}
	_, err = db.CreateUser(ctx, "ada@example.com", "other")
	wantKind(t, "CreateUser with a taken email", err, slicehub.KindConflict, "email_taken")

	got, hash, err := db.UserByEmail(ctx, "ada@example.com")
	if err != nil || got.ID != u.ID || hash != "$argon2id$hash" {
		t.Fatalf("UserByEmail = %+v, %q, %v", got, hash, err)
	}
	_, _, err = db.UserByEmail(ctx, "nobody@example.com")
	wantKind(t, "UserByEmail of an unknown email", err, slicehub.KindNotFound, "")

	// The schema refuses what the gateway should never send.
	_, err = db.CreateUser(ctx, "Upper@Example.com", "h")
	wantKind(t, "CreateUser with an uppercase email", err, slicehub.KindInternal, "")
}

func TestSessions(t *testing.T) {
	db := openDB(t)
	ctx := t.Context()
	u, err := db.CreateUser(ctx, "bo@example.com", "h")
	if err != nil {
		t.Fatal(err)
	}
	const idle = time.Hour
	create := func(token string, expires time.Time) []byte {
		t.Helper()
		h := hashOf(token)
		if err := db.CreateSession(ctx, u.ID, h, expires); err != nil {
			t.Fatal(err)
		}
		return h
	}
	exec := func(sql string, args ...any) {
		t.Helper()
		if _, err := db.Pool.Exec(ctx, sql, args...); err != nil {
			t.Fatal(err)
		}
	}
	lastSeen := func(h []byte) time.Time {
		t.Helper()
		var ts time.Time
		if err := db.Pool.QueryRow(ctx, `SELECT last_seen_at FROM sessions WHERE token_hash = $1`, h).Scan(&ts); err != nil {
			t.Fatal(err)
		}
		return ts
	}

	err = db.CreateSession(ctx, u.ID, []byte("short"), time.Now().Add(time.Hour))
	wantKind(t, "CreateSession with a short hash", err, slicehub.KindInvalid, "")

	live := create("live", time.Now().Add(24*time.Hour))
	got, err := db.SessionUser(ctx, live, idle)
	if err != nil || got.ID != u.ID || got.Email != "bo@example.com" {
		t.Fatalf("SessionUser(live) = %+v, %v", got, err)
	}
	_, err = db.SessionUser(ctx, hashOf("unknown"), idle)
	wantKind(t, "SessionUser of an unknown token", err, slicehub.KindUnauthorized, "")

	// Touched when the last touch is over a minute old, not otherwise.
	exec(`UPDATE sessions SET last_seen_at = now() - interval '2 minutes' WHERE token_hash = $1`, live)
	before := lastSeen(live)
	if _, err := db.SessionUser(ctx, live, idle); err != nil {
		t.Fatal(err)
	}
	if after := lastSeen(live); !after.After(before.Add(time.Minute)) {
		t.Fatalf("last_seen_at %v -> %v: want it touched", before, after)
	}
	exec(`UPDATE sessions SET last_seen_at = now() - interval '30 seconds' WHERE token_hash = $1`, live)
	before = lastSeen(live)
	if _, err := db.SessionUser(ctx, live, idle); err != nil {
		t.Fatal(err)
	}
	if after := lastSeen(live); !after.Equal(before) {
		t.Fatalf("last_seen_at %v -> %v: want it left alone within a minute", before, after)
	}

	// Idle too long: refused, and not touched back to life.
	idleH := create("idle", time.Now().Add(24*time.Hour))
	exec(`UPDATE sessions SET last_seen_at = now() - interval '2 hours' WHERE token_hash = $1`, idleH)
	before = lastSeen(idleH)
	_, err = db.SessionUser(ctx, idleH, idle)
	wantKind(t, "SessionUser of an idle session", err, slicehub.KindUnauthorized, "")
	if after := lastSeen(idleH); !after.Equal(before) {
		t.Fatalf("an idle session was touched: %v -> %v", before, after)
	}
	if _, err := db.SessionUser(ctx, idleH, 3*time.Hour); err != nil {
		t.Fatalf("the same session with a longer idle limit: %v", err)
	}
	exec(`UPDATE sessions SET last_seen_at = now() - interval '2 hours' WHERE token_hash = $1`, idleH)

	// Past its absolute expiry: refused however active.
	expired := create("expired", time.Now().Add(-time.Second))
	_, err = db.SessionUser(ctx, expired, idle)
	wantKind(t, "SessionUser of an expired session", err, slicehub.KindUnauthorized, "")

	// A disabled user has no live sessions.
	exec(`UPDATE users SET disabled_at = now() WHERE id = $1`, u.ID)
	_, err = db.SessionUser(ctx, live, idle)
	wantKind(t, "SessionUser of a disabled user", err, slicehub.KindUnauthorized, "")
	exec(`UPDATE users SET disabled_at = NULL WHERE id = $1`, u.ID)

	// Logout, twice.
	for i := 0; i < 2; i++ {
		if err := db.DeleteSession(ctx, live); err != nil {
			t.Fatalf("DeleteSession #%d: %v", i+1, err)
		}
	}
	_, err = db.SessionUser(ctx, live, idle)
	wantKind(t, "SessionUser after DeleteSession", err, slicehub.KindUnauthorized, "")

	// Housekeeping removes the idle and the expired one.
	n, err := db.DeleteExpiredSessions(ctx, idle)
	if err != nil || n != 2 {
		t.Fatalf("DeleteExpiredSessions = %d, %v; want 2", n, err)
	}
}

func TestSessionUserIsOneStatement(t *testing.T) {
	// Concurrent lookups of one session (every replica's cache missing at
	// once) must all succeed: the touch must not conflict with the reads.
	db := openDB(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	u, err := db.CreateUser(ctx, "cy@example.com", "h")
	if err != nil {
		t.Fatal(err)
	}
	h := hashOf("shared")
	if err := db.CreateSession(ctx, u.ID, h, time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Pool.Exec(ctx, `UPDATE sessions SET last_seen_at = now() - interval '5 minutes'`); err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 20)
	for i := 0; i < cap(errs); i++ {
		go func() {
			_, err := db.SessionUser(ctx, h, time.Hour)
			errs <- err
		}()
	}
	for i := 0; i < cap(errs); i++ {
		if err := <-errs; err != nil {
			t.Fatalf("concurrent SessionUser: %v", err)
		}
	}
}
