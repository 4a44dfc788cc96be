package gateway

import (
	"encoding/json"
	"net"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/slicehub/slicehub"
)

// front takes /api and /socket.io requests before Fiber; Fiber still
// routes the same paths to s.proxy when they arrive in another case
// ("/API/x"), which front leaves to it. Every answer must be the same
// either way: the fast path is an optimisation, not a second policy.
func TestFrontAnswersAsFiberDoes(t *testing.T) {
	for _, tc := range []struct {
		name   string
		setup  func(e *testEnv, u *testUser, fs *fakeSlice)
		method string
		hdr    map[string]string
	}{
		{"served", func(e *testEnv, u *testUser, fs *fakeSlice) { e.withSlice(u, fs) }, "GET", nil},
		{"post from the same origin", func(e *testEnv, u *testUser, fs *fakeSlice) { e.withSlice(u, fs) }, "POST", nil},
		{"post from another site", func(e *testEnv, u *testUser, fs *fakeSlice) { e.withSlice(u, fs) },
			"POST", map[string]string{"Origin": "https://evil.example"}},
		{"suspended", func(e *testEnv, u *testUser, fs *fakeSlice) {
			e.slices.set(u.id, slicehub.Slice{ID: fs.id, State: slicehub.StateSuspended, UserID: u.id})
			e.routes.set(fs.id, fs.addr())
		}, "GET", nil},
		{"starting", func(e *testEnv, u *testUser, fs *fakeSlice) {
			e.slices.set(u.id, slicehub.Slice{ID: fs.id, State: slicehub.StateAssigned, UserID: u.id})
		}, "GET", nil},
		{"slice down", func(e *testEnv, u *testUser, fs *fakeSlice) {
			e.slices.set(u.id, slicehub.Slice{ID: fs.id, State: slicehub.StateAssigned, UserID: u.id})
			ln, _ := net.Listen("tcp", "127.0.0.1:0")
			addr := ln.Addr().String()
			ln.Close()
			e.routes.set(fs.id, addr)
		}, "GET", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			u := e.signup("fay@example.com")
			fs := newFakeSlice(t, 44)
			tc.setup(e, u, fs)
			e.srv.Invalidate(u.id)
			for _, prefix := range []string{"/api", "/socket.io"} {
				fast := e.do(u.client, tc.method, prefix+"/x", "", tc.hdr)
				slow := e.do(u.client, tc.method, strings.ToUpper(prefix)+"/x", "", tc.hdr)
				if fast.status != slow.status {
					t.Fatalf("%s %s/x: %d %s; through Fiber: %d %s", tc.method, prefix, fast.status, fast.body, slow.status, slow.body)
				}
				if fast.status >= 400 {
					if fast.errorCode(t) != slow.errorCode(t) || fast.header.Get("Retry-After") != slow.header.Get("Retry-After") {
						t.Fatalf("%s/x: %s (Retry-After %q); through Fiber: %s (Retry-After %q)", prefix,
							fast.body, fast.header.Get("Retry-After"), slow.body, slow.header.Get("Retry-After"))
					}
					continue
				}
				var a, b echo
				fast.decode(t, &a)
				slow.decode(t, &b)
				if a.Slice != fs.id || b.Slice != fs.id || a.Method != b.Method {
					t.Fatalf("reached slice %d (%s) and %d (%s), want %d", a.Slice, a.Method, b.Slice, b.Method, fs.id)
				}
				// The slice sees the same identity and forwarding headers.
				for _, h := range []string{slicehub.HeaderUserID, slicehub.HeaderGatewayToken, "X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host"} {
					if strings.Join(a.Headers[h], ",") != strings.Join(b.Headers[h], ",") || len(a.Headers[h]) == 0 {
						t.Fatalf("%s: %q through front, %q through Fiber", h, a.Headers[h], b.Headers[h])
					}
				}
				if len(a.Cookies) != 0 {
					t.Fatalf("the gateway's cookie reached the slice: %v", a.Cookies)
				}
			}
		})
	}
}

// A method Fiber does not route is refused before any handler, so front
// must not forward it either.
func TestFrontLeavesUnknownMethodsToFiber(t *testing.T) {
	e := newEnv(t)
	u := e.signup("gus@example.com")
	fs := newFakeSlice(t, 45)
	e.withSlice(u, fs)
	cookie := slicehub.SessionCookie + "=" + e.sessionToken(u)
	for _, path := range []string{"/api/x", "/API/x"} {
		resp, _ := e.rawRequest("BREW " + path + " HTTP/1.1\r\nHost: " + e.host + "\r\nCookie: " + cookie + "\r\nConnection: close\r\n\r\n")
		if resp.StatusCode < 400 {
			t.Fatalf("BREW %s: %d, want a refusal", path, resp.StatusCode)
		}
	}
	if n := fs.conns.Load(); n != 0 {
		t.Fatalf("the slice was reached %d times by a method no route has", n)
	}
}

// panicRoutes is a route table with a bug.
type panicRoutes struct{ calls atomic.Int64 }

func (p *panicRoutes) Lookup(int64) (slicehub.Route, bool) {
	p.calls.Add(1)
	panic("route table bug")
}

// A panic on the fast path is a 500 with a JSON body, counted, and the
// gateway goes on serving.
func TestFrontRecoversFromPanics(t *testing.T) {
	pr := &panicRoutes{}
	e := newEnv(t, func(_ *Config, d *Deps) { d.Routes = pr })
	u := e.signup("hal@example.com")
	e.slices.set(u.id, slicehub.Slice{ID: 46, State: slicehub.StateAssigned, UserID: u.id})
	for range 2 {
		r := e.do(u.client, "GET", "/api/x", "", nil)
		var body map[string]string
		if err := json.Unmarshal(r.body, &body); err != nil || r.status != 500 || body["code"] == "" {
			t.Fatalf("after a panic: %d %s, want 500 with a JSON error", r.status, r.body)
		}
	}
	if pr.calls.Load() != 2 {
		t.Fatalf("the route table was asked %d times, want 2", pr.calls.Load())
	}
	if r := e.do(nil, "GET", "/healthz", "", nil); r.status != 200 {
		t.Fatalf("/healthz after panics: %d", r.status)
	}
	m := e.do(nil, "GET", "/metrics", "", nil)
	if !strings.Contains(string(m.body), `slicehub_gateway_requests_total{class="api",status="500"} 2`) {
		t.Fatalf("the panics are not counted:\n%s", m.body)
	}
}
