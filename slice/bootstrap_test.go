package slice

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/slicehub/slicehub"
)

// fastBackoff keeps retry tests quick; the waits are real timers, not
// synchronisation.
var fastBackoff = Backoff{Min: time.Millisecond, Max: 4 * time.Millisecond}

const secretPassword = "pa55-word-never-logged"

var testCreds = slicehub.SliceCredentials{
	DatabaseURL:  "postgres://wa_slice_42:" + secretPassword + "@127.0.0.1:5432/wa_slice_42?sslmode=disable",
	GatewayToken: "gateway-token-never-logged",
}

// syncBuffer is a log sink safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// gateway is a stand-in for the gateway's bootstrap endpoint: it answers
// each request with the next status of script (the last one repeats) and
// records what it was sent.
type gateway struct {
	srv    *httptest.Server
	script []int
	calls  atomic.Int32
	first  chan struct{} // closed when the first request arrives
	once   sync.Once
	mu     sync.Mutex
	got    []slicehub.BootstrapRequest
}

func newGateway(t *testing.T, script ...int) *gateway {
	g := &gateway{script: script, first: make(chan struct{})}
	g.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := int(g.calls.Add(1)) - 1
		defer g.once.Do(func() { close(g.first) })
		if r.Method != http.MethodPost || r.URL.Path != slicehub.BootstrapPath || r.Header.Get("Content-Type") != "application/json" {
			t.Errorf("bootstrap request %s %s (%s), want POST %s as JSON", r.Method, r.URL.Path, r.Header.Get("Content-Type"), slicehub.BootstrapPath)
		}
		var req slicehub.BootstrapRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			t.Errorf("bootstrap body: %v", err)
		}
		g.mu.Lock()
		g.got = append(g.got, req)
		g.mu.Unlock()
		status := g.script[min(n, len(g.script)-1)]
		if status != http.StatusOK {
			http.Error(w, `{"error":"not now","code":"x"}`, status)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(testCreds)
	}))
	t.Cleanup(g.srv.Close)
	return g
}

func newTestBootstrapper(t *testing.T, g *gateway, cachePath, allocID string, logs *syncBuffer) *bootstrapper {
	t.Helper()
	log := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	c := &Config{SliceID: "42", AllocID: allocID, BootstrapURL: g.srv.URL + "/", CredentialsFile: cachePath, Backoff: fastBackoff}
	return newBootstrapper(c, log)
}

func TestBootstrapRetriesThenCaches(t *testing.T) {
	g := newGateway(t, http.StatusServiceUnavailable, http.StatusTooEarly, http.StatusConflict, http.StatusBadRequest, http.StatusOK)
	cache := filepath.Join(t.TempDir(), "credentials.json")
	var logs syncBuffer
	b := newTestBootstrapper(t, g, cache, "alloc-1", &logs)

	got, err := b.Credentials(context.Background())
	if err != nil {
		t.Fatalf("Credentials: %v", err)
	}
	if got != testCreds {
		t.Fatalf("Credentials = %+v, want the gateway's answer", got)
	}
	if n := g.calls.Load(); n != 5 {
		t.Fatalf("gateway called %d times, want 5 (4 refusals, then 200)", n)
	}
	for _, req := range g.got {
		if req != (slicehub.BootstrapRequest{SliceID: "42", AllocID: "alloc-1"}) {
			t.Fatalf("bootstrap request %+v, want slice 42 alloc alloc-1", req)
		}
	}
	// A 400 is a refusal someone must look at: logged at error level.
	if !strings.Contains(logs.String(), `"level":"ERROR","msg":"gateway refused the bootstrap; retrying"`) {
		t.Errorf("the 400 was not logged as an error:\n%s", logs.String())
	}

	st, err := os.Stat(cache)
	if err != nil {
		t.Fatalf("cache not written: %v", err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("cache mode %v, want 0600", st.Mode().Perm())
	}

	// A task restart in the same allocation reuses the cache: no new claim.
	b2 := newTestBootstrapper(t, g, cache, "alloc-1", &logs)
	got, err = b2.Credentials(context.Background())
	if err != nil || got != testCreds {
		t.Fatalf("Credentials after restart = %+v, %v; want the cached credentials", got, err)
	}
	if n := g.calls.Load(); n != 5 {
		t.Fatalf("gateway called %d times after a restart, want still 5", n)
	}

	// A cache of another allocation is not trusted.
	b3 := newTestBootstrapper(t, g, cache, "alloc-2", &logs)
	if _, err := b3.Credentials(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := g.calls.Load(); n != 6 {
		t.Fatalf("gateway called %d times for a new allocation, want 6", n)
	}

	for _, secret := range []string{secretPassword, testCreds.GatewayToken} {
		if strings.Contains(logs.String(), secret) {
			t.Fatalf("a secret reached the logs:\n%s", logs.String())
		}
	}
}

func TestBootstrapStopsWithContext(t *testing.T) {
	g := newGateway(t, http.StatusServiceUnavailable)
	var logs syncBuffer
	b := newTestBootstrapper(t, g, "", "alloc-1", &logs)
	b.backoff = Backoff{Min: time.Hour, Max: time.Hour}
	ctx, cancel := context.WithCancel(context.Background())
	// Cancel once the gateway has refused once, while the bootstrapper waits
	// out its hour of backoff.
	done := make(chan error, 1)
	go func() {
		_, err := b.Credentials(ctx)
		done <- err
	}()
	select {
	case <-g.first:
	case err := <-done:
		t.Fatalf("Credentials returned %v before calling the gateway", err)
	}
	cancel()
	if err := <-done; err == nil {
		t.Fatal("Credentials = nil error after cancel, want the context's error")
	}
}

func TestBootstrapRejectsIncompleteAnswer(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(`{"database_url":"postgres://x"}`))
	}))
	defer srv.Close()
	b := newBootstrapper(&Config{SliceID: "1", BootstrapURL: srv.URL}, slog.New(slog.DiscardHandler))
	if _, status, err := b.claim(context.Background()); err == nil || status != 200 {
		t.Fatalf("claim of an answer without gateway_token = %d, %v; want an error", status, err)
	}
}

