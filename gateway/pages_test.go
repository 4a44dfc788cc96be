package gateway

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/slicehub/slicehub"
	"github.com/slicehub/slicehub/gateway/accounts"
	"github.com/slicehub/slicehub/gateway/pages"
)

var formHeader = map[string]string{"Content-Type": "application/x-www-form-urlencoded"}

func cookieNamed(h http.Header, name string) *http.Cookie {
	for _, c := range (&http.Response{Header: h}).Cookies() {
		if c.Name == name {
			return c
		}
	}
	return nil
}

func TestLandingPage(t *testing.T) {
	e := newPageEnv(t)
	r := e.do(nil, "GET", "/", "", nil)
	if r.status != http.StatusOK || !strings.Contains(r.header.Get("Content-Type"), "text/html") {
		t.Fatalf("GET / anonymous: %d %s", r.status, r.header.Get("Content-Type"))
	}
	for _, want := range []string{`href="/signup"`, `href="/login"`} {
		if !strings.Contains(string(r.body), want) {
			t.Errorf("landing page lacks %s", want)
		}
	}
	u := e.signup("lin@example.com")
	r = e.do(u.client, "GET", "/", "", nil)
	if r.status != http.StatusSeeOther || r.header.Get("Location") != "/workspace" {
		t.Fatalf("GET / signed in: %d Location %q; want 303 /workspace", r.status, r.header.Get("Location"))
	}
	for _, p := range []string{"/signup", "/login"} {
		if r := e.do(u.client, "GET", p, "", nil); r.status != http.StatusSeeOther {
			t.Errorf("GET %s signed in: %d; want 303 to the workspace", p, r.status)
		}
	}
}

func TestPageHeaders(t *testing.T) {
	e := newPageEnv(t)
	r := e.do(nil, "GET", "/signup", "", nil)
	want := map[string]string{
		"Cache-Control":           "no-store",
		"X-Content-Type-Options":  "nosniff",
		"X-Frame-Options":         "DENY",
		"Content-Security-Policy": pages.PageCSP,
	}
	for k, v := range want {
		if got := r.header.Get(k); got != v {
			t.Errorf("%s = %q; want %q", k, got, v)
		}
	}
	if strings.Contains(string(r.body), "<script>") || strings.Contains(string(r.body), "style=") {
		t.Error("a page has inline script or style, which the CSP forbids")
	}
}

func TestSignupFormSetsCookiesAndRedirects(t *testing.T) {
	for _, secure := range []bool{false, true} {
		e := newPageEnv(t, func(c *Config, _ *Deps) { c.CookieSecure = secure })
		b := newBrowser()
		r := e.do(b, "GET", "/signup", "", nil)
		csrf := cookieNamed(r.header, slicehub.CSRFCookie)
		if csrf == nil || !csrf.HttpOnly || csrf.SameSite != http.SameSiteLaxMode || csrf.Secure != secure {
			t.Fatalf("secure=%v: CSRF cookie %v; want HttpOnly, SameSite=Lax, Secure=%v", secure, r.header["Set-Cookie"], secure)
		}
		if secure {
			continue // the jar would not send a Secure cookie over http
		}
		r = e.form(b, "/signup", "/signup", url.Values{"email": {"Sam@Example.com"}, "password": {"correct horse battery"}})
		if r.status != http.StatusSeeOther || r.header.Get("Location") != "/workspace" {
			t.Fatalf("signup form: %d %q\n%s", r.status, r.header.Get("Location"), r.body)
		}
		sc := cookieNamed(r.header, slicehub.SessionCookie)
		if sc == nil || !sc.HttpOnly || sc.SameSite != http.SameSiteLaxMode {
			t.Fatalf("session cookie %v", r.header["Set-Cookie"])
		}
		r = e.do(b, "GET", "/auth/me", "", nil)
		if r.status != http.StatusOK || !strings.Contains(string(r.body), `"sam@example.com"`) {
			t.Fatalf("me after form signup: %d %s", r.status, r.body)
		}
	}
}

