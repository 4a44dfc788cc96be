package gateway

import (
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func spaDir(t *testing.T) string {
	t.Helper()
	base := t.TempDir()
	dir := filepath.Join(base, "dist")
	files := map[string]string{
		"index.html":                "<!doctype html><title>CRM</title><div id=app></div>",
		"assets/index-3f2a1b9c.js":  "console.log('app')",
		"assets/index-Bz9Xa1Kc.css": "body{}",
		"favicon.ico":               "ico",
		"robots.txt":                "User-agent: *",
		"docs/index.html":           "docs",
		".env":                      "SECRET=1",
	}
	for name, body := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(base, "secret.txt"), []byte("outside"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(base, "secret.txt"), filepath.Join(dir, "leak.txt")); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestSPA(t *testing.T) {
	dir := spaDir(t)
	e := newEnv(t, func(c *Config, _ *Deps) { c.SPADir = dir })
	for _, tc := range []struct {
		path, want, cache, ctype string
		status                   int
	}{
		{"/app/", "<div id=app>", "no-cache", "text/html", 200},
		{"/app/contacts/12", "<div id=app>", "no-cache", "text/html", 200}, // client-side route
		{"/app/assets/index-3f2a1b9c.js", "console.log", "public, max-age=31536000, immutable", "text/javascript", 200},
		{"/app/assets/index-Bz9Xa1Kc.css", "body{}", "public, max-age=31536000, immutable", "text/css", 200},
		{"/app/robots.txt", "User-agent", "no-cache", "text/plain", 200},
		{"/app/docs/", "docs", "no-cache", "text/html", 200},
		{"/app/assets/missing-12345678.js", "", "", "", 404}, // never HTML for a script
		{"/app/.env", "", "", "", 404},
		{"/app/%2e%2e/secret.txt", "", "", "", 404},
		{"/app/..%2f..%2fsecret.txt", "", "", "", 404},
		{"/app/leak.txt", "", "", "", 404}, // a symlink out of the directory
	} {
		r := e.do(nil, "GET", tc.path, "", nil)
		if r.status != tc.status {
			t.Errorf("GET %s: %d; want %d (%s)", tc.path, r.status, tc.status, r.body)
			continue
		}
		if tc.status != 200 {
			if strings.Contains(string(r.body), "outside") || strings.Contains(string(r.body), "SECRET") {
				t.Errorf("GET %s leaked a file", tc.path)
			}
			continue
		}
		if !strings.Contains(string(r.body), tc.want) || r.header.Get("Cache-Control") != tc.cache ||
			!strings.HasPrefix(r.header.Get("Content-Type"), tc.ctype) {
			t.Errorf("GET %s: %q, Cache-Control %q, Content-Type %q; want %q, %q, %q", tc.path, r.body,
				r.header.Get("Cache-Control"), r.header.Get("Content-Type"), tc.want, tc.cache, tc.ctype)
		}
	}
	if r := e.do(nil, "GET", "/app", "", nil); r.status != http.StatusMovedPermanently || r.header.Get("Location") != "/app/" {
		t.Errorf("GET /app: %d %q", r.status, r.header.Get("Location"))
	}
	r := e.do(nil, "GET", "/app/", "", nil)
	if r := e.do(nil, "GET", "/app/", "", map[string]string{"If-None-Match": r.header.Get("ETag")}); r.status != http.StatusNotModified {
		t.Errorf("revalidating index.html: %d; want 304", r.status)
	}
	if r := e.do(nil, "HEAD", "/app/favicon.ico", "", nil); r.status != http.StatusOK || len(r.body) != 0 {
		t.Errorf("HEAD: %d, %d bytes", r.status, len(r.body))
	}
	// The proxy and the API are untouched by the SPA.
	if r := e.do(nil, "GET", "/api/whoami", "", nil); r.status != http.StatusUnauthorized {
		t.Errorf("/api/whoami with an SPA: %d", r.status)
	}
}

func TestSPAConfigValidation(t *testing.T) {
	dir := spaDir(t)
	for _, tc := range []struct {
		c  Config
		ok bool
	}{
		{Config{SPADir: dir}, true},
		{Config{SPADir: dir, SPAPrefix: "/crm/"}, true},
		{Config{SPADir: t.TempDir()}, false}, // no index.html
		{Config{SPADir: dir, SPAPrefix: "/api/"}, false},
		{Config{SPADir: dir, SPAPrefix: "app"}, false},
		{Config{PublicURL: "https://app.example.com"}, true},
		{Config{PublicURL: "app.example.com/x"}, false},
	} {
		if err := tc.c.Validate(); (err == nil) != tc.ok {
			t.Errorf("Validate(%+v) = %v; want ok=%v", tc.c, err, tc.ok)
		}
	}
}

// A build held in memory (the embedded app) is served with the same rules
// as a directory, a content ETag, gzip for clients that take it, and the
// app page's own CSP.
func TestSPAFromMemory(t *testing.T) {
	big := strings.Repeat("console.log('app');\n", 100)
	files := map[string][]byte{
		"index.html":                  []byte("<!doctype html><title>CRM</title><div id=app></div>"),
		"assets/app-3f2a1b9c0d1e.js":  []byte(big),
		"assets/app-0a1b2c3d4e5f.css": []byte("body{}"),
	}
	e := newEnv(t, func(c *Config, _ *Deps) { c.SPAFiles = files })
	for _, tc := range []struct {
		path, want, cache, ctype string
		status                   int
	}{
		{"/app/", "<div id=app>", "no-cache", "text/html", 200},
		{"/app/chats/12", "<div id=app>", "no-cache", "text/html", 200},
		{"/app/search", "<div id=app>", "no-cache", "text/html", 200},
		{"/app/assets/app-3f2a1b9c0d1e.js", "console.log", "public, max-age=31536000, immutable", "text/javascript", 200},
		{"/app/assets/app-0a1b2c3d4e5f.css", "body{}", "public, max-age=31536000, immutable", "text/css", 200},
		{"/app/assets/app-999999999999.js", "", "", "", 404},
		{"/app/.git/config", "", "", "", 404},
		{"/app/%2e%2e/%2e%2e/etc/passwd", "<div id=app>", "no-cache", "text/html", 200}, // cleaned to a client route
		{"/app/%2e%2e/secret.txt", "", "", "", 404},
	} {
		r := e.do(nil, "GET", tc.path, "", map[string]string{"Accept-Encoding": "identity"})
		if r.status != tc.status {
			t.Errorf("GET %s: %d; want %d", tc.path, r.status, tc.status)
			continue
		}
		if tc.status != 200 {
			continue
		}
		if !strings.Contains(string(r.body), tc.want) || r.header.Get("Cache-Control") != tc.cache ||
			!strings.HasPrefix(r.header.Get("Content-Type"), tc.ctype) || r.header.Get("ETag") == "" {
			t.Errorf("GET %s: %q, Cache-Control %q, Content-Type %q, ETag %q", tc.path, r.body,
				r.header.Get("Cache-Control"), r.header.Get("Content-Type"), r.header.Get("ETag"))
		}
	}
	idx := e.do(nil, "GET", "/app/", "", nil)
	if csp := idx.header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || !strings.Contains(csp, "connect-src 'self'") {
		t.Errorf("app page CSP %q", csp)
	}
	if r := e.do(nil, "GET", "/app/", "", map[string]string{"If-None-Match": idx.header.Get("ETag")}); r.status != http.StatusNotModified {
		t.Errorf("revalidating index.html: %d; want 304", r.status)
	}
	if r := e.do(nil, "GET", "/app/", "", map[string]string{"If-Modified-Since": "Mon, 01 Jan 2035 00:00:00 GMT"}); r.status != http.StatusOK {
		t.Errorf("If-Modified-Since alone: %d; want 200 (there is no Last-Modified to compare)", r.status)
	}
	js := "/app/assets/app-3f2a1b9c0d1e.js"
	gz := e.do(nil, "GET", js, "", map[string]string{"Accept-Encoding": "gzip, br"})
	if gz.header.Get("Content-Encoding") != "gzip" || len(gz.body) >= len(big) || !strings.Contains(gz.header.Get("Vary"), "Accept-Encoding") {
		t.Errorf("gzip: Content-Encoding %q, %d bytes of %d, Vary %q", gz.header.Get("Content-Encoding"), len(gz.body), len(big), gz.header.Get("Vary"))
	}
	if r := e.do(nil, "GET", js, "", map[string]string{"Accept-Encoding": "gzip;q=0"}); r.header.Get("Content-Encoding") != "" || string(r.body) != big {
		t.Errorf("gzip;q=0 still got %q", r.header.Get("Content-Encoding"))
	}
	if r := e.do(nil, "HEAD", js, "", map[string]string{"Accept-Encoding": "identity"}); r.status != 200 || len(r.body) != 0 ||
		r.header.Get("Content-Length") != strconv.Itoa(len(big)) {
		t.Errorf("HEAD: %d, %d bytes, Content-Length %q", r.status, len(r.body), r.header.Get("Content-Length"))
	}
	if r := e.do(nil, "GET", "/app", "", nil); r.status != http.StatusMovedPermanently {
		t.Errorf("GET /app: %d", r.status)
	}
	if err := (Config{SPAFiles: map[string][]byte{"a.js": nil}}).Validate(); err == nil {
		t.Error("a build without index.html validated")
	}
}
