package postgres_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/slicehub/slicehub"
	"github.com/slicehub/slicehub/postgres"
)

func TestFirstAdmin(t *testing.T) {
	db := openDB(t)
	ctx := t.Context()
	a, err := db.CreateAdmin(ctx, "root@example.com", "$argon2id$h")
	if err != nil || !a.IsAdmin {
		t.Fatalf("CreateAdmin = %+v, %v", a, err)
	}
	_, err = db.CreateAdmin(ctx, "root@example.com", "h")
	wantKind(t, "CreateAdmin with a taken email", err, slicehub.KindConflict, "email_taken")

	if _, err := db.CreateUser(ctx, "ops@example.com", "h"); err != nil {
		t.Fatal(err)
	}
	u, err := db.PromoteAdmin(ctx, "ops@example.com", true)
	if err != nil || !u.IsAdmin {
		t.Fatalf("PromoteAdmin = %+v, %v", u, err)
	}
	if u, err := db.PromoteAdmin(ctx, "ops@example.com", false); err != nil || u.IsAdmin {
		t.Fatalf("demote = %+v, %v", u, err)
	}
	_, err = db.PromoteAdmin(ctx, "nobody@example.com", true)
	wantKind(t, "PromoteAdmin of an unknown email", err, slicehub.KindNotFound, "user_not_found")
}

