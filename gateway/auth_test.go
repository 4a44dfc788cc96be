package gateway

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/slicehub/slicehub"
	"github.com/slicehub/slicehub/gateway/accounts"
)

var jsonHeader = map[string]string{"Content-Type": "application/json"}

func TestSignupMeLogout(t *testing.T) {
	e := newEnv(t)
	u := &testUser{email: "ada@example.com", client: newBrowser()}
	r := e.do(u.client, "POST", "/auth/signup", `{"email":"  Ada@Example.COM ","password":"correct horse battery"}`, jsonHeader)
	if r.status != http.StatusCreated {
		t.Fatalf("signup: status %d, body %s", r.status, r.body)
	}
	var a accounts.Account
	r.decode(t, &a)
	if a.User.Email != "ada@example.com" || a.User.ID == 0 || a.User.IsAdmin {
		t.Fatalf("signup user = %+v, want the normalised email, an id, not admin", a.User)
	}
	if a.Slice == nil || a.Slice.State != slicehub.StateAssigned {
		t.Fatalf("signup slice = %+v, want the claimed slice", a.Slice)
	}

	r = e.do(u.client, "GET", "/auth/me", "", nil)
	if r.status != http.StatusOK {
		t.Fatalf("me: status %d, body %s", r.status, r.body)
	}
	var me accounts.Account
	r.decode(t, &me)
	if me.User != a.User || *me.Slice != *a.Slice {
		t.Fatalf("me = %+v %+v, want %+v %+v", me.User, me.Slice, a.User, a.Slice)
	}

	r = e.do(u.client, "POST", "/auth/logout", "", nil)
	if r.status != http.StatusNoContent {
		t.Fatalf("logout: status %d, body %s", r.status, r.body)
	}
	if n := e.accounts.sessionCount(); n != 0 {
		t.Fatalf("after logout %d sessions remain in the store, want 0", n)
	}
	r = e.do(u.client, "GET", "/auth/me", "", nil)
	if r.status != http.StatusUnauthorized || r.errorCode(t) != "no_session" {
		t.Fatalf("me after logout: status %d, body %s; want 401 no_session", r.status, r.body)
	}
}

func TestSessionCookieFlags(t *testing.T) {
	for _, secure := range []bool{false, true} {
		t.Run(fmt.Sprintf("secure=%v", secure), func(t *testing.T) {
			e := newEnv(t, func(c *Config, _ *Deps) { c.CookieSecure = secure; c.SessionAbsolute = 48 * time.Hour })
			r := e.do(nil, "POST", "/auth/signup", `{"email":"bo@example.com","password":"correct horse battery"}`, jsonHeader)
			if r.status != http.StatusCreated {
				t.Fatalf("signup: status %d", r.status)
			}
			cookies := (&http.Response{Header: r.header}).Cookies()
			if len(cookies) != 1 {
				t.Fatalf("signup set %d cookies, want 1: %v", len(cookies), r.header["Set-Cookie"])
			}
			c := cookies[0]
			raw := r.header.Get("Set-Cookie")
			if c.Name != slicehub.SessionCookie || !c.HttpOnly || c.SameSite != http.SameSiteLaxMode || c.Path != "/" ||
				c.Secure != secure || c.MaxAge != int((48*time.Hour).Seconds()) {
				t.Fatalf("cookie %q: want HttpOnly, SameSite=Lax, Path=/, Secure=%v, Max-Age=48h", raw, secure)
			}
			if len(c.Value) != accounts.TokenLen {
				t.Fatalf("token %q has %d characters, want %d (256 bits, base64url)", c.Value, len(c.Value), accounts.TokenLen)
			}
		})
	}
}