func TestFormsRefuseMissingOrWrongCSRF(t *testing.T) {
	e := newPageEnv(t)
	b := newBrowser()
	e.do(b, "GET", "/signup", "", nil) // the CSRF cookie, but the post forgets the token
	body := url.Values{"email": {"eve@example.com"}, "password": {"correct horse battery"}}
	for _, tc := range []struct {
		name, token string
	}{{"no token", ""}, {"wrong token", strings.Repeat("A", 43)}} {
		v := url.Values{}
		for k, vs := range body {
			v[k] = vs
		}
		if tc.token != "" {
			v.Set(accounts.CSRFField, tc.token)
		}
		for _, action := range []string{"/signup", "/login", "/reset", "/logout"} {
			r := e.do(b, "POST", action, v.Encode(), formHeader)
			if r.status != http.StatusForbidden || !strings.Contains(r.header.Get("Content-Type"), "text/html") {
				t.Errorf("%s, POST %s: %d %s; want a 403 page", tc.name, action, r.status, r.header.Get("Content-Type"))
			}
		}
	}
	if _, _, err := e.accounts.UserByEmail(t.Context(), "eve@example.com"); err == nil {
		t.Fatal("a signup without a valid CSRF token created the account")
	}
	// A cross-site post with the token is refused on Origin as well.
	r := e.do(b, "GET", "/signup", "", nil)
	v := url.Values{"email": {"eve@example.com"}, "password": {"correct horse battery"}, accounts.CSRFField: {csrfTokenIn(t, r.body)}}
	hdr := map[string]string{"Content-Type": "application/x-www-form-urlencoded", "Origin": "https://evil.example"}
	if r := e.do(b, "POST", "/signup", v.Encode(), hdr); r.status != http.StatusForbidden {
		t.Errorf("cross-origin signup form: %d; want 403", r.status)
	}
}

func TestSignupFormErrorsKeepTheEmail(t *testing.T) {
	e := newPageEnv(t)
	e.signup("taken@example.com")
	for _, tc := range []struct {
		email, password string
		status          int
		want            string
	}{
		{"taken@example.com", "correct horse battery", http.StatusConflict, "already exists"},
		{"short@example.com", "short", http.StatusBadRequest, "10 to 128 characters"},
		{"not-an-email", "correct horse battery", http.StatusBadRequest, "valid email"},
	} {
		r := e.form(newBrowser(), "/signup", "/signup", url.Values{"email": {tc.email}, "password": {tc.password}})
		page := string(r.body)
		if r.status != tc.status || !strings.Contains(page, tc.want) || !strings.Contains(page, `value="`+tc.email+`"`) {
			t.Errorf("signup %q/%q: %d; want %d, %q and the email kept\n%s", tc.email, tc.password, r.status, tc.status, tc.want, page)
		}
		if strings.Contains(page, tc.password) && len(tc.password) > 5 {
			t.Errorf("the page repeats the password")
		}
	}
}

