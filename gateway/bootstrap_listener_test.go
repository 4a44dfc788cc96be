package gateway

import (
	"io"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/slicehub/slicehub"
)

// The bootstrap-only listener (what slices on a bridge reach) serves the
// bootstrap endpoint and nothing else; the internal listener keeps
// /metrics, /readyz and /healthz for operators and checks.
func TestBootstrapListenerServesBootstrapOnly(t *testing.T) {
	e := newEnv(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = e.srv.ServeBootstrap(ln) }()
	bootstrapURL := "http://" + ln.Addr().String()

	get := func(method, url, body string) (int, string) {
		t.Helper()
		req, err := http.NewRequest(method, url, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for _, path := range []string{"/metrics", "/readyz", "/healthz", "/METRICS", "/metrics/", "/internal/v1/bootstrap/", "/INTERNAL/V1/BOOTSTRAP"} {
		method := "GET"
		if strings.Contains(strings.ToLower(path), "bootstrap") {
			method = "POST"
		}
		if code, body := get(method, bootstrapURL+path, "{}"); code != http.StatusNotFound || !strings.Contains(body, `"not_found"`) {
			t.Errorf("%s %s on the bootstrap listener = %d %s, want 404 not_found", method, path, code, body)
		}
	}
	// The handler itself answers (here: a bad request).
	if code, body := get("POST", bootstrapURL+slicehub.BootstrapPath, "{}"); code != http.StatusBadRequest || !strings.Contains(body, "invalid_slice_id") {
		t.Errorf("POST bootstrap on the bootstrap listener = %d %s, want 400 invalid_slice_id", code, body)
	}
	for _, path := range []string{"/metrics", "/healthz"} {
		if code, _ := get("GET", e.internalURL+path, ""); code != http.StatusOK {
			t.Errorf("GET %s on the internal listener = %d, want 200", path, code)
		}
	}
}