func TestSignupRejects(t *testing.T) {
	for _, tc := range []struct {
		name   string
		body   string
		hdr    map[string]string
		status int
		code   string
	}{
		{"form content type", `{"email":"a@example.com","password":"correct horse battery"}`,
			map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, 400, "json_required"},
		{"text/plain", `{"email":"a@example.com","password":"correct horse battery"}`,
			map[string]string{"Content-Type": "text/plain"}, 400, "json_required"},
		{"foreign origin", `{"email":"a@example.com","password":"correct horse battery"}`,
			map[string]string{"Content-Type": "application/json", "Origin": "https://evil.example"}, 403, "bad_origin"},
		{"null origin", `{"email":"a@example.com","password":"correct horse battery"}`,
			map[string]string{"Content-Type": "application/json", "Origin": "null"}, 403, "bad_origin"},
		{"bad email", `{"email":"not-an-email","password":"correct horse battery"}`, jsonHeader, 400, "invalid_email"},
		{"display name", `{"email":"Ada <a@example.com>","password":"correct horse battery"}`, jsonHeader, 400, "invalid_email"},
		{"short password", `{"email":"a@example.com","password":"short"}`, jsonHeader, 400, "weak_password"},
		{"long password", `{"email":"a@example.com","password":"` + strings.Repeat("x", 129) + `"}`, jsonHeader, 400, "weak_password"},
		{"password is email", `{"email":"longname@example.com","password":"LongName@example.com"}`, jsonHeader, 400, "weak_password"},
		{"unknown field", `{"email":"a@example.com","password":"correct horse battery","admin":true}`, jsonHeader, 400, "invalid_json"},
		{"not json", `email=a`, jsonHeader, 400, "invalid_json"},
		{"too large", `{"email":"a@example.com","password":"` + strings.Repeat("x", 9000) + `"}`, jsonHeader, 413, "too_large"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			r := e.do(nil, "POST", "/auth/signup", tc.body, tc.hdr)
			if r.status != tc.status {
				t.Fatalf("status %d, body %s; want %d", r.status, r.body, tc.status)
			}
			if code := r.errorCode(t); code != tc.code {
				t.Fatalf("code %q, want %q", code, tc.code)
			}
		})
	}
}

func TestSignupAllowsOwnAndConfiguredOrigins(t *testing.T) {
	e := newEnv(t, func(c *Config, _ *Deps) { c.AllowedOrigins = []string{"https://App.Example.com/"} })
	for i, origin := range []string{"http://" + "HOST", "https://app.example.com"} {
		origin = strings.Replace(origin, "HOST", e.host, 1)
		body := fmt.Sprintf(`{"email":"o%d@example.com","password":"correct horse battery"}`, i)
		r := e.do(nil, "POST", "/auth/signup", body, map[string]string{"Content-Type": "application/json; charset=utf-8", "Origin": origin})
		if r.status != http.StatusCreated {
			t.Fatalf("origin %s: status %d, body %s", origin, r.status, r.body)
		}
	}
}

func TestSignupDuplicateEmail(t *testing.T) {
	e := newEnv(t)
	e.signup("dup@example.com")
	r := e.do(nil, "POST", "/auth/signup", `{"email":"DUP@example.com","password":"another password"}`, jsonHeader)
	if r.status != http.StatusConflict || r.errorCode(t) != "email_taken" {
		t.Fatalf("status %d, body %s; want 409 email_taken", r.status, r.body)
	}
}

func TestSignupWithoutSlice(t *testing.T) {
	e := newEnv(t)
	e.slices.claimErr = errors.New("pool exhausted")
	r := e.do(nil, "POST", "/auth/signup", `{"email":"early@example.com","password":"correct horse battery"}`, jsonHeader)
	if r.status != http.StatusCreated || !strings.Contains(string(r.body), `"slice":null`) {
		t.Fatalf("status %d, body %s; want 201 with slice null", r.status, r.body)
	}
	// The next login claims.
	e.slices.mu.Lock()
	e.slices.claimErr = nil
	e.slices.mu.Unlock()
	r = e.do(nil, "POST", "/auth/login", `{"email":"early@example.com","password":"correct horse battery"}`, jsonHeader)
	var a accounts.Account
	r.decode(t, &a)
	if r.status != http.StatusOK || a.Slice == nil {
		t.Fatalf("login: status %d, body %s; want 200 with a slice", r.status, r.body)
	}
}

func TestLogin(t *testing.T) {
	e := newEnv(t)
	e.signup("cy@example.com")
	for _, tc := range []struct {
		name, body string
		status     int
		code       string
	}{
		{"right", `{"email":"CY@example.com ","password":"correct horse battery"}`, 200, ""},
		{"wrong password", `{"email":"cy@example.com","password":"wrong horse battery"}`, 401, "invalid_credentials"},
		{"unknown email", `{"email":"nobody@example.com","password":"correct horse battery"}`, 401, "invalid_credentials"},
		{"malformed email", `{"email":"nobody","password":"correct horse battery"}`, 401, "invalid_credentials"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := e.do(nil, "POST", "/auth/login", tc.body, jsonHeader)
			if r.status != tc.status {
				t.Fatalf("status %d, body %s; want %d", r.status, r.body, tc.status)
			}
			if tc.code != "" && r.errorCode(t) != tc.code {
				t.Fatalf("body %s, want code %s", r.body, tc.code)
			}
			if tc.code != "" && r.header.Get("Set-Cookie") != "" {
				t.Fatalf("a failed login set a cookie: %s", r.header.Get("Set-Cookie"))
			}
		})
	}
}

