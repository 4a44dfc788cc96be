package gateway

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/slicehub/slicehub"
	"github.com/slicehub/slicehub/gateway/accounts"
	"github.com/slicehub/slicehub/gateway/loop"
)

// The event loop's tests. Most proxy tests elsewhere reach the slice on a
// connection whose first request was a signup, which the loop never takes;
// these open their own connections, so that it does.

// loopBrowser is u's browser with a connection pool of its own: its first
// request on each connection is the one the test sends.
func (e *testEnv) loopBrowser(u *testUser) *http.Client {
	e.t.Helper()
	jar, _ := cookiejar.New(nil)
	jar.SetCookies(mustURL(e.url), u.client.Jar.Cookies(mustURL(e.url)))
	tr := &http.Transport{MaxIdleConnsPerHost: 4, DisableCompression: true}
	e.t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Jar: jar, Transport: tr, Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// newLoopEnv is a gateway with a user whose slice fs is routed, and the
// Cookie header line of the user's session, for tests of the loop.
func newLoopEnv(t *testing.T, email string, sliceID int64, opts ...func(*Config, *Deps)) (*testEnv, *testUser, *fakeSlice, string) {
	t.Helper()
	loopUnsupported(t)
	return newSliceEnv(t, email, sliceID, opts...)
}

// newSliceEnv is a gateway with a user whose slice fs is routed, and the
// Cookie header line of the user's session, for raw requests.
func newSliceEnv(t *testing.T, email string, sliceID int64, opts ...func(*Config, *Deps)) (*testEnv, *testUser, *fakeSlice, string) {
	t.Helper()
	e := newEnv(t, opts...)
	u := e.signup(email)
	fs := newFakeSlice(t, sliceID)
	e.withSlice(u, fs)
	return e, u, fs, "Cookie: " + slicehub.SessionCookie + "=" + e.sessionToken(u) + "\r\n"
}

func loopUnsupported(t *testing.T) {
	t.Helper()
	if !loop.Supported {
		t.Skip("SKIPPED: the event loop exists on Linux only; this platform serves every connection from fasthttp")
	}
}

func TestLoopServesTheProxyPath(t *testing.T) {
	e, u, fs, _ := newLoopEnv(t, "loop@example.com", 7)
	b := e.loopBrowser(u)
	for i := 0; i < 20; i++ {
		r := e.do(b, "GET", fmt.Sprintf("/api/contacts?page=%d", i), "", nil)
		var got echo
		r.decode(t, &got)
		if r.status != 200 || got.Slice != 7 || got.URI != fmt.Sprintf("/api/contacts?page=%d", i) {
			t.Fatalf("request %d: status %d, echo %+v", i, r.status, got)
		}
		if got.Headers[slicehub.HeaderUserID][0] != fmt.Sprint(u.id) || got.Cookies[slicehub.SessionCookie] != "" {
			t.Fatalf("request %d: the slice saw identity %v and session cookie %q", i, got.Headers[slicehub.HeaderUserID], got.Cookies[slicehub.SessionCookie])
		}
	}
	r := e.do(b, "POST", "/api/contacts", `{"name":"Ada"}`, map[string]string{"Content-Type": "application/json", "Origin": e.url})
	var got echo
	r.decode(t, &got)
	if r.status != 200 || got.Body != `{"name":"Ada"}` || got.Method != "POST" {
		t.Fatalf("POST: status %d, echo %+v", r.status, got)
	}
	if n := metricValue(e.srv.metrics.loopConns); n != 1 {
		t.Fatalf("the loops hold %v connections, want the browser's one", n)
	}
	if n := metricValue(e.srv.metrics.loopHandOffs); n != 0 {
		t.Fatalf("%v connections handed on; want none", n)
	}
	if n := fs.conns.Load(); n != 1 {
		t.Fatalf("the slice saw %d connections for 21 sequential requests; want 1 (keep-alive)", n)
	}
}

// loopCase is one request sent both ways by TestLoopAnswersAsFront.
// servedBy is which path of the gateway with the loop answers it: the loop
// itself, the server after the loop handed the connection on, or the
// server alone (the loop never took the connection).
type loopCase struct {
	name, method, path, body string
	hdr                      map[string]string
	setup                    func(e *testEnv, u *testUser, fs *fakeSlice)
	servedBy                 servedBy
}

type servedBy uint8

const (
	byLoop servedBy = iota
	byHandOff
	byServer
)

func (b servedBy) String() string {
	return [...]string{"the loop", "a hand-off", "the server alone"}[b]
}

// servedBy is which path answered the one connection a test opened on e.
func (e *testEnv) servedBy() servedBy {
	switch {
	case metricValue(e.srv.metrics.loopHandOffs) > 0:
		return byHandOff
	case metricValue(e.srv.metrics.loopConns) > 0:
		return byLoop
	}
	return byServer
}

// TestLoopAnswersAsFront sends the same requests through a gateway with
// the event loop and one without, each on a new connection, and compares
// what the browser got and what the slice saw.
func TestLoopAnswersAsFront(t *testing.T) {
	loopUnsupported(t)
	cases := []loopCase{
		{name: "get", method: "GET", path: "/api/x?a=1&b=%2F", hdr: map[string]string{"Accept": "application/json", "X-Custom": "v"}},
		{name: "post", method: "POST", path: "/api/x", body: `{"a":1}`, hdr: map[string]string{"Content-Type": "application/json"}},
		{name: "post from an allowed origin", method: "POST", path: "/api/x", body: `{}`, hdr: map[string]string{"Origin": "ORIGIN"}},
		{name: "post from another origin", method: "POST", path: "/api/x", body: `{}`, hdr: map[string]string{"Origin": "https://evil.example"}, servedBy: byHandOff},
		{name: "put with an empty body", method: "PUT", path: "/api/x"},
		{name: "head", method: "HEAD", path: "/api/x"},
		{name: "socket.io polling", method: "GET", path: "/socket.io/?EIO=4&transport=polling"},
		{name: "identity and hop headers", method: "GET", path: "/api/x", hdr: map[string]string{
			"X-Slicehub-User-Id": "999", "X-Forwarded-For": "6.6.6.6", "Connection": "X-Drop", "X-Drop": "1", "Forwarded": "for=1.2.3.4"}},
		{name: "other cookies pass", method: "GET", path: "/api/x", hdr: map[string]string{"Cookie": "crm_pref=dark"}},
		{name: "slice sets cookies and hop headers", method: "GET", path: "/api/set-cookies"},
		{name: "slice refuses", method: "GET", path: "/socket.io/refuse"},
		{name: "a big answer", method: "GET", path: "/api/big"},
		{name: "no session", method: "GET", path: "/api/x", hdr: map[string]string{"Cookie": "-"}, servedBy: byHandOff},
		{name: "a garbage session", method: "GET", path: "/api/x", hdr: map[string]string{"Cookie": slicehub.SessionCookie + "=" + strings.Repeat("A", 43)}, servedBy: byHandOff},
		{name: "suspended", method: "GET", path: "/api/x", setup: func(e *testEnv, u *testUser, fs *fakeSlice) {
			e.slices.set(u.id, slicehub.Slice{ID: fs.id, State: slicehub.StateSuspended, UserID: u.id})
			e.srv.Invalidate(u.id)
		}, servedBy: byHandOff},
		{name: "slice starting", method: "GET", path: "/api/x", setup: func(e *testEnv, u *testUser, fs *fakeSlice) {
			e.routes.set(fs.id, "")
		}, servedBy: byHandOff},
		{name: "slice down", method: "GET", path: "/api/x", setup: func(e *testEnv, u *testUser, fs *fakeSlice) {
			fs.srv.Close()
		}},
		{name: "a path outside the proxy", method: "GET", path: "/healthz", servedBy: byServer},
		{name: "upper-case prefix", method: "GET", path: "/API/x", servedBy: byServer},
		{name: "a slice's HTML", method: "GET", path: "/api/page"},
	}
	run := func(noLoop bool, tc loopCase) (*result, *echo, servedBy) {
		e := newEnv(t, func(c *Config, _ *Deps) { c.NoEventLoop = noLoop })
		u := e.signup("parity@example.com")
		fs := newFakeSlice(t, 3)
		e.withSlice(u, fs)
		if tc.setup != nil {
			tc.setup(e, u, fs)
		}
		hdr := map[string]string{}
		for k, v := range tc.hdr {
			hdr[k] = strings.ReplaceAll(v, "ORIGIN", e.url)
		}
		b := e.loopBrowser(u)
		if hdr["Cookie"] == "-" {
			b.Jar, _ = cookiejar.New(nil)
			delete(hdr, "Cookie")
		}
		r := e.do(b, tc.method, tc.path, tc.body, hdr)
		var got *echo
		if r.status == 200 && r.header.Get("Content-Type") == "application/json" && tc.method != "HEAD" {
			got = new(echo)
			r.decode(t, got)
			delete(got.Headers, "X-Forwarded-Host") // the two gateways listen on different ports
			if o := got.Headers["Origin"]; len(o) == 1 && o[0] == e.url {
				got.Headers["Origin"] = []string{"ORIGIN"}
			}
			got.Host = ""
		}
		return r, got, e.servedBy()
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			front, frontSaw, frontBy := run(true, tc)
			loop, loopSaw, loopBy := run(false, tc)
			// Which path answered: otherwise a loop that handed everything
			// on would compare the server with itself and pass.
			if frontBy != byServer || loopBy != tc.servedBy {
				t.Fatalf("answered by %v without the loop and by %v with it; want the server alone and %v", frontBy, loopBy, tc.servedBy)
			}
			if front.status != loop.status {
				t.Fatalf("status: front %d, loop %d (bodies %.200s | %.200s)", front.status, loop.status, front.body, loop.body)
			}
			if !bytes.Equal(front.body, loop.body) && frontSaw == nil {
				t.Fatalf("body: front %.300q, loop %.300q", front.body, loop.body)
			}
			fh, lh := front.header.Clone(), loop.header.Clone()
			fh.Del("Date")
			lh.Del("Date")
			if fmt.Sprint(fh) != fmt.Sprint(lh) {
				t.Fatalf("headers differ:\nfront %v\nloop  %v", fh, lh)
			}
			if fmt.Sprintf("%+v", frontSaw) != fmt.Sprintf("%+v", loopSaw) {
				t.Fatalf("the slice saw different requests:\nfront %+v\nloop  %+v", frontSaw, loopSaw)
			}
		})
	}
}

