package gateway

import (
	"encoding/json"
	"net"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/valyala/fasthttp"

	"github.com/slicehub/slicehub"
)

// fiberOnly serves e's Fiber app without front, on a listener of its own,
// and returns its address: routing is case-sensitive and strict, so every
// plain request Fiber would route to s.proxy is one front takes first, and
// Fiber's own proxy route is reached only this way.
func (e *testEnv) fiberOnly() string {
	e.t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		e.t.Fatal(err)
	}
	srv := &fasthttp.Server{Handler: e.srv.app.Handler()}
	go func() { _ = srv.Serve(ln) }()
	e.t.Cleanup(func() { _ = srv.Shutdown() })
	return ln.Addr().String()
}

// front takes /api and /socket.io requests before Fiber; Fiber routes
// the same paths to s.proxy. Every answer must be the same either way:
// the fast path is an optimisation, not a second policy.
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
			// The same gateway through Fiber alone, with the same Host (the
			// browser's cookie jar ignores the port).
			slowEnv := *e
			slowEnv.host = e.fiberOnly()
			slowEnv.url = "http://" + slowEnv.host
			slowHdr := map[string]string{"Host": e.host}
			for k, v := range tc.hdr {
				slowHdr[k] = v
			}
			for _, prefix := range []string{"/api", "/socket.io"} {
				fast := e.do(u.client, tc.method, prefix+"/x", "", tc.hdr)
				slow := slowEnv.do(u.client, tc.method, prefix+"/x", "", slowHdr)
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

// TestRoutingIsExact: a path in another case, with a trailing slash or
// percent-encoded is not the route it resembles. The edge blocks /metrics
// and /readyz by exact match, so a gateway that answered "/METRICS" or
// "/metrics/" would publish them; and a variant of /api must not reach a
// slice by a path front and the loop do not take.
func TestRoutingIsExact(t *testing.T) {
	e, _, fs, cookie := newSliceEnv(t, "ida@example.com", 47)
	for _, method := range []string{"GET", "HEAD"} {
		for _, path := range []string{"/metrics", "/readyz", "/healthz"} {
			rc := e.rawConn()
			rc.send(method + " " + path + " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
			if resp, _ := rc.read(method); resp.StatusCode != 200 {
				t.Fatalf("%s %s = %d; want 200", method, path, resp.StatusCode)
			}
		}
		for _, path := range []string{"/METRICS", "/Metrics", "/metrics/", "/%6detrics", "//metrics", "/metrics//",
			"/READYZ", "/readyz/", "/%72eadyz", "/API/x", "/Api/x", "/SOCKET.IO/", "/%61pi/x", "/api%2fx", "/AUTH/me"} {
			rc := e.rawConn()
			rc.send(method + " " + path + " HTTP/1.1\r\nHost: x\r\n" + cookie + "Connection: close\r\n\r\n")
			resp, body := rc.read(method)
			if resp.StatusCode != 404 {
				t.Errorf("%s %s = %d %.80q; want 404", method, path, resp.StatusCode, body)
			}
		}
	}
	if n := fs.conns.Load(); n != 0 {
		t.Fatalf("a variant of a proxied path reached the slice (%d connections)", n)
	}
}