func TestLoginRotatesSession(t *testing.T) {
	e := newEnv(t)
	u := e.signup("dee@example.com")
	before := e.sessionToken(u)
	r := e.do(u.client, "POST", "/auth/login", `{"email":"dee@example.com","password":"correct horse battery"}`, jsonHeader)
	if r.status != http.StatusOK {
		t.Fatalf("login: %d %s", r.status, r.body)
	}
	after := e.sessionToken(u)
	if after == before {
		t.Fatal("login kept the session token; want a new one")
	}
	if n := e.accounts.sessionCount(); n != 1 {
		t.Fatalf("%d sessions stored after re-login, want 1 (the old one deleted)", n)
	}
	// The old token is dead even on this replica's cache.
	old := newBrowser()
	old.Jar.SetCookies(mustURL(e.url), []*http.Cookie{{Name: slicehub.SessionCookie, Value: before}})
	if r := e.do(old, "GET", "/auth/me", "", nil); r.status != http.StatusUnauthorized {
		t.Fatalf("old token after re-login: status %d, want 401", r.status)
	}
}

func TestLoginDisabledAccount(t *testing.T) {
	e := newEnv(t)
	e.signup("gone@example.com")
	e.accounts.mu.Lock()
	u := e.accounts.users["gone@example.com"]
	now := e.clock.Now()
	u.DisabledAt = &now
	e.accounts.users["gone@example.com"] = u
	e.accounts.mu.Unlock()
	r := e.do(nil, "POST", "/auth/login", `{"email":"gone@example.com","password":"correct horse battery"}`, jsonHeader)
	if r.status != http.StatusForbidden || r.errorCode(t) != "account_disabled" {
		t.Fatalf("status %d, body %s; want 403 account_disabled", r.status, r.body)
	}
}

func TestLoginThrottledPerIP(t *testing.T) {
	e := newEnv(t, func(c *Config, _ *Deps) {
		c.Throttle = DefaultThrottles
		c.Throttle.LoginPerIP = Rate{Burst: 3, Every: time.Minute}
	})
	body := `{"email":"x@example.com","password":"correct horse battery"}`
	for i := 0; i < 3; i++ {
		// A client-chosen X-Forwarded-For must not buy a new budget: no proxy is trusted.
		hdr := map[string]string{"Content-Type": "application/json", "X-Forwarded-For": fmt.Sprintf("10.0.0.%d", i)}
		if r := e.do(nil, "POST", "/auth/login", body, hdr); r.status != http.StatusUnauthorized {
			t.Fatalf("attempt %d: status %d, want 401", i+1, r.status)
		}
	}
	r := e.do(nil, "POST", "/auth/login", body, map[string]string{"Content-Type": "application/json", "X-Forwarded-For": "10.9.9.9"})
	if r.status != http.StatusTooManyRequests || r.errorCode(t) != "rate_limited" {
		t.Fatalf("4th attempt: status %d, body %s; want 429 rate_limited", r.status, r.body)
	}
	if ra, err := strconv.Atoi(r.header.Get("Retry-After")); err != nil || ra < 1 || ra > 60 {
		t.Fatalf("Retry-After %q, want 1..60 seconds", r.header.Get("Retry-After"))
	}
	e.clock.Advance(time.Minute)
	if r := e.do(nil, "POST", "/auth/login", body, jsonHeader); r.status != http.StatusUnauthorized {
		t.Fatalf("after the refill: status %d, want 401", r.status)
	}
}

func TestLoginThrottledPerAccount(t *testing.T) {
	e := newEnv(t, func(c *Config, _ *Deps) {
		c.Throttle = DefaultThrottles
		c.Throttle.LoginPerAccount = Rate{Burst: 2, Every: time.Minute}
	})
	e.signup("eve@example.com")
	right := `{"email":"eve@example.com","password":"correct horse battery"}`
	wrong := `{"email":"eve@example.com","password":"wrong horse battery"}`
	// Successes do not spend the account's budget.
	for i := 0; i < 3; i++ {
		if r := e.do(nil, "POST", "/auth/login", right, jsonHeader); r.status != http.StatusOK {
			t.Fatalf("success %d: status %d", i, r.status)
		}
	}
	for i := 0; i < 2; i++ {
		if r := e.do(nil, "POST", "/auth/login", wrong, jsonHeader); r.status != http.StatusUnauthorized {
			t.Fatalf("failure %d: status %d", i, r.status)
		}
	}
	r := e.do(nil, "POST", "/auth/login", right, jsonHeader)
	if r.status != http.StatusTooManyRequests || r.header.Get("Retry-After") == "" {
		t.Fatalf("after the budget: status %d, Retry-After %q; want 429 with Retry-After", r.status, r.header.Get("Retry-After"))
	}
	e.clock.Advance(time.Minute)
	if r := e.do(nil, "POST", "/auth/login", right, jsonHeader); r.status != http.StatusOK {
		t.Fatalf("after a refill: status %d, want 200", r.status)
	}
}