// rawConn is a browser connection spoken to byte by byte.
type rawConn struct {
	t  *testing.T
	c  net.Conn
	br *bufio.Reader
}

func (e *testEnv) rawConn() *rawConn {
	e.t.Helper()
	c, err := net.Dial("tcp", e.host)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	return &rawConn{t: e.t.(*testing.T), c: c, br: bufio.NewReader(c)}
}

func (rc *rawConn) send(s string) {
	rc.t.Helper()
	if _, err := io.WriteString(rc.c, s); err != nil {
		rc.t.Fatal(err)
	}
}

func (rc *rawConn) read(method string) (*http.Response, []byte) {
	rc.t.Helper()
	resp, err := http.ReadResponse(rc.br, &http.Request{Method: method})
	if err != nil {
		rc.t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		rc.t.Fatal(err)
	}
	return resp, body
}

func TestLoopPipelinedRequests(t *testing.T) {
	e, _, _, cookie := newLoopEnv(t, "pipe@example.com", 4)
	rc := e.rawConn()
	var all strings.Builder
	for i := 0; i < 5; i++ {
		fmt.Fprintf(&all, "GET /api/p%d HTTP/1.1\r\nHost: x\r\n%s\r\n", i, cookie)
	}
	all.WriteString("POST /api/p5 HTTP/1.1\r\nHost: x\r\n" + cookie + "Content-Length: 5\r\n\r\nhello")
	all.WriteString("HEAD /api/p6 HTTP/1.1\r\nHost: x\r\n" + cookie + "\r\n")
	all.WriteString("GET /api/p7 HTTP/1.1\r\nHost: x\r\n" + cookie + "Connection: close\r\n\r\n")
	rc.send(all.String())
	for i := 0; i < 8; i++ {
		method := "GET"
		if i == 6 {
			method = "HEAD"
		}
		resp, body := rc.read(method)
		if resp.StatusCode != 200 {
			t.Fatalf("answer %d: status %d", i, resp.StatusCode)
		}
		if method == "HEAD" {
			if len(body) != 0 {
				t.Fatalf("HEAD answer with a body: %q", body)
			}
			continue
		}
		var got echo
		if err := json.Unmarshal(body, &got); err != nil || got.URI != fmt.Sprintf("/api/p%d", i) {
			t.Fatalf("answer %d is for %q (%v)", i, got.URI, err)
		}
		if i == 5 && got.Body != "hello" {
			t.Fatalf("POST body %q", got.Body)
		}
		if i == 7 && !resp.Close {
			t.Fatalf("the answer to Connection: close does not close")
		}
	}
	if _, err := rc.br.ReadByte(); err != io.EOF {
		t.Fatalf("after Connection: close the gateway kept the connection (%v)", err)
	}
	if n := metricValue(e.srv.metrics.loopHandOffs); n != 0 {
		t.Fatalf("%v connections handed on; want none", n)
	}
}