func TestResetTokens(t *testing.T) {
	db := openDB(t)
	ctx := t.Context()
	u, err := db.CreateUser(ctx, "rae@example.com", "old")
	if err != nil {
		t.Fatal(err)
	}
	if err := db.CreateSession(ctx, u.ID, hashOf("s1"), time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	tok, other, expired := hashOf("reset"), hashOf("reset2"), hashOf("expired")
	for _, h := range [][]byte{tok, other} {
		if err := db.CreateResetToken(ctx, u.ID, h, time.Now().Add(30*time.Minute)); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.CreateResetToken(ctx, u.ID, expired, time.Now().Add(-time.Second)); err != nil {
		t.Fatal(err)
	}
	if got, err := db.ResetTokenUser(ctx, tok); err != nil || got.ID != u.ID {
		t.Fatalf("ResetTokenUser = %+v, %v", got, err)
	}
	_, err = db.ResetTokenUser(ctx, expired)
	wantKind(t, "ResetTokenUser of an expired token", err, slicehub.KindInvalid, "invalid_token")
	_, err = db.ResetPassword(ctx, expired, "new")
	wantKind(t, "ResetPassword with an expired token", err, slicehub.KindInvalid, "invalid_token")

	// Two submissions at once: exactly one wins.
	errs := make(chan error, 2)
	for i := 0; i < 2; i++ {
		go func() { _, err := db.ResetPassword(ctx, tok, "new"); errs <- err }()
	}
	var ok int
	for i := 0; i < 2; i++ {
		if err := <-errs; err == nil {
			ok++
		} else {
			wantKind(t, "the second ResetPassword", err, slicehub.KindInvalid, "invalid_token")
		}
	}
	if ok != 1 {
		t.Fatalf("%d concurrent redemptions of one token succeeded; want 1", ok)
	}
	if _, hash, _ := db.UserByEmail(ctx, "rae@example.com"); hash != "new" {
		t.Fatalf("password hash %q after reset", hash)
	}
	_, err = db.SessionUser(ctx, hashOf("s1"), time.Hour)
	wantKind(t, "a session after the reset", err, slicehub.KindUnauthorized, "")
	// The user's other outstanding token died with the reset.
	_, err = db.ResetPassword(ctx, other, "again")
	wantKind(t, "another token of the user after a reset", err, slicehub.KindInvalid, "invalid_token")

	// A disabled account cannot be reset.
	if err := db.CreateResetToken(ctx, u.ID, hashOf("later"), time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if _, err := db.SetUserDisabled(ctx, u.ID, true); err != nil {
		t.Fatal(err)
	}
	_, err = db.ResetPassword(ctx, hashOf("later"), "x")
	wantKind(t, "ResetPassword of a disabled user", err, slicehub.KindInvalid, "invalid_token")

	// Spent and expired rows are swept when the next token is made.
	var n int
	if err := db.Pool.QueryRow(ctx, `SELECT count(*) FROM password_resets WHERE user_id = $1`, u.ID).Scan(&n); err != nil || n != 1 {
		t.Fatalf("%d reset rows left (%v); want only the live one", n, err)
	}
}

func TestAdminKeys(t *testing.T) {
	db := openDB(t)
	ctx := t.Context()
	admin, err := db.CreateAdmin(ctx, "root@example.com", "h")
	if err != nil {
		t.Fatal(err)
	}
	k, err := db.CreateAdminKey(ctx, "ci", hashOf("key"), admin.ID)
	if err != nil || k.ID == 0 || k.Name != "ci" || k.CreatedBy != admin.ID || k.LastUsedAt != nil {
		t.Fatalf("CreateAdminKey = %+v, %v", k, err)
	}
	u, got, err := db.AdminKeyUser(ctx, hashOf("key"))
	if err != nil || u.ID != admin.ID || !u.IsAdmin || got.ID != k.ID {
		t.Fatalf("AdminKeyUser = %+v %+v %v", u, got, err)
	}
	keys, err := db.AdminKeys(ctx)
	if err != nil || len(keys) != 1 || keys[0].LastUsedAt == nil {
		t.Fatalf("AdminKeys = %+v, %v; want one, marked used", keys, err)
	}
	_, _, err = db.AdminKeyUser(ctx, hashOf("other"))
	wantKind(t, "AdminKeyUser of an unknown key", err, slicehub.KindUnauthorized, "invalid_key")
	if err := db.RevokeAdminKey(ctx, k.ID); err != nil {
		t.Fatal(err)
	}
	if err := db.RevokeAdminKey(ctx, k.ID); err != nil {
		t.Fatalf("revoking twice: %v", err)
	}
	_, _, err = db.AdminKeyUser(ctx, hashOf("key"))
	wantKind(t, "AdminKeyUser of a revoked key", err, slicehub.KindUnauthorized, "invalid_key")
	err = db.RevokeAdminKey(ctx, 999)
	wantKind(t, "RevokeAdminKey of an unknown id", err, slicehub.KindNotFound, "key_not_found")
}

// Every replica LISTENs on user_changed: a logout, a disable and a change
// of role must each be announced with the user's id.
func TestUserChangesAreAnnounced(t *testing.T) {
	db := openDB(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	u, err := db.CreateUser(ctx, "nia@example.com", "h")
	if err != nil {
		t.Fatal(err)
	}
	if err := db.CreateSession(ctx, u.ID, hashOf("s"), time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 16)
	lctx, stop := context.WithCancel(ctx)
	defer stop()
	listening := make(chan struct{})
	go db.Listen(lctx, []string{"user_changed", "ready_probe"}, func(ch, payload string) {
		if ch == "ready_probe" {
			select {
			case <-listening:
			default:
				close(listening)
			}
			return
		}
		got <- payload
	})
	// LISTEN is in place once a probe notification comes back.
	waitListening(t, ctx, db, listening)
	want := strconv.FormatInt(u.ID, 10)
	expect := func(what string, act func() error) {
		t.Helper()
		if err := act(); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		select {
		case p := <-got:
			if p != want {
				t.Fatalf("%s announced user %q; want %s", what, p, want)
			}
		case <-ctx.Done():
			t.Fatalf("%s was not announced on user_changed", what)
		}
	}
	expect("logout", func() error { return db.DeleteSession(ctx, hashOf("s")) })
	expect("disable", func() error { _, err := db.SetUserDisabled(ctx, u.ID, true); return err })
	expect("enable", func() error { _, err := db.SetUserDisabled(ctx, u.ID, false); return err })
	expect("promotion", func() error { _, err := db.PromoteAdmin(ctx, "nia@example.com", true); return err })
}

func waitListening(t *testing.T, ctx context.Context, db *postgres.DB, listening <-chan struct{}) {
	t.Helper()
	for {
		if _, err := db.Pool.Exec(ctx, `SELECT pg_notify('ready_probe', '')`); err != nil {
			t.Fatal(err)
		}
		select {
		case <-listening:
			return
		case <-ctx.Done():
			t.Fatal("the listener never started")
		case <-time.After(50 * time.Millisecond): // polling interval, not synchronisation
		}
	}
}