func TestSignupThrottled(t *testing.T) {
	e := newEnv(t, func(c *Config, _ *Deps) {
		c.Throttle = DefaultThrottles
		c.Throttle.SignupPerIP = Rate{Burst: 2, Every: time.Hour}
	})
	for i := 0; i < 2; i++ {
		e.signup(fmt.Sprintf("s%d@example.com", i))
	}
	r := e.do(nil, "POST", "/auth/signup", `{"email":"s9@example.com","password":"correct horse battery"}`, jsonHeader)
	if r.status != http.StatusTooManyRequests || r.errorCode(t) != "rate_limited" {
		t.Fatalf("status %d, body %s; want 429", r.status, r.body)
	}
}

func TestTrustedProxyDecidesClientIP(t *testing.T) {
	e := newEnv(t, func(c *Config, _ *Deps) {
		c.TrustedProxies = []string{"127.0.0.0/8"}
		c.Throttle = DefaultThrottles
		c.Throttle.LoginPerIP = Rate{Burst: 1, Every: time.Hour}
	})
	body := `{"email":"x@example.com","password":"correct horse battery"}`
	// Behind the trusted proxy each browser has its own budget; the
	// left-most entries are the client's own claims and are ignored.
	for _, xff := range []string{"203.0.113.1", "198.51.100.7, 203.0.113.2", "1.1.1.1, 203.0.113.3"} {
		hdr := map[string]string{"Content-Type": "application/json", "X-Forwarded-For": xff}
		if r := e.do(nil, "POST", "/auth/login", body, hdr); r.status != http.StatusUnauthorized {
			t.Fatalf("xff %q: status %d, want 401 (own budget)", xff, r.status)
		}
	}
	hdr := map[string]string{"Content-Type": "application/json", "X-Forwarded-For": "9.9.9.9, 203.0.113.1"}
	if r := e.do(nil, "POST", "/auth/login", body, hdr); r.status != http.StatusTooManyRequests {
		t.Fatalf("forged left entry: status %d, want 429 (203.0.113.1's budget is spent)", r.status)
	}
}

func TestSessionIdleAndAbsoluteExpiry(t *testing.T) {
	e := newEnv(t, func(c *Config, _ *Deps) {
		c.SessionIdle = time.Hour
		c.SessionAbsolute = 3 * time.Hour
		c.SessionCacheTTL = time.Second
	})
	u := e.signup("fay@example.com")
	// Active every 50 minutes: the idle limit never bites, the absolute one does.
	for i := 0; i < 3; i++ {
		e.clock.Advance(50 * time.Minute)
		if r := e.do(u.client, "GET", "/auth/me", "", nil); r.status != http.StatusOK {
			t.Fatalf("after %d min: status %d, want 200", (i+1)*50, r.status)
		}
	}
	e.clock.Advance(40 * time.Minute) // 190 min > 3 h
	if r := e.do(u.client, "GET", "/auth/me", "", nil); r.status != http.StatusUnauthorized {
		t.Fatalf("past the absolute expiry: status %d, want 401", r.status)
	}

	v := e.signup("gil@example.com")
	e.clock.Advance(61 * time.Minute)
	if r := e.do(v.client, "GET", "/auth/me", "", nil); r.status != http.StatusUnauthorized {
		t.Fatalf("idle 61 min: status %d, want 401", r.status)
	}
}

