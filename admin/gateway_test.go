package admin

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/slicehub/slicehub"
	"github.com/slicehub/slicehub/gateway"
)

// The dashboard mounted on the real gateway, as cmd/slicehub wires it: the
// gateway's admin guard (no session, a customer's session, an admin's),
// its double-submit CSRF cookie and its origin check, with the dashboard's
// own fakes behind. What the fakes above stand in for is checked here once
// for real.

// gwAccounts knows sessions only: the tests plant them.
type gwAccounts struct {
	mu       sync.Mutex
	sessions map[[32]byte]slicehub.User
}

func (a *gwAccounts) session(t *testing.T, u slicehub.User) string {
	var raw [32]byte
	rand.Read(raw[:])
	a.mu.Lock()
	a.sessions[sha256.Sum256(raw[:])] = u
	a.mu.Unlock()
	return base64.RawURLEncoding.EncodeToString(raw[:])
}

var errUnused = slicehub.Errorf("fake", slicehub.KindInternal, "", "not used by this test")

func (a *gwAccounts) SessionUser(_ context.Context, h []byte, _ time.Duration) (slicehub.User, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	u, ok := a.sessions[[32]byte(h)]
	if !ok {
		return u, slicehub.Errorf("fake.session", slicehub.KindUnauthorized, "unauthorized", "no session")
	}
	return u, nil
}
func (a *gwAccounts) CreateUser(context.Context, string, string) (slicehub.User, error) {
	return slicehub.User{}, errUnused
}
func (a *gwAccounts) UserByEmail(context.Context, string) (slicehub.User, string, error) {
	return slicehub.User{}, "", errUnused
}
func (a *gwAccounts) CreateSession(context.Context, int64, []byte, time.Time) error { return errUnused }
func (a *gwAccounts) DeleteSession(context.Context, []byte) error                   { return nil }
func (a *gwAccounts) CreateResetToken(context.Context, int64, []byte, time.Time) error {
	return errUnused
}
func (a *gwAccounts) ResetTokenUser(context.Context, []byte) (slicehub.User, error) {
	return slicehub.User{}, errUnused
}
func (a *gwAccounts) ResetPassword(context.Context, []byte, string) (slicehub.User, error) {
	return slicehub.User{}, errUnused
}
func (a *gwAccounts) CreateAdminKey(context.Context, string, []byte, int64) (slicehub.AdminKey, error) {
	return slicehub.AdminKey{}, errUnused
}
func (a *gwAccounts) AdminKeys(context.Context) ([]slicehub.AdminKey, error) { return nil, errUnused }
func (a *gwAccounts) RevokeAdminKey(context.Context, int64) error            { return errUnused }
func (a *gwAccounts) AdminKeyUser(context.Context, []byte) (slicehub.User, slicehub.AdminKey, error) {
	return slicehub.User{}, slicehub.AdminKey{}, slicehub.Errorf("fake.key", slicehub.KindUnauthorized, "invalid_key", "no keys")
}

// gwSlices: nobody has a slice, as far as sessions are concerned.
type gwSlices struct{}

func (gwSlices) Claim(context.Context, int64) (slicehub.Slice, error) {
	return slicehub.Slice{}, errUnused
}
func (gwSlices) SliceForUser(context.Context, int64) (slicehub.Slice, error) {
	return slicehub.Slice{}, slicehub.Errorf("fake.slice", slicehub.KindNotFound, "no_slice", "no slice")
}
func (gwSlices) GatewayToken(context.Context, int64) (string, error) { return "", errUnused }
func (gwSlices) Bootstrap(context.Context, slicehub.BootstrapRequest) (slicehub.SliceCredentials, error) {
	return slicehub.SliceCredentials{}, errUnused
}

