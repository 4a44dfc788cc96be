package gateway

import (
	"net/http"
	"os"
	"path/filepath"
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

func TestHashedAssetNames(t *testing.T) {
	for name, want := range map[string]bool{
		"index-3f2a1b9c.js": true, "main.3f2a1b9c.css": true, "chunk-BzX3a9Kc.js": true,
		"index.html": false, "polyfills.js": false, "index-polyfills.js": false, "logo.svg": false,
	} {
		if got := isHashedAsset(name); got != want {
			t.Errorf("isHashedAsset(%q) = %v; want %v", name, got, want)
		}
	}
}