func TestLoginAndLogoutForms(t *testing.T) {
	e := newPageEnv(t)
	e.signup("lou@example.com")
	b := newBrowser()
	r := e.form(b, "/login", "/login", url.Values{"email": {"lou@example.com"}, "password": {"wrong password!"}})
	if r.status != http.StatusUnauthorized || !strings.Contains(string(r.body), "Wrong email or password.") {
		t.Fatalf("bad login form: %d\n%s", r.status, r.body)
	}
	r = e.form(b, "/login", "/login", url.Values{"email": {"lou@example.com"}, "password": {"correct horse battery"}})
	if r.status != http.StatusSeeOther || r.header.Get("Location") != "/workspace" {
		t.Fatalf("login form: %d %q", r.status, r.header.Get("Location"))
	}
	before := e.accounts.sessionCount()
	r = e.do(b, "GET", "/workspace", "", nil)
	if r.status != http.StatusOK {
		t.Fatalf("workspace: %d", r.status)
	}
	tok := csrfTokenIn(t, r.body)
	r = e.do(b, "POST", "/logout", url.Values{accounts.CSRFField: {tok}}.Encode(), formHeader)
	if r.status != http.StatusSeeOther || r.header.Get("Location") != "/login?done=logout" {
		t.Fatalf("logout form: %d %q", r.status, r.header.Get("Location"))
	}
	if after := e.accounts.sessionCount(); after != before-1 {
		t.Fatalf("sessions %d -> %d; want one fewer", before, after)
	}
	if r := e.do(b, "GET", "/workspace", "", nil); r.status != http.StatusSeeOther || r.header.Get("Location") != "/login" {
		t.Fatalf("workspace after logout: %d %q; want 303 /login", r.status, r.header.Get("Location"))
	}
}

func TestLoginFormThrottled(t *testing.T) {
	e := newPageEnv(t, func(c *Config, _ *Deps) {
		c.Throttle = DefaultThrottles
		c.Throttle.LoginPerAccount = Rate{Burst: 2, Every: time.Hour}
	})
	e.signup("tom@example.com")
	var r *result
	for i := 0; i < 3; i++ {
		r = e.form(newBrowser(), "/login", "/login", url.Values{"email": {"tom@example.com"}, "password": {"guess number " + string(rune('a'+i))}})
	}
	if r.status != http.StatusTooManyRequests || r.header.Get("Retry-After") == "" {
		t.Fatalf("third failed login: %d Retry-After %q; want 429 with Retry-After", r.status, r.header.Get("Retry-After"))
	}
}

func TestErrorsArePagesForBrowsersAndJSONForAPIs(t *testing.T) {
	e := newPageEnv(t)
	html := map[string]string{"Accept": "text/html,application/xhtml+xml"}
	r := e.do(nil, "GET", "/no/such/page", "", html)
	if r.status != http.StatusNotFound || !strings.Contains(r.header.Get("Content-Type"), "text/html") {
		t.Errorf("unknown page: %d %s; want a 404 page", r.status, r.header.Get("Content-Type"))
	}
	for _, p := range []string{"/api/whoami", "/auth/me", "/admin/api/keys", "/workspace/events"} {
		r := e.do(nil, "GET", p, "", html)
		if r.status != http.StatusUnauthorized || r.errorCode(t) == "" {
			t.Errorf("%s with Accept: text/html: %d; want the JSON 401", p, r.status)
		}
	}
}

func TestStaticFilesAreCachedByHash(t *testing.T) {
	e := newPageEnv(t)
	u, err := pages.AssetURL("style.css")
	if err != nil {
		t.Fatal(err)
	}
	r := e.do(nil, "GET", u, "", nil)
	if r.status != http.StatusOK || r.header.Get("Cache-Control") != "public, max-age=31536000, immutable" ||
		!strings.HasPrefix(r.header.Get("Content-Type"), "text/css") {
		t.Fatalf("GET %s: %d %q %q", u, r.status, r.header.Get("Cache-Control"), r.header.Get("Content-Type"))
	}
	r = e.do(nil, "GET", "/static/style.css?v=old", "", nil)
	if r.header.Get("Cache-Control") != "no-cache" {
		t.Errorf("an old hash is cached as %q; want no-cache", r.header.Get("Cache-Control"))
	}
	r = e.do(nil, "GET", "/static/style.css", "", map[string]string{"If-None-Match": r.header.Get("ETag")})
	if r.status != http.StatusNotModified {
		t.Errorf("revalidation: %d; want 304", r.status)
	}
	if r := e.do(nil, "GET", "/static/..%2fpages.go", "", nil); r.status != http.StatusNotFound {
		t.Errorf("static traversal: %d", r.status)
	}
}