func TestRedactURL(t *testing.T) {
	got := redactURL("http://user:" + secretPassword + "@gw:8081/internal/v1/bootstrap")
	if strings.Contains(got, secretPassword) {
		t.Fatalf("redactURL kept the password: %s", got)
	}
}

func TestBackoffIsCapped(t *testing.T) {
	b := Backoff{Min: 100 * time.Millisecond, Max: time.Second}
	for attempt := 0; attempt < 100; attempt++ {
		d := b.delay(attempt)
		if d <= 0 || d > time.Second {
			t.Fatalf("delay(%d) = %v, want in (0, 1s]", attempt, d)
		}
	}
	if d := b.delay(0); d > 100*time.Millisecond {
		t.Fatalf("delay(0) = %v, want at most Min", d)
	}
}

func TestConfigFromEnv(t *testing.T) {
	env := func(kv ...string) func(string) string {
		m := map[string]string{}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return func(k string) string { return m[k] }
	}
	c, err := ConfigFromEnv(env("SLICE_ID", "42", "NOMAD_PORT_http", "2345", "NOMAD_ALLOC_ID", "a1",
		"NOMAD_SECRETS_DIR", "/secrets", "SLICEHUB_BOOTSTRAP_URL", "http://127.0.0.1:8081"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Addr != ":2345" || c.CredentialsFile != "/secrets/credentials.json" || c.AllocID != "a1" || c.manualCredentials() {
		t.Fatalf("ConfigFromEnv = %+v", c)
	}
	c, err = ConfigFromEnv(env("SLICE_ID", "7", "SLICE_ADDR", "127.0.0.1:9", "NOMAD_PORT_http", "2345",
		"DATABASE_URL", "postgres://x", "SLICEHUB_GATEWAY_TOKEN", "t"))
	if err != nil || c.Addr != "127.0.0.1:9" || !c.manualCredentials() {
		t.Fatalf("manual ConfigFromEnv = %+v, %v; want SLICE_ADDR and manual credentials", c, err)
	}
	for name, e := range map[string]func(string) string{
		"no slice id":    env("NOMAD_PORT_http", "1", "SLICEHUB_BOOTSTRAP_URL", "http://x"),
		"bad slice id":   env("SLICE_ID", "042", "NOMAD_PORT_http", "1", "SLICEHUB_BOOTSTRAP_URL", "http://x"),
		"no address":     env("SLICE_ID", "1", "SLICEHUB_BOOTSTRAP_URL", "http://x"),
		"no credentials": env("SLICE_ID", "1", "NOMAD_PORT_http", "1"),
		"half manual":    env("SLICE_ID", "1", "NOMAD_PORT_http", "1", "DATABASE_URL", "postgres://x"),
		"bad url":        env("SLICE_ID", "1", "NOMAD_PORT_http", "1", "SLICEHUB_BOOTSTRAP_URL", "gw:8081"),
	} {
		if _, err := ConfigFromEnv(e); err == nil {
			t.Errorf("%s: ConfigFromEnv = nil error, want one", name)
		}
	}
}
