package postgres_test

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/slicehub/slicehub"
	"github.com/slicehub/slicehub/gateway"
	"github.com/slicehub/slicehub/postgres"
	"github.com/slicehub/slicehub/testsupport"
)

// A PostgreSQL that does not answer is a dependency down, not a bug: the
// gateway's session lookup answers 503 with the JSON error and a
// Retry-After, and the same request succeeds once the database is back.
// (The chaos suite found 500 here, for SIGSTOP and for SIGKILL.)
func TestSessionLookupOnFrozenDatabaseIs503(t *testing.T) {
	db := openDB(t)
	ctx := t.Context()
	u, err := db.CreateUser(ctx, "frozen@example.com", "hash")
	if err != nil {
		t.Fatal(err)
	}
	var raw [32]byte
	_, _ = rand.Read(raw[:])
	h := sha256.Sum256(raw[:])
	if err := db.CreateSession(ctx, u.ID, h[:], time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	cookie := base64.RawURLEncoding.EncodeToString(raw[:])

	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	srv := gateway.New(gateway.Config{Logger: quiet, BackendTimeout: time.Second},
		gateway.Deps{Accounts: db, Slices: noSlices{}, Routes: noRoutes{}})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	})
	me := func() (*http.Response, []byte) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, "http://"+ln.Addr().String()+"/auth/me", nil)
		req.AddCookie(&http.Cookie{Name: slicehub.SessionCookie, Value: cookie})
		req.Header.Set("Accept", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, b
	}

	thaw, err := testsupport.Stack(t).FreezePostgres()
	if err != nil {
		t.Fatal(err)
	}
	thawed := false
	defer func() {
		if !thawed {
			thaw()
		}
	}()
	resp, body := me()
	thaw()
	thawed = true
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("GET /auth/me with PostgreSQL stopped: %d %s, want 503", resp.StatusCode, body)
	}
	var e struct{ Error, Code string }
	if err := json.Unmarshal(body, &e); err != nil || e.Error == "" || e.Code != "unavailable" {
		t.Fatalf("GET /auth/me with PostgreSQL stopped: body %s (%v), want the JSON error with code unavailable", body, err)
	}
	if resp.Header.Get("Retry-After") == "" {
		t.Fatalf("GET /auth/me with PostgreSQL stopped: no Retry-After header")
	}

	// Back: the same session works, so the 503 was the database's.
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, body = me()
		if resp.StatusCode == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET /auth/me after PostgreSQL continued: %d %s, want 200", resp.StatusCode, body)
		}
		time.Sleep(100 * time.Millisecond) // poll interval
	}
}

// A connection that PostgreSQL ends under the pool (an admin's
// pg_terminate_backend, as at a shutdown or failover: SQLSTATE 57P01) is
// KindUnavailable for the next operation on it, not internal.
func TestTerminatedConnectionIsUnavailable(t *testing.T) {
	ctx := t.Context()
	url := testsupport.NewDatabase(t)
	db, err := postgres.Open(ctx, url+"&pool_max_conns=1", testsupport.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	if err := db.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	var pid int
	if err := db.Pool.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&pid); err != nil {
		t.Fatal(err)
	}
	admin, err := postgres.Open(ctx, testsupport.Stack(t).Postgres.URL, testsupport.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	if _, err := admin.Pool.Exec(ctx, `SELECT pg_terminate_backend($1)`, pid); err != nil {
		t.Fatal(err)
	}
	_, err = db.SessionUser(ctx, make([]byte, 32), time.Hour)
	if err == nil {
		t.Fatal("SessionUser on a terminated connection: no error")
	}
	if got := slicehub.KindOf(err); got != slicehub.KindUnavailable {
		t.Fatalf("SessionUser on a terminated connection: kind %v (%v), want unavailable", got, err)
	}
	var ra slicehub.RetryAfter
	if !errors.As(err, &ra) || ra <= 0 {
		t.Fatalf("SessionUser on a terminated connection: %v carries no Retry-After", err)
	}
	// The pool drops the dead connection: the next call works.
	if _, err := db.SessionUser(ctx, make([]byte, 32), time.Hour); slicehub.KindOf(err) != slicehub.KindUnauthorized {
		t.Fatalf("SessionUser after the pool reconnected: %v, want unauthorized (no such session)", err)
	}
}

type noSlices struct{}

var errUnused = errors.New("not used by this test")

func (noSlices) Claim(context.Context, int64) (slicehub.Slice, error) {
	return slicehub.Slice{}, errUnused
}
func (noSlices) SliceForUser(context.Context, int64) (slicehub.Slice, error) {
	return slicehub.Slice{}, slicehub.Errorf("test.slice", slicehub.KindNotFound, "no_slice", "no slice")
}
func (noSlices) GatewayToken(context.Context, int64) (string, error) { return "", errUnused }
func (noSlices) Bootstrap(context.Context, slicehub.BootstrapRequest) (slicehub.SliceCredentials, error) {
	return slicehub.SliceCredentials{}, errUnused
}

type noRoutes struct{}

func (noRoutes) Lookup(int64) (slicehub.Route, bool) { return slicehub.Route{}, false }