// TestLoopHandsOnWhatItDoesNotServe: a WebSocket upgrade, a chunked body
// and a large one on a connection the loop holds go to the server with
// every byte intact, and the connection goes on working there.
func TestLoopHandsOnWhatItDoesNotServe(t *testing.T) {
	e, _, _, cookie := newLoopEnv(t, "handoff@example.com", 5)
	big := bytes.Repeat([]byte("0123456789abcdef"), 8<<10) // 128 KiB: over BufferedBodyLimit
	for _, tc := range []struct{ name, second, wantBody string }{
		{"chunked", "POST /api/c HTTP/1.1\r\nHost: x\r\n" + cookie + "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", "hello"},
		{"large", "POST /api/l HTTP/1.1\r\nHost: x\r\n" + cookie + fmt.Sprintf("Content-Length: %d\r\n\r\n", len(big)) + string(big), string(big)},
		{"expect", "POST /api/e HTTP/1.1\r\nHost: x\r\n" + cookie + "Expect: 100-continue\r\nContent-Length: 2\r\n\r\nok", "ok"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := metricValue(e.srv.metrics.loopHandOffs)
			rc := e.rawConn()
			rc.send("GET /api/first HTTP/1.1\r\nHost: x\r\n" + cookie + "\r\n")
			if resp, _ := rc.read("GET"); resp.StatusCode != 200 {
				t.Fatalf("first: %d", resp.StatusCode)
			}
			rc.send(tc.second + "GET /api/third HTTP/1.1\r\nHost: x\r\n" + cookie + "\r\n")
			resp, body := rc.read("POST")
			if resp.StatusCode == 100 {
				resp, body = rc.read("POST")
			}
			var got echo
			if err := json.Unmarshal(body, &got); err != nil || resp.StatusCode != 200 || got.Body != tc.wantBody {
				t.Fatalf("second: status %d, body %d bytes, err %v", resp.StatusCode, len(got.Body), err)
			}
			resp, body = rc.read("GET")
			if err := json.Unmarshal(body, &got); err != nil || got.URI != "/api/third" {
				t.Fatalf("third: status %d, %q", resp.StatusCode, got.URI)
			}
			if after := metricValue(e.srv.metrics.loopHandOffs); after != before+1 {
				t.Fatalf("hand-offs went from %v to %v; want one more", before, after)
			}
		})
	}
	t.Run("websocket", func(t *testing.T) {
		rc := e.rawConn()
		rc.send("GET /api/first HTTP/1.1\r\nHost: x\r\n" + cookie + "\r\n")
		if resp, _ := rc.read("GET"); resp.StatusCode != 200 {
			t.Fatalf("first: %d", resp.StatusCode)
		}
		rc.send("GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: " + e.host + "\r\n" + cookie +
			"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
		resp, err := http.ReadResponse(rc.br, nil)
		if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
			t.Fatalf("upgrade: %v %v", resp, err)
		}
	})
}