func TestSessionCache(t *testing.T) {
	e := newEnv(t, func(c *Config, _ *Deps) { c.SessionCacheTTL = 10 * time.Second })
	u := e.signup("hal@example.com")
	for i := 0; i < 5; i++ {
		e.do(u.client, "GET", "/auth/me", "", nil)
	}
	if n := e.accounts.sessionUserCalls.Load(); n != 1 {
		t.Fatalf("5 requests made %d session reads, want 1", n)
	}
	e.clock.Advance(11 * time.Second)
	e.do(u.client, "GET", "/auth/me", "", nil)
	if n := e.accounts.sessionUserCalls.Load(); n != 2 {
		t.Fatalf("after the TTL: %d session reads, want 2", n)
	}
	e.srv.Invalidate(u.id)
	e.do(u.client, "GET", "/auth/me", "", nil)
	if n := e.accounts.sessionUserCalls.Load(); n != 3 {
		t.Fatalf("after Invalidate: %d session reads, want 3", n)
	}
	e.srv.InvalidateAll()
	e.do(u.client, "GET", "/auth/me", "", nil)
	if n := e.accounts.sessionUserCalls.Load(); n != 4 {
		t.Fatalf("after InvalidateAll: %d session reads, want 4", n)
	}
}

func TestBadSessionCookiesThrottled(t *testing.T) {
	e := newEnv(t, func(c *Config, _ *Deps) {
		c.Throttle = DefaultThrottles
		c.Throttle.BadSessionPerIP = Rate{Burst: 3, Every: time.Hour}
	})
	c := newBrowser()
	for i := 0; i < 10; i++ {
		tok, _ := accounts.NewToken()
		c.Jar.SetCookies(mustURL(e.url), []*http.Cookie{{Name: slicehub.SessionCookie, Value: tok}})
		e.do(c, "GET", "/auth/me", "", nil)
	}
	if n := e.accounts.sessionUserCalls.Load(); n != 3 {
		t.Fatalf("10 random tokens reached the store %d times, want 3", n)
	}
	// Malformed cookies never reach it at all.
	c.Jar.SetCookies(mustURL(e.url), []*http.Cookie{{Name: slicehub.SessionCookie, Value: "short"}})
	if r := e.do(c, "GET", "/auth/me", "", nil); r.status != http.StatusUnauthorized {
		t.Fatalf("malformed cookie: status %d", r.status)
	}
}

func TestAdminGuard(t *testing.T) {
	e := newEnvSetup(t, func(s *Server) {
		s.Admin().Get("/whoami", func(c *fiber.Ctx) error {
			return c.JSON(fiber.Map{"admin": c.Locals(LocalsUserID)})
		})
	})
	plain := e.signup("user@example.com")
	boss := e.signup("boss@example.com")
	e.accounts.setAdmin("boss@example.com", true)
	e.srv.Invalidate(boss.id)

	if r := e.do(nil, "GET", "/admin/whoami", "", nil); r.status != 401 || r.errorCode(t) != "no_session" {
		t.Fatalf("anonymous: %d %s, want 401", r.status, r.body)
	}
	if r := e.do(plain.client, "GET", "/admin/whoami", "", nil); r.status != 403 || r.errorCode(t) != "forbidden" {
		t.Fatalf("non-admin: %d %s, want 403", r.status, r.body)
	}
	if r := e.do(plain.client, "GET", "/admin/nothing-here", "", nil); r.status != 403 {
		t.Fatalf("non-admin, unknown admin path: %d, want 403 (the guard runs first)", r.status)
	}
	r := e.do(boss.client, "GET", "/admin/whoami", "", nil)
	if r.status != 200 || !strings.Contains(string(r.body), strconv.FormatInt(boss.id, 10)) {
		t.Fatalf("admin: %d %s", r.status, r.body)
	}
	if r := e.do(boss.client, "GET", "/admin/nothing-here", "", nil); r.status != 404 || r.errorCode(t) != "not_found" {
		t.Fatalf("admin, unknown path: %d %s, want 404 JSON", r.status, r.body)
	}
}

func TestUnknownRouteIsJSON(t *testing.T) {
	e := newEnv(t)
	r := e.do(nil, "GET", "/nope", "", nil)
	if r.status != 404 || r.errorCode(t) != "not_found" {
		t.Fatalf("%d %s", r.status, r.body)
	}
	r = e.do(nil, "GET", "/auth/signup", "", nil)
	if r.status != 404 && r.status != 405 {
		t.Fatalf("GET /auth/signup: %d %s", r.status, r.body)
	}
	r.errorCode(t)
}

