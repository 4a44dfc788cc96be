package gateway

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/slicehub/slicehub"
	"github.com/slicehub/slicehub/gateway/proxy"
	"github.com/slicehub/slicehub/gateway/wire"
)

func TestBootstrap(t *testing.T) {
	e := newEnv(t)
	e.slices.bootstrap = func(req slicehub.BootstrapRequest) (slicehub.SliceCredentials, error) {
		switch {
		case req.AllocID == "claimed":
			return slicehub.SliceCredentials{}, slicehub.Errorf("fake.bootstrap", slicehub.KindConflict, "already_claimed",
				"this allocation has already fetched its credentials")
		case req.AllocID == "broken":
			return slicehub.SliceCredentials{}, errors.New("pq: password authentication failed for user wa_slice_7 at 10.0.0.5")
		}
		return slicehub.SliceCredentials{DatabaseURL: "postgres://wa_slice_" + req.SliceID + "@db/wa", GatewayToken: "tok"}, nil
	}
	post := func(body string) *result {
		t.Helper()
		saved := e.url
		e.url = e.internalURL
		defer func() { e.url = saved }()
		return e.do(nil, "POST", slicehub.BootstrapPath, body, jsonHeader)
	}

	r := post(`{"slice_id":"7","alloc_id":"0b6c4a8e-1f2d-4c3b-9a8e-123456789abc"}`)
	var creds slicehub.SliceCredentials
	r.decode(t, &creds)
	if r.status != 200 || creds.DatabaseURL != "postgres://wa_slice_7@db/wa" || creds.GatewayToken != "tok" ||
		r.header.Get("Cache-Control") != "no-store" {
		t.Fatalf("%d %s %v", r.status, r.body, r.header)
	}

	for _, tc := range []struct {
		name, body string
		status     int
		code       string
	}{
		{"bad slice id", `{"slice_id":"07","alloc_id":"a"}`, 400, "invalid_slice_id"},
		{"bad alloc id", `{"slice_id":"7","alloc_id":"a b"}`, 400, "invalid_alloc_id"},
		{"unknown field", `{"slice_id":"7","alloc_id":"a","x":1}`, 400, "invalid_json"},
		{"too large", `{"slice_id":"7","alloc_id":"` + strings.Repeat("a", 5000) + `"}`, 413, ""},
		{"already claimed", `{"slice_id":"7","alloc_id":"claimed"}`, 409, "already_claimed"},
		{"internal failure", `{"slice_id":"7","alloc_id":"broken"}`, 500, "internal"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := post(tc.body)
			if r.status != tc.status {
				t.Fatalf("status %d, body %s; want %d", r.status, r.body, tc.status)
			}
			code := r.errorCode(t)
			if tc.code != "" && code != tc.code {
				t.Fatalf("code %q, want %q", code, tc.code)
			}
			if strings.Contains(string(r.body), "10.0.0.5") || strings.Contains(string(r.body), "pq:") {
				t.Fatalf("internals leaked: %s", r.body)
			}
		})
	}

	// The public listener does not serve it.
	if r := e.do(nil, "POST", slicehub.BootstrapPath, `{"slice_id":"7","alloc_id":"a"}`, jsonHeader); r.status != 404 {
		t.Fatalf("public %s: %d, want 404", slicehub.BootstrapPath, r.status)
	}
}

func TestHealthAndReadiness(t *testing.T) {
	var consulDown atomic.Bool
	e := newEnv(t)
	e.srv.AddReadyCheck("postgres", func(context.Context) error { return nil })
	e.srv.AddReadyCheck("consul", func(context.Context) error {
		if consulDown.Load() {
			return errors.New("dial tcp 10.1.2.3:8500: connection refused")
		}
		return nil
	})
	if r := e.do(nil, "GET", "/healthz", "", nil); r.status != 200 {
		t.Fatalf("healthz %d", r.status)
	}
	if r := e.do(nil, "GET", "/readyz", "", nil); r.status != 200 {
		t.Fatalf("readyz %d %s", r.status, r.body)
	}
	consulDown.Store(true)
	r := e.do(nil, "GET", "/readyz", "", nil)
	if r.status != http.StatusServiceUnavailable || r.errorCode(t) != "not_ready" || r.header.Get("Retry-After") == "" ||
		!strings.Contains(string(r.body), "consul") || strings.Contains(string(r.body), "10.1.2.3") {
		t.Fatalf("readyz with consul down: %d %s", r.status, r.body)
	}
	e.srv.draining.Store(true)
	r = e.do(nil, "GET", "/readyz", "", nil)
	if r.status != http.StatusServiceUnavailable || r.errorCode(t) != "draining" {
		t.Fatalf("readyz while draining: %d %s", r.status, r.body)
	}
}

func TestReadinessCheckThatHangs(t *testing.T) {
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	e := newEnv(t, func(c *Config, _ *Deps) { c.ReadyTimeout = 50 * time.Millisecond })
	e.srv.AddReadyCheck("stuck", func(context.Context) error { <-release; return nil }) // ignores its context
	r := e.do(nil, "GET", "/readyz", "", nil)
	if r.status != http.StatusServiceUnavailable || !strings.Contains(string(r.body), "stuck") {
		t.Fatalf("readyz with a hanging check: %d %s", r.status, r.body)
	}
}

func TestStatusOfEveryKind(t *testing.T) {
	for kind, want := range map[slicehub.Kind]int{
		slicehub.KindInternal: 500, slicehub.KindInvalid: 400, slicehub.KindUnauthorized: 401,
		slicehub.KindPaymentRequired: 402, slicehub.KindForbidden: 403, slicehub.KindNotFound: 404,
		slicehub.KindConflict: 409, slicehub.KindTooLarge: 413, slicehub.KindRateLimited: 429,
		slicehub.KindUnavailable: 503, slicehub.KindBadGateway: 502,
	} {
		if got := wire.Status(&slicehub.Error{Kind: kind}); got != want {
			t.Errorf("wire.Status(%v) = %d, want %d", kind, got, want)
		}
	}
	if got := wire.Status(proxy.ErrSliceTimeout); got != 504 {
		t.Errorf("wire.Status(slice timeout) = %d, want 504", got)
	}
	if got := wire.Status(errors.New("boom")); got != 500 {
		t.Errorf("wire.Status(plain error) = %d, want 500", got)
	}
	// A domain error wrapped around a fiber error keeps its kind.
	if got := wire.Status(slicehub.Wrap("op", slicehub.KindConflict, errors.New("x"))); got != 409 {
		t.Errorf("wrapped conflict = %d, want 409", got)
	}
}

func TestPanicIsAnInternalError(t *testing.T) {
	e := newEnvSetup(t, func(s *Server) {
		s.Admin().Get("/boom", func(*fiber.Ctx) error { panic("secret detail") })
	})
	u := e.signup("root@example.com")
	e.accounts.setAdmin("root@example.com", true)
	e.srv.Invalidate(u.id)
	r := e.do(u.client, "GET", "/admin/boom", "", nil)
	if r.status != 500 || r.errorCode(t) != "internal" || strings.Contains(string(r.body), "secret") {
		t.Fatalf("%d %s, want a generic 500", r.status, r.body)
	}
	if r := e.do(u.client, "GET", "/auth/me", "", nil); r.status != 200 {
		t.Fatalf("the gateway did not survive: %d", r.status)
	}
}