func TestLoopSliceFailures(t *testing.T) {
	e, u, fs, _ := newLoopEnv(t, "fail@example.com", 6, func(c *Config, _ *Deps) { c.ProxyTimeout = 300 * time.Millisecond })
	b := e.loopBrowser(u)

	// A slow slice: the loop's own timeout, answered as front answers it.
	r := e.do(b, "GET", "/api/slow", "", nil)
	if r.status != http.StatusGatewayTimeout || r.errorCode(t) != "slice_timeout" {
		t.Fatalf("slow slice: %d %s", r.status, r.body)
	}
	// The slice drops every pooled connection (a restart): the next
	// requests still succeed, on new connections.
	if r := e.do(b, "GET", "/api/x", "", nil); r.status != 200 {
		t.Fatalf("before the drop: %d", r.status)
	}
	fs.srv.CloseClientConnections()
	for i := 0; i < 3; i++ {
		if r := e.do(b, "GET", "/api/x", "", nil); r.status != 200 {
			t.Fatalf("after the slice dropped its connections: %d %s", r.status, r.body)
		}
	}
	// Gone for good: 502 with the JSON error, and the browser connection
	// stays usable.
	fs.srv.Close()
	r = e.do(b, "GET", "/api/x", "", nil)
	if r.status != http.StatusBadGateway || r.errorCode(t) != "slice_failed" {
		t.Fatalf("slice gone: %d %s", r.status, r.body)
	}
	if n := metricValue(e.srv.metrics.loopHandOffs); n != 0 {
		t.Fatalf("%v connections handed on; the loop answers slice failures itself", n)
	}
}

// TestLoopStreams: an event stream flows event by event, and a 3 MiB
// answer reaches a browser that reads slowly intact, with the slice held
// back rather than the answer buffered.
func TestLoopStreams(t *testing.T) {
	e, _, fs, cookie := newLoopEnv(t, "stream@example.com", 8)

	rc := e.rawConn()
	rc.send("GET /api/sse HTTP/1.1\r\nHost: x\r\n" + cookie + "\r\n")
	resp, err := http.ReadResponse(rc.br, nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("sse: %v %v", resp, err)
	}
	br := bufio.NewReader(resp.Body)
	for i := 1; i <= 3; i++ {
		fs.sseNext <- struct{}{}
		line, err := br.ReadString('\n')
		if err != nil || line != fmt.Sprintf("data: event %d\n", i) {
			t.Fatalf("event %d: %q %v", i, line, err)
		}
		_, _ = br.ReadString('\n')
	}

	rc = e.rawConn()
	rc.send("GET /api/big HTTP/1.1\r\nHost: x\r\n" + cookie + "\r\n")
	resp, err = http.ReadResponse(rc.br, nil)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	chunk := make([]byte, 32<<10)
	total := 0
	for {
		n, err := resp.Body.Read(chunk)
		h.Write(chunk[:n])
		total += n
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if total < 1<<20 {
			time.Sleep(time.Millisecond) // a slow reader, not synchronisation
		}
	}
	want := make([]byte, 3<<20)
	for i := range want {
		want[i] = byte(i % 251)
	}
	if sum := sha256.Sum256(want); total != len(want) || !bytes.Equal(h.Sum(nil), sum[:]) {
		t.Fatalf("got %d bytes, want %d intact", total, len(want))
	}
}