func TestCSRFDoubleSubmit(t *testing.T) {
	e := newEnv(t)
	app := fiber.New(fiber.Config{ErrorHandler: e.srv.writeError})
	app.Get("/form", func(c *fiber.Ctx) error { return c.SendString(e.srv.CSRFToken(c)) })
	app.Post("/form", func(c *fiber.Ctx) error {
		if err := e.srv.VerifyCSRF(c); err != nil {
			return err
		}
		return c.SendStatus(204)
	})

	resp, err := app.Test(httptest.NewRequest("GET", "/form", nil))
	if err != nil {
		t.Fatal(err)
	}
	var cookie *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == slicehub.CSRFCookie {
			cookie = c
		}
	}
	if cookie == nil || !cookie.HttpOnly || cookie.SameSite != http.SameSiteLaxMode {
		t.Fatalf("CSRF cookie %v: want HttpOnly, SameSite=Lax", resp.Header["Set-Cookie"])
	}
	post := func(field string) int {
		req := httptest.NewRequest("POST", "/form", strings.NewReader("csrf_token="+field))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.AddCookie(cookie)
		resp, err := app.Test(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode
	}
	if got := post(cookie.Value); got != 204 {
		t.Fatalf("matching token: %d, want 204", got)
	}
	if got := post("forged"); got != 403 {
		t.Fatalf("forged token: %d, want 403", got)
	}
}

// fakeThrottle is the replicas' shared store, as PostgreSQL keeps it:
// one bucket per budget and key, whichever replica asks.
type fakeThrottle struct {
	mu      sync.Mutex
	now     func() time.Time
	budgets map[string]*accounts.Limiter
	down    bool
}

func (f *fakeThrottle) bucket(name string, burst int, every time.Duration) (*accounts.Limiter, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return nil, errors.New("connection refused")
	}
	if f.budgets[name] == nil {
		f.budgets[name] = accounts.NewLimiter(Rate{Burst: burst, Every: every}, f.now)
	}
	return f.budgets[name], nil
}

func (f *fakeThrottle) TakeToken(_ context.Context, name, key string, burst int, every time.Duration) (time.Duration, error) {
	l, err := f.bucket(name, burst, every)
	if err != nil {
		return 0, err
	}
	return l.Take(key), nil
}

func (f *fakeThrottle) TokenWait(_ context.Context, name, key string, burst int, every time.Duration) (time.Duration, error) {
	l, err := f.bucket(name, burst, every)
	if err != nil {
		return 0, err
	}
	return l.Wait(key), nil
}

func (f *fakeThrottle) PruneTokens(context.Context, time.Duration) (int64, error) { return 0, nil }

// Two replicas that share a throttle store give a guesser one account
// budget between them, not one each; and a store that is down leaves each
// replica its own budget rather than locking everyone out.
func TestLoginBudgetIsSharedByReplicas(t *testing.T) {
	shared := &fakeThrottle{now: time.Now, budgets: map[string]*accounts.Limiter{}}
	replica := func() *testEnv {
		e := newEnv(t, func(c *Config, d *Deps) {
			c.Throttle = DefaultThrottles
			c.Throttle.LoginPerAccount = Rate{Burst: 4, Every: time.Hour}
			d.Throttle = shared
		})
		e.signup("kim@example.com") // each replica's fake accounts hold the user
		return e
	}
	a, b := replica(), replica()
	wrong := `{"email":"kim@example.com","password":"wrong horse battery"}`
	for i := range 4 {
		e := []*testEnv{a, b}[i%2]
		if r := e.do(nil, "POST", "/auth/login", wrong, jsonHeader); r.status != http.StatusUnauthorized {
			t.Fatalf("failure %d: status %d %s", i+1, r.status, r.body)
		}
	}
	// Each replica alone has spent only 2 of its 4; the shared bucket is empty.
	for name, e := range map[string]*testEnv{"a": a, "b": b} {
		r := e.do(nil, "POST", "/auth/login", wrong, jsonHeader)
		if r.status != http.StatusTooManyRequests || r.errorCode(t) != "rate_limited" || r.header.Get("Retry-After") == "" {
			t.Fatalf("replica %s after 4 failures between them: %d %s, want 429 with Retry-After", name, r.status, r.body)
		}
	}

	shared.mu.Lock()
	shared.down = true
	shared.mu.Unlock()
	c := replica()
	for i := range 4 {
		if r := c.do(nil, "POST", "/auth/login", wrong, jsonHeader); r.status != http.StatusUnauthorized {
			t.Fatalf("store down, failure %d: status %d %s; want the local budget to apply", i+1, r.status, r.body)
		}
	}
	if r := c.do(nil, "POST", "/auth/login", wrong, jsonHeader); r.status != http.StatusTooManyRequests {
		t.Fatalf("store down, past the local budget: %d, want 429", r.status)
	}
}