func TestDashboardBehindTheGateway(t *testing.T) {
	e := newDashEnv(t, true) // for its fakes; its own app is not used
	accounts := &gwAccounts{sessions: map[[32]byte]slicehub.User{}}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	srv := gateway.New(gateway.Config{Logger: quiet}, gateway.Deps{Accounts: accounts, Slices: gwSlices{}, Routes: fakeRoutes{addr: e.slice.addr()}})
	done := make(chan struct{})
	Register(srv.Admin(), Deps{Store: e.store, Pool: e.pool, Routes: fakeRoutes{addr: e.slice.addr()},
		UserKey: gateway.LocalsUserID, KeyKey: gateway.LocalsAdminKeyID, Logger: quiet,
		Web: srv, Tokens: fakeTokens{}, Events: fakeEvents{}, Telemetry: e.tel,
		Poll: 20 * time.Millisecond, Done: done})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() {
		close(done)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	base := "http://" + ln.Addr().String()
	admin := accounts.session(t, slicehub.User{ID: 7, Email: "ops@x", IsAdmin: true})
	customer := accounts.session(t, slicehub.User{ID: 2, Email: "b@x"})

	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	do := func(method, path, session, csrf string, form url.Values) (*http.Response, string) {
		t.Helper()
		var body io.Reader
		if form != nil {
			body = strings.NewReader(form.Encode())
		}
		req, _ := http.NewRequest(method, base+path, body)
		if form != nil {
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			req.Header.Set("Origin", base)
		}
		if session != "" {
			req.AddCookie(&http.Cookie{Name: slicehub.SessionCookie, Value: session})
		}
		if csrf != "" {
			req.AddCookie(&http.Cookie{Name: slicehub.CSRFCookie, Value: csrf})
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}

	// The guard: nobody, then a customer, are turned away.
	if resp, _ := do("GET", "/admin", "", "", nil); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("GET /admin without a session = %d", resp.StatusCode)
	}
	if resp, _ := do("GET", "/admin", customer, "", nil); resp.StatusCode != http.StatusForbidden {
		t.Errorf("GET /admin as a customer = %d", resp.StatusCode)
	}
	if resp, _ := do("GET", "/admin/slices/1/qr.png", customer, "", nil); resp.StatusCode != http.StatusForbidden {
		t.Errorf("the QR code as a customer = %d", resp.StatusCode)
	}

	// The admin gets the page and a CSRF cookie that the forms repeat.
	resp, body := do("GET", "/admin", admin, "", nil)
	if resp.StatusCode != 200 || !strings.Contains(body, `id="slice-grid"`) {
		t.Fatalf("GET /admin as the admin = %d\n%.300s", resp.StatusCode, body)
	}
	var cookie string
	for _, c := range resp.Cookies() {
		if c.Name == slicehub.CSRFCookie {
			cookie = c.Value
		}
	}
	m := regexp.MustCompile(`name="csrf_token" value="([^"]+)"`).FindStringSubmatch(body)
	if cookie == "" || m == nil || m[1] != cookie {
		t.Fatalf("CSRF cookie %q, form token %v", cookie, m)
	}

	// A form without the token, or from another origin, does nothing.
	if resp, _ := do("POST", "/admin/slices/1/suspend", admin, cookie, url.Values{}); resp.StatusCode != http.StatusForbidden {
		t.Errorf("suspend without the CSRF token = %d", resp.StatusCode)
	}
	if resp, _ := do("POST", "/admin/slices/1/suspend", admin, "", url.Values{"csrf_token": {cookie}}); resp.StatusCode != http.StatusForbidden {
		t.Errorf("suspend without the CSRF cookie = %d", resp.StatusCode)
	}
	if len(e.pool.actors) != 0 {
		t.Fatalf("a refused form reached the scheduler: %v", e.pool.actors)
	}
	resp, _ = do("POST", "/admin/slices/1/suspend", admin, cookie, url.Values{"csrf_token": {cookie}})
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/admin/slices/1?done=suspend" {
		t.Errorf("suspend = %d → %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	if strings.Join(e.pool.actors, ",") != "admin:7" {
		t.Errorf("scheduler actions by %v; want admin:7", e.pool.actors)
	}

	// The JSON API beside it is unchanged.
	resp, body = do("GET", "/admin/api/status", admin, "", nil)
	if resp.StatusCode != 200 || !strings.Contains(body, `"suspended":1`) {
		t.Errorf("GET /admin/api/status = %d %s", resp.StatusCode, body)
	}

	// The live stream, through the gateway.
	req, _ := http.NewRequestWithContext(t.Context(), "GET", base+"/admin/events", nil)
	req.AddCookie(&http.Cookie{Name: slicehub.SessionCookie, Value: admin})
	sresp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer sresp.Body.Close()
	ev := readEvent(t, bufio.NewReader(sresp.Body))
	mustContain(t, "live event through the gateway", ev.HTML, `data-slice="1" data-state="suspended"`)
}