// TestLoopShutdown: Shutdown closes idle connections at once, lets a
// request with the slice finish (its answer closes the connection), and
// returns when the loops hold nothing.
func TestLoopShutdown(t *testing.T) {
	loopUnsupported(t)
	clock := newFakeClock()
	accts, sl, routes := newFakeAccounts(clock.Now), newFakeSlices(), newFakeRoutes()
	srv := New(Config{Argon2: cheapArgon2, Logger: testLogger(), Now: clock.Now}, Deps{Accounts: accts, Slices: sl, Routes: routes})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	usr, _ := accts.CreateUser(context.Background(), "down@example.com", "x")
	tok, hash := accounts.NewToken()
	_ = accts.CreateSession(context.Background(), usr.ID, hash[:], clock.Now().Add(time.Hour))
	fs := newFakeSlice(t, 9)
	sl.set(usr.ID, slicehub.Slice{ID: 9, State: slicehub.StateAssigned, UserID: usr.ID})
	routes.set(9, fs.addr())
	cookie := "Cookie: " + slicehub.SessionCookie + "=" + tok + "\r\n"
	dial := func() *rawConn {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		return &rawConn{t: t, c: c, br: bufio.NewReader(c)}
	}
	idle, busy := dial(), dial()
	idle.send("GET /api/x HTTP/1.1\r\nHost: x\r\n" + cookie + "\r\n")
	if resp, _ := idle.read("GET"); resp.StatusCode != 200 {
		t.Fatalf("idle's first request: %d", resp.StatusCode)
	}
	busy.send("GET /api/slow HTTP/1.1\r\nHost: x\r\n" + cookie + "\r\n")
	eventually(t, "the slow request to reach the slice", func() bool { return fs.slowIn.Load() > 0 })
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		done <- srv.Shutdown(ctx)
	}()
	if _, err := idle.br.ReadByte(); err != io.EOF {
		t.Fatalf("the idle connection was not closed by Shutdown: %v", err)
	}
	select {
	case err := <-done:
		t.Fatalf("Shutdown returned (%v) with a request in flight", err)
	default:
	}
	close(fs.slowDone)
	resp, _ := busy.read("GET")
	if resp.StatusCode != 200 || !resp.Close {
		t.Fatalf("the request in flight got %d, close %v; want 200 and Connection: close", resp.StatusCode, resp.Close)
	}
	if err := <-done; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := <-served; err != nil {
		t.Fatalf("Serve: %v", err)
	}
}

func metricValue(m prometheus.Metric) float64 {
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		panic(err)
	}
	if g := d.GetGauge(); g != nil {
		return g.GetValue()
	}
	return d.GetCounter().GetValue()
}

// TestLoopTimeouts: on a connection the loop holds, a browser that goes
// quiet is closed after IdleTimeout, and one that sends half a request
// after ReadTimeout, as the fasthttp server would.
func TestLoopTimeouts(t *testing.T) {
	const idle, read = 300 * time.Millisecond, 400 * time.Millisecond
	e, _, _, cookie := newLoopEnv(t, "timeouts@example.com", 10, func(c *Config, _ *Deps) { c.IdleTimeout, c.ReadTimeout = idle, read })
	for _, tc := range []struct {
		name, then string
		within     time.Duration
	}{
		{"idle", "", idle},
		{"half a head", "GET /api/x HTTP/1.1\r\nHost: x\r\n", read},
		{"half a body", "POST /api/x HTTP/1.1\r\nHost: x\r\n" + cookie + "Content-Length: 10\r\n\r\nhalf", read},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rc := e.rawConn()
			rc.send("GET /api/x HTTP/1.1\r\nHost: x\r\n" + cookie + "\r\n")
			if resp, _ := rc.read("GET"); resp.StatusCode != 200 {
				t.Fatalf("first request: %d", resp.StatusCode)
			}
			start := time.Now()
			if tc.then != "" {
				rc.send(tc.then)
			}
			if _, err := rc.br.ReadByte(); err != io.EOF {
				t.Fatalf("the connection was not closed: %v", err)
			}
			// The sweep runs every quarter of the shortest timeout: allow a
			// tick and a little scheduling on either side.
			if took := time.Since(start); took < tc.within-50*time.Millisecond || took > tc.within+time.Second {
				t.Fatalf("closed after %v; want about %v", took, tc.within)
			}
		})
	}
	if n := metricValue(e.srv.metrics.loopHandOffs); n != 0 {
		t.Fatalf("%v connections handed on; the loop enforces its timeouts itself", n)
	}
}

// TestLoopFollowsInvalidation: a connection the loop holds routes each
// request by what the caches say then, so a logout, a suspension or a
// slice moved to another address takes effect on the next request.
func TestLoopFollowsInvalidation(t *testing.T) {
	loopUnsupported(t)
	e := newEnv(t)
	u := e.signup("inval@example.com")
	fs1, fs2 := newFakeSlice(t, 11), newFakeSlice(t, 11)
	e.withSlice(u, fs1)
	b := e.loopBrowser(u)
	get := func() (*result, *echo) {
		r := e.do(b, "GET", "/api/x", "", nil)
		if r.status != 200 {
			return r, nil
		}
		var got echo
		r.decode(t, &got)
		return r, &got
	}
	if r, _ := get(); r.status != 200 {
		t.Fatalf("first: %d", r.status)
	}
	before := fs2.conns.Load()
	e.routes.set(11, fs2.addr()) // the allocation moved: Consul says so
	if r, _ := get(); r.status != 200 || fs2.conns.Load() == before {
		t.Fatalf("after the move: status %d, the new address saw %d new connections", r.status, fs2.conns.Load()-before)
	}
	e.slices.set(u.id, slicehub.Slice{ID: 11, State: slicehub.StateSuspended, UserID: u.id})
	e.srv.Invalidate(u.id)
	if r, _ := get(); r.status != http.StatusPaymentRequired {
		t.Fatalf("suspended: %d %s", r.status, r.body)
	}
	e.slices.set(u.id, slicehub.Slice{ID: 11, State: slicehub.StateAssigned, UserID: u.id})
	e.srv.Invalidate(u.id)
	b = e.loopBrowser(u)
	if r, _ := get(); r.status != 200 {
		t.Fatalf("resumed: %d %s", r.status, r.body)
	}
	// Logged out elsewhere: the session is gone from the store and the cache.
	if r := e.do(u.client, "POST", "/auth/logout", "", nil); r.status != http.StatusNoContent {
		t.Fatalf("logout: %d", r.status)
	}
	if r, _ := get(); r.status != http.StatusUnauthorized || r.errorCode(t) != "no_session" {
		t.Fatalf("after logout: %d %s", r.status, r.body)
	}
}

