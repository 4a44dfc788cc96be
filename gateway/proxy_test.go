package gateway

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/slicehub/slicehub"
	"github.com/slicehub/slicehub/gateway/loop"
	"github.com/slicehub/slicehub/gateway/proxy"
	"github.com/slicehub/slicehub/gateway/wire"
)

// rawRequest sends bytes exactly as written, for what net/http would
// normalise (hop-by-hop headers, odd paths, HTTP/1.0).
func (e *testEnv) rawRequest(raw string) (*http.Response, []byte) {
	e.t.Helper()
	conn, err := net.Dial("tcp", e.host)
	if err != nil {
		e.t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(conn, raw); err != nil {
		e.t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return resp, body
}

func TestProxyHeaderHygiene(t *testing.T) {
	e := newEnv(t)
	u := e.signup("ivy@example.com")
	fs := newFakeSlice(t, 7)
	e.withSlice(u, fs)
	tok := e.sessionToken(u)

	for _, proto := range []string{"HTTP/1.1", "HTTP/1.0"} {
		t.Run(proto, func(t *testing.T) {
			raw := "GET /api/echo/a%2Fb/../c;x?q=1&q=2&sp=%20&empty= " + proto + "\r\n" +
				"Host: app.example.com\r\n" +
				"Cookie: theme=dark; " + slicehub.SessionCookie + "=" + tok + "; other=1\r\n" +
				"Cookie: " + slicehub.SessionCookie + "=" + tok + "\r\n" +
				"X-Slicehub-User-Id: 999\r\n" +
				"x-slicehub-gateway-token: forged\r\n" +
				"X_Slicehub_Evil: 1\r\n" +
				"X-Forwarded-For: 6.6.6.6\r\n" +
				"X-Forwarded-Host: evil.example\r\n" +
				"X-Forwarded-Proto: https\r\n" +
				"Forwarded: for=6.6.6.6\r\n" +
				"X-Real-IP: 6.6.6.6\r\n" +
				"Connection: keep-alive, X-Hop\r\n" +
				"X-Hop: secret\r\n" +
				"Keep-Alive: timeout=5\r\n" +
				"Proxy-Authorization: Basic Zm9vOmJhcg==\r\n" +
				"Te: trailers\r\n" +
				"X-Custom: kept\r\n" +
				"\r\n"
			resp, body := e.rawRequest(raw)
			if resp.StatusCode != 200 {
				t.Fatalf("status %d, body %s", resp.StatusCode, body)
			}
			var got echo
			if err := json.Unmarshal(body, &got); err != nil {
				t.Fatalf("%v: %s", err, body)
			}
			h := http.Header(got.Headers)
			checks := []struct {
				what string
				ok   bool
			}{
				{"path and query exactly as sent", got.URI == "/api/echo/a%2Fb/../c;x?q=1&q=2&sp=%20&empty="},
				{"HTTP/1.1 to the slice", got.Proto == "HTTP/1.1"},
				{"the session cookie never arrives", got.Cookies[slicehub.SessionCookie] == "" &&
					!strings.Contains(strings.Join(h["Cookie"], ";"), tok)},
				{"other cookies arrive", got.Cookies["theme"] == "dark" && got.Cookies["other"] == "1"},
				{"the user id is the session's", h.Get(slicehub.HeaderUserID) == strconv.FormatInt(u.id, 10) &&
					len(h[slicehub.HeaderUserID]) == 1},
				{"the token is the slice's", h.Get(slicehub.HeaderGatewayToken) == e.slices.tokenOf(7) &&
					len(h[slicehub.HeaderGatewayToken]) == 1},
				{"no client X-Slicehub-* or X_Slicehub_*", h.Get("X-Slicehub-Evil") == "" && h.Get("X_slicehub_evil") == ""},
				{"X-Forwarded-For is the peer", h.Get("X-Forwarded-For") == "127.0.0.1"},
				{"X-Forwarded-Proto is the gateway's view", h.Get("X-Forwarded-Proto") == "http"},
				{"X-Forwarded-Host is the Host", h.Get("X-Forwarded-Host") == "app.example.com"},
				{"Host kept", got.Host == "app.example.com"},
				{"no Forwarded or X-Real-Ip", h.Get("Forwarded") == "" && h.Get("X-Real-Ip") == ""},
				{"hop-by-hop headers dropped", h.Get("X-Hop") == "" && h.Get("Keep-Alive") == "" &&
					h.Get("Proxy-Authorization") == "" && h.Get("Te") == ""},
				{"end-to-end headers kept", h.Get("X-Custom") == "kept"},
				{"no default User-Agent added", h.Get("User-Agent") == ""},
			}
			for _, c := range checks {
				if !c.ok {
					t.Errorf("%s: slice saw uri=%q proto=%s host=%q headers=%v cookies=%v", c.what, got.URI, got.Proto, got.Host, got.Headers, got.Cookies)
				}
			}
		})
	}
}

// TestProxyResponseHygiene: a slice's answer, through either proxy path
// (the fasthttp server's, on a connection that began with a signup, and
// the event loop's, on a fresh one), sets no cookie of any name, carries
// no hop-by-hop or origin-wide header, and is confined by the gateway's
// CSP and nosniff whatever the slice claimed.
func TestProxyResponseHygiene(t *testing.T) {
	e := newEnv(t)
	u := e.signup("jon@example.com")
	fs := newFakeSlice(t, 8)
	e.withSlice(u, fs)
	paths := map[string]*http.Client{"server": u.client}
	if loop.Supported {
		paths["loop"] = e.loopBrowser(u)
	}
	for name, b := range paths {
		for _, path := range []string{"/api/set-cookies", "/api/page", "/api/x"} {
			r := e.do(b, "GET", path, "", nil)
			if r.status != 200 {
				t.Fatalf("%s %s: status %d", name, path, r.status)
			}
			for _, k := range []string{"Set-Cookie", "Set-Cookie2", "Clear-Site-Data", "Service-Worker-Allowed",
				"Strict-Transport-Security", "X-Hop", "Keep-Alive"} {
				if v, ok := r.header[k]; ok {
					t.Errorf("%s %s: the slice's %s reached the browser: %q", name, path, k, v)
				}
			}
			if v := r.header.Values("Content-Security-Policy"); len(v) != 1 || v[0] != proxy.SliceAnswerCSP {
				t.Errorf("%s %s: Content-Security-Policy %q; want only %q", name, path, v, proxy.SliceAnswerCSP)
			}
			if v := r.header.Values("X-Content-Type-Options"); len(v) != 1 || v[0] != "nosniff" {
				t.Errorf("%s %s: X-Content-Type-Options %q; want only nosniff", name, path, v)
			}
		}
	}
	if n := metricValue(e.srv.metrics.loopHandOffs); n != 0 {
		t.Errorf("%v connections handed on: the loop's answers were not the loop's", n)
	}
	// The browser's session survived the attempts.
	if r := e.do(u.client, "GET", "/auth/me", "", nil); r.status != 200 {
		t.Fatalf("me after the slice's attempt: %d", r.status)
	}
}

func TestProxyTrustedProxyHeaders(t *testing.T) {
	e := newEnv(t, func(c *Config, _ *Deps) { c.TrustedProxies = []string{"127.0.0.1"} })
	u := e.signup("kai@example.com")
	fs := newFakeSlice(t, 9)
	e.withSlice(u, fs)
	r := e.do(u.client, "GET", "/api/x", "", map[string]string{
		"X-Forwarded-For":   "6.6.6.6, 203.0.113.9",
		"X-Forwarded-Proto": "https",
		"X-Forwarded-Host":  "app.example.com",
	})
	var got echo
	r.decode(t, &got)
	h := http.Header(got.Headers)
	if h.Get("X-Forwarded-For") != "203.0.113.9" || h.Get("X-Forwarded-Proto") != "https" ||
		h.Get("X-Forwarded-Host") != "app.example.com" {
		t.Fatalf("behind nginx the slice saw %v", h)
	}
}

func TestProxyRoutesBySessionOnly(t *testing.T) {
	e := newEnv(t)
	a, b := e.signup("ann@example.com"), e.signup("bob@example.com")
	sa, sb := newFakeSlice(t, 21), newFakeSlice(t, 22)
	e.withSlice(a, sa)
	e.withSlice(b, sb)

	attempts := []struct {
		path string
		hdr  map[string]string
	}{
		{"/api/x", nil},
		{"/api/slices/22/x", nil},
		{"/api/x", map[string]string{slicehub.HeaderUserID: strconv.FormatInt(b.id, 10)}},
		{"/api/x", map[string]string{"Host": sb.addr(), "X-Forwarded-Host": sb.addr()}},
		{"/api/../socket.io/x", nil},
		{"/socket.io/?EIO=4&transport=polling&slice=22", nil},
	}
	for _, at := range attempts {
		for _, who := range []struct {
			u    *testUser
			want int64
		}{{a, 21}, {b, 22}} {
			r := e.do(who.u.client, "GET", at.path, "", at.hdr)
			var got echo
			r.decode(t, &got)
			if got.Slice != who.want {
				t.Fatalf("%s GET %s %v reached slice %d, want %d", who.u.email, at.path, at.hdr, got.Slice, who.want)
			}
			if got.Headers[slicehub.HeaderUserID][0] != strconv.FormatInt(who.u.id, 10) {
				t.Fatalf("%s reached its slice as user %v", who.u.email, got.Headers[slicehub.HeaderUserID])
			}
		}
	}
}

func TestProxyRefusals(t *testing.T) {
	for _, tc := range []struct {
		name       string
		setup      func(e *testEnv, u *testUser, fs *fakeSlice)
		status     int
		code       string
		retryAfter bool
	}{
		{"no slice yet", func(e *testEnv, u *testUser, fs *fakeSlice) {
			e.slices.set(u.id, slicehub.Slice{})
		}, 503, "slice_pending", true},
		{"provisioning", func(e *testEnv, u *testUser, fs *fakeSlice) {
			e.slices.set(u.id, slicehub.Slice{ID: fs.id, State: slicehub.StateProvisioning, UserID: u.id})
			e.routes.set(fs.id, fs.addr())
		}, 503, "slice_starting", true},
		{"assigned, not in the route table", func(e *testEnv, u *testUser, fs *fakeSlice) {
			e.slices.set(u.id, slicehub.Slice{ID: fs.id, State: slicehub.StateAssigned, UserID: u.id})
		}, 503, "slice_starting", true},
		{"suspended", func(e *testEnv, u *testUser, fs *fakeSlice) {
			e.slices.set(u.id, slicehub.Slice{ID: fs.id, State: slicehub.StateSuspended, UserID: u.id})
			e.routes.set(fs.id, fs.addr())
		}, 402, "slice_suspended", false},
		{"failed", func(e *testEnv, u *testUser, fs *fakeSlice) {
			e.slices.set(u.id, slicehub.Slice{ID: fs.id, State: slicehub.StateFailed, UserID: u.id})
		}, 503, "slice_unavailable", true},
		{"slice down", func(e *testEnv, u *testUser, fs *fakeSlice) {
			e.slices.set(u.id, slicehub.Slice{ID: fs.id, State: slicehub.StateAssigned, UserID: u.id})
			ln, _ := net.Listen("tcp", "127.0.0.1:0")
			addr := ln.Addr().String()
			ln.Close() // nothing listens there now
			e.routes.set(fs.id, addr)
		}, 502, "slice_failed", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			u := e.signup("lee@example.com")
			fs := newFakeSlice(t, 30)
			tc.setup(e, u, fs)
			e.srv.Invalidate(u.id)
			for _, path := range []string{"/api/x", "/socket.io/?EIO=4&transport=polling"} {
				r := e.do(u.client, "GET", path, "", nil)
				if r.status != tc.status || r.errorCode(t) != tc.code {
					t.Fatalf("%s: status %d, body %s; want %d %s", path, r.status, r.body, tc.status, tc.code)
				}
				if got := r.header.Get("Retry-After") != ""; got != tc.retryAfter {
					t.Fatalf("%s: Retry-After %q, want present=%v", path, r.header.Get("Retry-After"), tc.retryAfter)
				}
			}
		})
	}
}

func TestProxyWithoutSession(t *testing.T) {
	e := newEnv(t)
	for _, path := range []string{"/api/x", "/api", "/socket.io/?EIO=4"} {
		r := e.do(nil, "GET", path, "", nil)
		if r.status != 401 || r.errorCode(t) != "no_session" {
			t.Fatalf("%s: %d %s, want 401", path, r.status, r.body)
		}
	}
	// A path that merely starts like /api is not proxied.
	if r := e.do(nil, "GET", "/apix", "", nil); r.status != 404 {
		t.Fatalf("/apix: %d, want 404", r.status)
	}
}

func TestProxyChecksOriginOfUnsafeMethods(t *testing.T) {
	e := newEnv(t)
	u := e.signup("max@example.com")
	fs := newFakeSlice(t, 31)
	e.withSlice(u, fs)
	r := e.do(u.client, "POST", "/api/x", `{}`, map[string]string{"Origin": "https://evil.example", "Content-Type": "text/plain"})
	if r.status != 403 || r.errorCode(t) != "bad_origin" {
		t.Fatalf("cross-site POST: %d %s, want 403", r.status, r.body)
	}
	r = e.do(u.client, "POST", "/api/x", `{"a":1}`, map[string]string{"Origin": "http://" + e.host, "Content-Type": "application/json"})
	var got echo
	r.decode(t, &got)
	if r.status != 200 || got.Body != `{"a":1}` || got.Method != "POST" {
		t.Fatalf("same-origin POST: %d %s", r.status, r.body)
	}
}

func TestProxyTimeout(t *testing.T) {
	e := newEnv(t, func(c *Config, _ *Deps) { c.ProxyTimeout = 200 * time.Millisecond })
	u := e.signup("ned@example.com")
	fs := newFakeSlice(t, 32)
	e.withSlice(u, fs)
	r := e.do(u.client, "GET", "/api/slow", "", nil)
	if r.status != 504 || r.errorCode(t) != wire.CodeGatewayTimeout {
		t.Fatalf("%d %s, want 504", r.status, r.body)
	}
	// The pool still works afterwards.
	if r := e.do(u.client, "GET", "/api/x", "", nil); r.status != 200 {
		t.Fatalf("after a timeout: %d %s", r.status, r.body)
	}
}

func TestProxyStreamsServerSentEvents(t *testing.T) {
	// The idle timeout is shorter than the whole stream's life: a stream
	// that shows life keeps going.
	e := newEnv(t, func(c *Config, _ *Deps) { c.ProxyTimeout = 2 * time.Second })
	u := e.signup("ora@example.com")
	fs := newFakeSlice(t, 33)
	e.withSlice(u, fs)

	req, _ := http.NewRequest("GET", e.url+"/api/sse", nil)
	resp, err := u.client.Do(req) // returns on headers: the gateway flushed them before any event
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("status %d, Content-Type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	br := bufio.NewReader(resp.Body)
	for i := 1; i <= 3; i++ {
		// The slice sends event i only now; reading it proves that event
		// i-1 was not held back in a buffer.
		fs.sseNext <- struct{}{}
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
		if want := fmt.Sprintf("data: event %d\n", i); line != want {
			t.Fatalf("read %q, want %q", line, want)
		}
		if _, err := br.ReadString('\n'); err != nil { // the blank line
			t.Fatal(err)
		}
	}
	if rest, err := io.ReadAll(br); err != nil || len(rest) != 0 {
		t.Fatalf("after the stream: %q, %v", rest, err)
	}
}

func TestProxyLargeBodies(t *testing.T) {
	e := newEnv(t)
	u := e.signup("pam@example.com")
	fs := newFakeSlice(t, 34)
	e.withSlice(u, fs)
	r := e.do(u.client, "GET", "/api/big", "", nil)
	if r.status != 200 || len(r.body) != 3<<20 {
		t.Fatalf("status %d, %d bytes; want 3 MiB", r.status, len(r.body))
	}
	for i, b := range r.body {
		if b != byte(i%251) {
			t.Fatalf("byte %d is %d, want %d", i, b, byte(i%251))
		}
	}
	big := strings.Repeat("z", 1<<20)
	r = e.do(u.client, "POST", "/api/upload", big, map[string]string{"Content-Type": "text/plain"})
	var got echo
	r.decode(t, &got)
	if got.Body != big {
		t.Fatalf("upload arrived with %d bytes, want %d", len(got.Body), len(big))
	}
	// Over the body limit: refused by the gateway.
	e2 := newEnv(t, func(c *Config, _ *Deps) { c.BodyLimit = 1 << 10 })
	u2 := e2.signup("pat@example.com")
	e2.withSlice(u2, fs)
	r = e2.do(u2.client, "POST", "/api/upload", strings.Repeat("z", 2<<10), map[string]string{"Content-Type": "text/plain"})
	if r.status != 413 {
		t.Fatalf("over the limit: %d %s, want 413", r.status, r.body)
	}
	r.errorCode(t)
}

func TestProxyKeepsUpstreamConnections(t *testing.T) {
	e := newEnv(t)
	u := e.signup("quin@example.com")
	fs := newFakeSlice(t, 35)
	e.withSlice(u, fs)
	for i := 0; i < 20; i++ {
		if r := e.do(u.client, "GET", "/api/x", "", nil); r.status != 200 {
			t.Fatalf("request %d: %d", i, r.status)
		}
	}
	if n := fs.conns.Load(); n != 1 {
		t.Fatalf("20 sequential requests opened %d connections to the slice, want 1", n)
	}
}

func TestProxyCachesAndInvalidates(t *testing.T) {
	e := newEnv(t)
	u := e.signup("rae@example.com")
	fs := newFakeSlice(t, 36)
	e.withSlice(u, fs)
	e.do(u.client, "GET", "/api/x", "", nil)
	slices0, tokens0 := e.slices.sliceForUserCalls.Load(), e.slices.tokenCalls.Load()
	for i := 0; i < 10; i++ {
		if r := e.do(u.client, "GET", "/api/x", "", nil); r.status != 200 {
			t.Fatalf("%d", r.status)
		}
	}
	if d1, d2 := e.slices.sliceForUserCalls.Load()-slices0, e.slices.tokenCalls.Load()-tokens0; d1 != 0 || d2 != 0 {
		t.Fatalf("10 cached requests made %d slice and %d token reads, want 0", d1, d2)
	}

	// Suspension, announced by the database, takes effect at once.
	e.slices.set(u.id, slicehub.Slice{ID: 36, State: slicehub.StateSuspended, UserID: u.id})
	e.srv.Invalidate(u.id)
	if r := e.do(u.client, "GET", "/api/x", "", nil); r.status != 402 {
		t.Fatalf("after suspension: %d, want 402", r.status)
	}
	// A re-provisioned slice gets a new token.
	e.slices.set(u.id, slicehub.Slice{ID: 36, State: slicehub.StateAssigned, UserID: u.id})
	e.slices.mu.Lock()
	e.slices.tokens[36] = "rotated"
	e.slices.mu.Unlock()
	e.srv.InvalidateSlice(36)
	r := e.do(u.client, "GET", "/api/x", "", nil)
	var got echo
	r.decode(t, &got)
	if http.Header(got.Headers).Get(slicehub.HeaderGatewayToken) != "rotated" {
		t.Fatalf("after InvalidateSlice the slice saw token %q, want the rotated one", http.Header(got.Headers).Get(slicehub.HeaderGatewayToken))
	}
}

func TestMetrics(t *testing.T) {
	e := newEnv(t)
	u := e.signup("sam@example.com")
	fs := newFakeSlice(t, 37)
	e.withSlice(u, fs)
	e.do(u.client, "GET", "/api/x", "", nil)
	e.do(nil, "GET", "/api/x", "", nil)

	r := e.do(nil, "GET", "/metrics", "", nil)
	for _, want := range []string{
		`slicehub_gateway_requests_total{class="api",status="200"} 1`,
		`slicehub_gateway_requests_total{class="api",status="401"} 1`,
		`slicehub_gateway_requests_total{class="auth",status="201"} 1`,
		`slicehub_gateway_proxy_duration_seconds_count{class="api"} 1`,
		`slicehub_gateway_proxy_overhead_seconds_count 1`,
		`slicehub_gateway_websockets_open 0`,
	} {
		if !bytes.Contains(r.body, []byte(want)) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

// The proxy timeout is an idle timeout: a stream that shows life more
// often than the timeout lives longer than it, and a silent slice is cut
// off after it.
func TestProxyTimeoutIsIdleNotTotal(t *testing.T) {
	const timeout = 300 * time.Millisecond
	e := newEnv(t, func(c *Config, _ *Deps) { c.ProxyTimeout = timeout })
	u := e.signup("pia@example.com")
	fs := newFakeSlice(t, 38)
	e.withSlice(u, fs)

	resp, err := u.client.Get(e.url + "/api/sse")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	start := time.Now()
	tick := time.NewTicker(timeout * 2 / 3) // the slice's pace: an event every 200 ms
	defer tick.Stop()
	for i := 1; i <= 3; i++ {
		<-tick.C
		select {
		case fs.sseNext <- struct{}{}:
		case <-time.After(5 * time.Second):
			t.Fatalf("event %d after %s: the slice's stream has ended", i, time.Since(start))
		}
		line, err := br.ReadString('\n')
		if err != nil || line != fmt.Sprintf("data: event %d\n", i) {
			t.Fatalf("event %d after %s: %q, %v", i, time.Since(start), line, err)
		}
		br.ReadString('\n')
	}
	if took := time.Since(start); took <= timeout {
		t.Fatalf("the stream lasted %s, not longer than the timeout %s: the test proves nothing", took, timeout)
	}
	// The same slice, silent: cut off within the timeout and a margin.
	r := e.do(u.client, "GET", "/api/slow", "", nil)
	if r.status != 504 {
		t.Fatalf("a silent slice: %d %s, want 504", r.status, r.body)
	}
}