// panicky wraps the route table and the accounts with bugs that fire on
// demand: a lookup of one slice, or any session read.
type panicky struct {
	Routes
	Accounts
	slice    int64
	routes   atomic.Bool
	sessions atomic.Bool
}

func (p *panicky) Lookup(id int64) (slicehub.Route, bool) {
	if id == p.slice && p.routes.Load() {
		panic("route table bug")
	}
	return p.Routes.Lookup(id)
}

func (p *panicky) SessionUser(ctx context.Context, h []byte, idle time.Duration) (slicehub.User, error) {
	if p.sessions.Load() {
		panic("session store bug")
	}
	return p.Accounts.SessionUser(ctx, h, idle)
}

// TestLoopRecoversFromPanics: a panic while the loop serves a request
// (an adopted connection's first, a later one, or a cache fill off the
// loop) closes that connection alone and is counted; the loop's other
// connections, and the gateway, go on.
func TestLoopRecoversFromPanics(t *testing.T) {
	loopUnsupported(t)
	p := &panicky{slice: 66}
	e := newEnv(t, func(_ *Config, d *Deps) {
		p.Routes, p.Accounts = d.Routes, d.Accounts
		d.Routes, d.Accounts = p, p
	})
	ok, bad := e.signup("ok@example.com"), e.signup("bad@example.com")
	e.withSlice(ok, newFakeSlice(t, 65))
	e.withSlice(bad, newFakeSlice(t, 66))
	okCookie := "Cookie: " + slicehub.SessionCookie + "=" + e.sessionToken(ok) + "\r\n"
	badCookie := "Cookie: " + slicehub.SessionCookie + "=" + e.sessionToken(bad) + "\r\n"
	get := func(rc *rawConn, cookie string) {
		t.Helper()
		rc.send("GET /api/x HTTP/1.1\r\nHost: x\r\n" + cookie + "\r\n")
		if resp, _ := rc.read("GET"); resp.StatusCode != 200 {
			t.Fatalf("GET /api/x: %d", resp.StatusCode)
		}
	}
	closed := func(what string, rc *rawConn) {
		t.Helper()
		if resp, err := http.ReadResponse(rc.br, nil); err == nil {
			t.Fatalf("%s: answered %d; want the connection closed", what, resp.StatusCode)
		} else if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("%s: %v; want the connection closed", what, err)
		}
	}
	// Bystanders on every loop, served once already.
	var others []*rawConn
	for range 2 * runtime.GOMAXPROCS(0) {
		rc := e.rawConn()
		get(rc, okCookie)
		others = append(others, rc)
	}
	// Panics on a later request: on the loop, reading the connection.
	later := e.rawConn()
	get(later, badCookie)
	p.routes.Store(true)
	later.send("GET /api/x HTTP/1.1\r\nHost: x\r\n" + badCookie + "\r\n")
	closed("a panic on a later request", later)
	// On a first request: in the loop's inbox, adopting the connection.
	first := e.rawConn()
	first.send("GET /api/x HTTP/1.1\r\nHost: x\r\n" + badCookie + "\r\n")
	closed("a panic on a first request", first)
	p.routes.Store(false)
	// Filling the session cache, off the loop.
	e.srv.Invalidate(bad.id)
	p.sessions.Store(true)
	fill := e.rawConn()
	fill.send("GET /api/x HTTP/1.1\r\nHost: x\r\n" + badCookie + "\r\n")
	closed("a panic filling the cache", fill)
	p.sessions.Store(false)

	if n := metricValue(e.srv.metrics.loopPanics); n != 3 {
		t.Fatalf("%v panics counted; want 3", n)
	}
	for _, rc := range others {
		get(rc, okCookie)
	}
	get(e.rawConn(), badCookie) // the bugs gone, the same user is served again
	eventually(t, "the loops to hold the live connections only", func() bool {
		return metricValue(e.srv.metrics.loopConns) == float64(len(others)+1)
	})
	if n := metricValue(e.srv.metrics.loopHandOffs); n != 0 {
		t.Fatalf("%v connections handed on; the loop served every one", n)
	}
}

// TestLoopHandOffKeepsQueuedOutput: a request the loop hands on, pipelined
// behind one whose answer the browser has not yet taken, goes to the
// server only once that answer has left: every byte of it arrives, before
// the server's answer. Small socket buffers on both sides (the gateway's
// set on its listener, which accepted sockets inherit) make the last read
// of the slice's 120 KiB answer more than the kernel can take at once, so
// that some of it is still queued in the loop when its request ends.
func TestLoopHandOffKeepsQueuedOutput(t *testing.T) {
	loopUnsupported(t)
	small := func(opt int) func(_, _ string, rc syscall.RawConn) error {
		return func(_, _ string, rc syscall.RawConn) error {
			return rc.Control(func(fd uintptr) { _ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, opt, 4096) })
		}
	}
	ln, err := (&net.ListenConfig{Control: small(syscall.SO_SNDBUF)}).Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e := newEnvOn(t, ln, nil)
	u := e.signup("queue@example.com")
	e.withSlice(u, newFakeSlice(t, 9))
	cookie := "Cookie: " + slicehub.SessionCookie + "=" + e.sessionToken(u) + "\r\n"
	want := pattern(120 << 10)
	for round := range 3 {
		c, err := (&net.Dialer{Control: small(syscall.SO_RCVBUF)}).Dial("tcp", e.host)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		rc := &rawConn{t: t, c: c, br: bufio.NewReader(c)}
		rc.send(fmt.Sprintf("GET /api/bytes?n=%d HTTP/1.1\r\nHost: x\r\n%s\r\n", len(want), cookie) +
			"POST /api/c HTTP/1.1\r\nHost: x\r\n" + cookie + "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n" +
			"GET /api/third HTTP/1.1\r\nHost: x\r\n" + cookie + "\r\n")
		resp, body := rc.read("GET")
		if resp.StatusCode != 200 || !bytes.Equal(body, want) {
			t.Fatalf("round %d: the first answer: %d, %d bytes (intact: %v) of %d", round, resp.StatusCode, len(body), bytes.Equal(body, want), len(want))
		}
		var got echo
		resp, body = rc.read("POST")
		if err := json.Unmarshal(body, &got); err != nil || resp.StatusCode != 200 || got.Body != "hello" {
			t.Fatalf("round %d: the handed-on request: %d %.200q", round, resp.StatusCode, body)
		}
		resp, body = rc.read("GET")
		if err := json.Unmarshal(body, &got); err != nil || got.URI != "/api/third" {
			t.Fatalf("round %d: the third: %d %.200q", round, resp.StatusCode, body)
		}
	}
	if n := metricValue(e.srv.metrics.loopHandOffs); n != 3 {
		t.Fatalf("%v hand-offs; want one per connection", n)
	}
}

// parity is two gateways, one with the event loop and one without, each
// with a user whose slice is routed: the same bytes sent to both must get
// the same answers.
type parity struct {
	server, loop parityEnv
}

type parityEnv struct {
	e      *testEnv
	cookie string // the Cookie header, without its line end
}

// parityAnswer is what a browser could tell apart in an answer: its status
// and, for the slice's echo, the request the slice saw.
type parityAnswer struct {
	Status                   int
	Method, URI, Body, Error string
}

func newParity(t testing.TB) *parity {
	p := &parity{}
	for _, pe := range []*parityEnv{&p.server, &p.loop} {
		noLoop := pe == &p.server
		e := newEnv(t, func(c *Config, _ *Deps) { c.NoEventLoop = noLoop })
		u := e.signup("parity@example.com")
		e.withSlice(u, newFakeSlice(t, 12))
		*pe = parityEnv{e, "Cookie: " + slicehub.SessionCookie + "=" + e.sessionToken(u)}
	}
	return p
}

// exchange sends raw (COOKIE in it becomes the user's Cookie header) on a
// new connection, after one plain request when warm (so that the loop, not
// the splitter, splits it), half-closes, and returns every answer.
func (pe parityEnv) exchange(t testing.TB, warm bool, raw string) []parityAnswer {
	t.Helper()
	c, err := net.Dial("tcp", pe.e.host)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	if warm {
		_, _ = io.WriteString(c, "GET /api/warm HTTP/1.1\r\nHost: x\r\n"+pe.cookie+"\r\n\r\n")
		if resp, err := http.ReadResponse(br, nil); err != nil || resp.StatusCode != 200 {
			t.Fatalf("the first request: %v %v", resp, err)
		} else {
			_, _ = io.Copy(io.Discard, resp.Body)
		}
	}
	if _, err := io.WriteString(c, strings.ReplaceAll(raw, "COOKIE", pe.cookie)); err != nil {
		return nil // closed before reading it all
	}
	_ = c.(*net.TCPConn).CloseWrite()
	var out []parityAnswer
	for {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return out
		}
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			return out
		}
		a := parityAnswer{Status: resp.StatusCode}
		var got echo
		if json.Unmarshal(body, &got) == nil && got.Slice != 0 {
			a.Method, a.URI, a.Body = got.Method, got.URI, got.Body
		} else {
			a.Error = string(body)
		}
		out = append(out, a)
	}
}

// compare sends raw both ways and fails if the answers differ; it returns
// how many connections the loop handed on meanwhile.
func (p *parity) compare(t testing.TB, warm bool, raw string) float64 {
	t.Helper()
	before := metricValue(p.loop.e.srv.metrics.loopHandOffs)
	server := p.server.exchange(t, warm, raw)
	loop := p.loop.exchange(t, warm, raw)
	if fmt.Sprint(server) != fmt.Sprint(loop) {
		t.Fatalf("answers to %q differ:\nserver %+v\nloop   %+v", raw, server, loop)
	}
	return metricValue(p.loop.e.srv.metrics.loopHandOffs) - before
}

// TestLoopSplitsHeadsAsServer sends the same bytes, line ends of every
// kind, to a gateway with the event loop and to one without, on a
// connection's first request (the splitter's peek) and after one (the
// loop's own split), and compares every answer and what the slice saw.
// fasthttp accepts bare LF line ends; a loop that split heads on
// "\r\n\r\n" alone waited for ever on a bare-LF head, or read the next
// pipelined request into it.
func TestLoopSplitsHeadsAsServer(t *testing.T) {
	loopUnsupported(t)
	p := newParity(t)
	for _, tc := range loopSplitCases {
		for _, warm := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s, warm %v", tc.name, warm), func(t *testing.T) {
				if len(p.server.exchange(t, warm, tc.raw)) == 0 {
					t.Fatalf("the server did not answer %q", tc.raw)
				}
				// Which path answered: the loop, where fasthttp's parser split
				// the heads where loop.HeadEnd did, or the server for a refusal.
				want := 0.0
				if tc.handOff {
					want = 1
				}
				if n := p.compare(t, warm, tc.raw); n != want {
					t.Fatalf("the loop handed %v connections on; want %v", n, want)
				}
			})
		}
	}
}

// loopSplitCases: handOff, the loop hands the connection on, as it does
// any request the server refuses (400 here), and serves the others itself.
var loopSplitCases = []struct {
	name, raw string
	handOff   bool
}{
	{"all CRLF", "GET /api/a HTTP/1.1\r\nHost: x\r\nCOOKIE\r\n\r\n", false},
	{"bare LF", "GET /api/a HTTP/1.1\nHost: x\nCOOKIE\n\n", false},
	{"bare LF, then a CRLF request", "GET /api/a HTTP/1.1\nHost: x\nCOOKIE\n\nGET /api/b HTTP/1.1\r\nHost: x\r\nCOOKIE\r\n\r\n", false},
	{"bare LF with a body, then a CRLF request", "POST /api/a HTTP/1.1\nHost: x\nCOOKIE\nContent-Length: 5\n\nhelloGET /api/b HTTP/1.1\r\nHost: x\r\nCOOKIE\r\n\r\n", false},
	{"bare LF, then what looks like its headers", "GET /api/a HTTP/1.1\nHost: x\nCOOKIE\n\nContent-Length: 3\r\n\r\nGET /api/b HTTP/1.1\r\nHost: x\r\nCOOKIE\r\n\r\n", true},
	{"mixed line ends", "GET /api/a HTTP/1.1\r\nHost: x\nCOOKIE\r\nX-A: 1\n\r\n", false},
	{"LF lines, CRLF end", "GET /api/a HTTP/1.1\nHost: x\nCOOKIE\n\r\n", false},
	{"empty lines first", "\r\n\nGET /api/a HTTP/1.1\r\nHost: x\r\nCOOKIE\r\n\r\n", false},
	{"a bare CR", "GET /api/a HTTP/1.1\r\nHost: x\r\nCOOKIE\r\nX-A: 1\r\r\n\r\n", true},
}

// FuzzLoopAsServer: any bytes, sent after a plain request or as the
// connection's first, get the same answers from the gateway with the event
// loop as from the one without.
func FuzzLoopAsServer(f *testing.F) {
	if !loop.Supported {
		f.Skip("SKIPPED: the event loop exists on Linux only")
	}
	for _, tc := range loopSplitCases {
		f.Add(false, tc.raw)
		f.Add(true, tc.raw)
	}
	f.Add(true, "POST /api/a HTTP/1.1\r\nHost: x\r\nCOOKIE\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nGET /api/b HTTP/1.1\r\nHost: x\r\nCOOKIE\r\n\r\n")
	f.Add(true, "GET /api/a HTTP/1.0\r\nHost: x\r\nCOOKIE\r\n\r\n")
	// A body the slice ends by closing, then another request: the loop
	// relays it chunked and the browser's connection goes on, as on the
	// server path, which answers it with a length.
	f.Add(true, "GET /api/until-close HTTP/1.1\r\nHost: x\r\nCOOKIE\r\n\r\nGET /api/b HTTP/1.1\r\nHost: x\r\nCOOKIE\r\n\r\n")
	f.Add(false, "GET /api/until-close HTTP/1.1\r\nHost: x\r\nCOOKIE\r\n\r\nGET /api/until-close HTTP/1.1\r\nHost: x\r\nCOOKIE\r\n\r\n")
	for _, target := range []string{"/api/a?", "/api/a?#x", "/api/a#x?y=1", "/api/a??", "/api/a?q=1#f"} {
		f.Add(true, "GET "+target+" HTTP/1.1\r\nHost: x\r\nCOOKIE\r\n\r\n")
	}
	f.Add(true, "GET http://x/api/a HTTP/1.1\r\nHost: x\r\nCOOKIE\r\n\r\n")
	f.Add(true, "GET /api/a HTTP/1.1\r\nHost: x\r\nCOOKIE\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc")
	f.Add(true, "GET /api/a HTTP/1.1\r\nHost: x\r\nCOOKIE\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n")
	f.Add(false, "GET /api/a HTTP/1.1\r\nHost: x\r\n COOKIE\r\n\r\n")
	p := newParity(f)
	f.Fuzz(func(t *testing.T, warm bool, raw string) {
		p.compare(t, warm, raw)
	})
}
