package gateway

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/slicehub/slicehub"
	"github.com/slicehub/slicehub/gateway/accounts"
	"github.com/slicehub/slicehub/gateway/proxy"
	"github.com/slicehub/slicehub/gateway/wire"
)

// Fuzz targets for everything in the gateway that parses what a stranger
// sends. Each runs its seeds as a plain test under `go test`; run one for
// longer with, for example,
//
//	go test ./gateway/ -run '^$' -fuzz '^FuzzProxyRouting$' -fuzztime 30s

// FuzzNormalizeEmail checks that a normalised email is a fixed point,
// lowercase, of bounded length, free of spaces and controls, and one plain
// address: two spellings of one mailbox would be two accounts, and a
// display name or a second address could route a reset mail elsewhere.
func FuzzNormalizeEmail(f *testing.F) {
	for _, s := range []string{" Ada@Example.COM ", "a.b+c@mail.example", "a@b", "a@@example.com", "\"a b\"@example.com",
		"a@example.com, b@example.com", "Eve <eve@example.com>", "a@example.com\r\nBcc: x@y.z", "a@exa\u0000mple.com",
		"ǅ@example.com", "K@example.com", "ß@example.com", "a@[127.0.0.1]", "a(comment)@example.com", "İ@example.com"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		e, err := slicehub.NormalizeEmail(s)
		if err != nil {
			if e != "" {
				t.Fatalf("refused %q but returned %q", s, e)
			}
			return
		}
		if again, err := slicehub.NormalizeEmail(e); err != nil || again != e {
			t.Fatalf("slicehub.NormalizeEmail(%q) = %q, which normalises to %q, %v", s, e, again, err)
		}
		if e != strings.ToLower(e) || len(e) > 254 || strings.Count(e, "@") != 1 {
			t.Fatalf("slicehub.NormalizeEmail(%q) = %q: not lowercase, too long or not one @", s, e)
		}
		for _, r := range e {
			if r <= ' ' || r == 0x7f || r == ',' || r == '<' || r == '>' {
				t.Fatalf("slicehub.NormalizeEmail(%q) = %q contains %q", s, e, r)
			}
		}
	})
}

// parseRawRequest reads one request the way the gateway's server does.
func parseRawRequest(raw string) (*fasthttp.RequestCtx, bool) {
	ctx := &fasthttp.RequestCtx{}
	if err := ctx.Request.Header.Read(bufio.NewReader(strings.NewReader(raw))); err != nil {
		return nil, false
	}
	return ctx, true
}

// sliceView parses what the gateway would send to a slice the way the
// slice (net/http) parses it. ok is false when net/http would refuse it.
func sliceView(req *fasthttp.Request) (*http.Request, bool) {
	var buf bytes.Buffer
	w := bufio.NewWriter(&buf)
	if err := req.Write(w); err != nil {
		return nil, false
	}
	w.Flush()
	r, err := http.ReadRequest(bufio.NewReader(&buf))
	if err != nil {
		return nil, false
	}
	return r, true
}

// checkSliceHeaders fails unless the only X-Slicehub-* headers (in any
// spelling) are the gateway's, once each with the values given, and the
// session cookie is absent.
func checkSliceHeaders(t *testing.T, h http.Header, wantUser, wantToken string) {
	t.Helper()
	for k, v := range h {
		if !proxy.IsReservedHeader([]byte(strings.TrimSpace(k))) {
			continue
		}
		switch k {
		case slicehub.HeaderUserID:
			if len(v) != 1 || v[0] != wantUser {
				t.Fatalf("the slice sees user %q, want only %q", v, wantUser)
			}
		case slicehub.HeaderGatewayToken:
			if len(v) != 1 || v[0] != wantToken {
				t.Fatalf("the slice sees token %q, want only %q", v, wantToken)
			}
		default:
			t.Fatalf("a client's %s: %q reaches the slice", k, v)
		}
	}
	if h.Get(slicehub.HeaderUserID) == "" || h.Get(slicehub.HeaderGatewayToken) == "" {
		t.Fatalf("the gateway's identity headers are missing: %v", h)
	}
	r := http.Request{Header: h}
	for _, c := range r.Cookies() {
		if c.Name == slicehub.SessionCookie || c.Name == slicehub.CSRFCookie {
			t.Fatalf("the gateway's cookie %s reaches the slice: %v", c.Name, h["Cookie"])
		}
	}
}

var fuzzHeaderSeeds = []string{
	"X-Slicehub-User-Id: 999\r\n",
	"x-slicehub-gateway-token: forged\r\nX_SLICEHUB_USER_ID: 1\r\n",
	"X-Slicehub-User-Id: 1\r\nX-Slicehub-User-Id: 2\r\n",
	"X-Slicehub-User-Id : 1\r\n",
	"X-Slicehub-User-Id:\t1\r\n",
	"X-Slicehub-User-Id: 1\r\n 2\r\n",
	"Connection: X-Slicehub-User-Id, close\r\nX-Custom: 1\r\n",
	"Cookie: slicehub_session=abc; slicehub_session=def\r\nCookie: a=b; slicehub_session=ghi\r\n",
	"Cookie: slicehub_session=abc;slicehub_session=def,slicehub_session=x\r\n",
	"Cookie: \"slicehub_session\"=x; SLICEHUB_SESSION=y; slicehub_session =z\r\n",
	"Cookie:slicehub_session=\"q\"\r\n",
	"Cookie: slicehub_csrf=secret; slicehub_csrf=again; theme=dark\r\n",
	"Set-Cookie: slicehub_session=x\r\nCookie2: slicehub_session=y\r\n",
	"X-Forwarded-For: 6.6.6.6\r\nForwarded: for=6.6.6.6\r\nX-Real-Ip: 1.1.1.1\r\n",
	"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n",
	"Content-Length: 0\r\nContent-Length: 5\r\n",
	"Host: other\r\nHost: other2\r\n",
	strings.Repeat("X-Slicehub-A: 1\r\n", 40),
	strings.Repeat("X-Slicehub-"+strings.Repeat("B", 100)+": 1\r\n", 10),
	"X-Slicehub-" + strings.Repeat("L", 600) + ": 1\r\n",               // once made stripRequest loop for ever
	"Cookie: =slicehub_session=planted; slicehub_csrf; theme=dark\r\n", // nameless cookies, once passed
	"Connection: X-" + strings.Repeat("H", 600) + "\r\nX-" + strings.Repeat("H", 600) + ": 1\r\n",
}

// FuzzRequestHygiene feeds arbitrary header blocks through what the proxy
// does to a request (prepareRequest for HTTP, backendHeader for a WebSocket
// handshake) and parses the result as the slice would. Whatever the client
// wrote, the slice sees the gateway's user id and token once each, no other
// X-Slicehub-* header in any spelling, and no session cookie.
func FuzzRequestHygiene(f *testing.F) {
	for _, s := range fuzzHeaderSeeds {
		f.Add("/api/x", s)
	}
	f.Add("http://other.example/api/x", "X-Slicehub-User-Id: 1\r\n")
	f.Add("/api/x?a=b", "Cookie: "+strings.Repeat("c=1; ", 200)+"slicehub_session=x\r\n")
	s := &Server{}
	sess := &accounts.Session{User: slicehub.User{ID: 5}, SliceID: 7, UserIDHeader: []byte("5")}
	token := []byte("token-of-slice-7")
	f.Fuzz(func(t *testing.T, uri, headers string) {
		raw := "GET " + uri + " HTTP/1.1\r\nHost: app.example.com\r\n" + headers + "\r\n"
		ctx, ok := parseRawRequest(raw)
		if !ok {
			return // the server would have answered 400
		}
		wsHeader := s.backendHeader(ctx, sess, token)
		// The fuzzer has no timeout of its own: a hang would only stall it.
		done := make(chan struct{})
		go func() {
			defer close(done)
			s.prepareRequest(ctx, sess, token, "127.0.0.1:1")
		}()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatalf("prepareRequest did not return for %q", raw)
		}
		if r, ok := sliceView(&ctx.Request); ok {
			checkSliceHeaders(t, r.Header, "5", string(token))
		}
		checkSliceHeaders(t, wsHeader, "5", string(token))
	})
}

// FuzzBootstrapDecode posts arbitrary bodies to the internal bootstrap
// endpoint through the real Fiber app (without a socket). Only a well-formed
// request with a canonical slice id and a plain allocation id may reach
// Slices.Bootstrap, and nothing may answer 5xx.
func FuzzBootstrapDecode(f *testing.F) {
	for _, s := range []string{
		`{"slice_id":"7","alloc_id":"0b6c4a8e-1f2d-4c3b-9a8e-123456789abc"}`,
		`{"slice_id":"07","alloc_id":"a"}`, `{"slice_id":7,"alloc_id":"a"}`, `{"slice_id":"7","alloc_id":"a/../b"}`,
		`{"slice_id":"7","alloc_id":"a","x":1}`, `{"slice_id":"7","alloc_id":"a"}{}`, `{"slice_id":"7","SLICE_ID":"8","alloc_id":"a"}`,
		`{"slice_id":"7","slice_id":"8","alloc_id":"a"}`, `{"slice_id":"\u0037","alloc_id":"a"}`, `{"slice_id":"-1","alloc_id":"a"}`,
		`{"slice_id":"7","alloc_id":"` + strings.Repeat("a", 65) + `"}`, `null`, `[]`, ``, `{"slice_id":"7","alloc_id":"a\u0000"}`,
	} {
		f.Add(s)
	}
	var got []slicehub.BootstrapRequest
	slices := newFakeSlices()
	slices.bootstrap = func(req slicehub.BootstrapRequest) (slicehub.SliceCredentials, error) {
		got = append(got, req)
		return slicehub.SliceCredentials{DatabaseURL: "postgres://x", GatewayToken: "t"}, nil
	}
	s := New(Config{Logger: testLogger(), Argon2: cheapArgon2,
		// No bootstrap throttle, so that the fuzzer reaches the decoder; the
		// throttle has its own test.
		Throttle: Throttles{LoginPerIP: Rate{Burst: 1, Every: time.Second}}},
		Deps{Accounts: newFakeAccounts(time.Now), Slices: slices, Routes: newFakeRoutes()})
	f.Cleanup(func() { s.stopOnce.Do(func() { close(s.stop) }) })
	handler := s.internal.Handler()
	f.Fuzz(func(t *testing.T, body string) {
		got = got[:0]
		ctx := &fasthttp.RequestCtx{}
		ctx.Request.Header.SetMethod("POST")
		ctx.Request.SetRequestURI(slicehub.BootstrapPath)
		ctx.Request.Header.SetContentType("application/json")
		ctx.Request.SetBodyString(body)
		handler(ctx)
		if st := ctx.Response.StatusCode(); st >= 500 {
			t.Fatalf("body %q: status %d %s", body, st, ctx.Response.Body())
		}
		for _, req := range got {
			if _, ok := slicehub.ParseSliceID(req.SliceID); !ok || !validAllocID(req.AllocID) {
				t.Fatalf("body %q reached Bootstrap as %+v", body, req)
			}
		}
		if len(got) == 0 && ctx.Response.StatusCode() == 200 {
			t.Fatalf("body %q: 200 without asking Bootstrap", body)
		}
	})
}

// routingEnv is a gateway with two tenants, A and B, each on its own fake
// slice. The fuzzer speaks as A only (its cookie is substituted for {A} in
// the input); B's slice must never see a connection.
type routingEnv struct {
	e        *testEnv
	a        *testUser
	tokA     string
	sa, sb   *fakeSlice
	aID, bID string

	mu    sync.Mutex
	wsBad []string // what was wrong with WebSocket handshakes A's slice saw
}

func newRoutingEnv(t testing.TB) *routingEnv {
	e := newEnv(t)
	a, b := e.signup("ann@example.com"), e.signup("bob@example.com")
	sa, sb := newFakeSlice(t, 901), newFakeSlice(t, 902)
	e.withSlice(a, sa)
	e.withSlice(b, sb)
	re := &routingEnv{e: e, a: a, tokA: e.sessionToken(a), sa: sa, sb: sb,
		aID: strconv.FormatInt(a.id, 10), bID: strconv.FormatInt(b.id, 10)}
	// A's fake slice reports each WebSocket handshake on a small channel
	// and blocks when it is full: drain it, and keep what was wrong.
	wantToken := e.slices.tokenOf(sa.id)
	go func() {
		for h := range sa.wsHeaders {
			bad := ""
			for k, v := range h {
				switch {
				case !proxy.IsReservedHeader([]byte(k)):
				case k == slicehub.HeaderUserID && len(v) == 1 && v[0] == re.aID:
				case k == slicehub.HeaderGatewayToken && len(v) == 1 && v[0] == wantToken:
				default:
					bad = fmt.Sprintf("a WebSocket handshake reached A's slice with %s: %q", k, v)
				}
			}
			if ck := strings.Join(h["Cookie"], ";"); strings.Contains(ck, re.tokA) || strings.Contains(ck, slicehub.CSRFCookie) {
				bad = "a WebSocket handshake carried a gateway cookie: " + ck
			}
			if bad != "" {
				re.mu.Lock()
				re.wsBad = append(re.wsBad, bad)
				re.mu.Unlock()
			}
		}
	}()
	go func() {
		for range sa.wsClosed {
		}
	}()
	return re
}

// exchange writes raw to the gateway, half-closes, and returns every
// response the gateway wrote before closing (a request may be several).
func (re *routingEnv) exchange(t testing.TB, raw string) []*http.Response {
	t.Helper()
	conn, err := net.Dial("tcp", re.e.host)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(conn, raw); err != nil {
		return nil // the gateway closed on a bad request before reading it all
	}
	_ = conn.(*net.TCPConn).CloseWrite() // no more requests: the gateway closes after answering
	br := bufio.NewReader(conn)
	var out []*http.Response
	for {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return out
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return out
		}
		resp.Body = io.NopCloser(bytes.NewReader(body))
		out = append(out, resp)
	}
}

// check fails if any response came from B's slice or shows that A's slice
// was reached with another identity or a client's X-Slicehub-* header.
func (re *routingEnv) check(t testing.TB, raw string, resps []*http.Response) {
	t.Helper()
	if n := re.sb.conns.Load(); n != 0 {
		t.Fatalf("tenant B's slice got %d connections after %q", n, raw)
	}
	re.mu.Lock()
	bad := re.wsBad
	re.mu.Unlock()
	if len(bad) > 0 {
		t.Fatalf("after %q: %s", raw, bad[0])
	}
	for _, resp := range resps {
		body, _ := io.ReadAll(resp.Body)
		var got echo
		if json.Unmarshal(body, &got) != nil || got.Slice == 0 {
			continue // a refusal, or not the echo
		}
		if got.Slice != re.sa.id {
			t.Fatalf("%q reached slice %d", raw, got.Slice)
		}
		h := http.Header(got.Headers)
		for k, v := range h {
			if !proxy.IsReservedHeader([]byte(k)) {
				continue
			}
			want := re.aID
			if k == slicehub.HeaderGatewayToken {
				want = re.e.slices.tokenOf(re.sa.id)
			} else if k != slicehub.HeaderUserID {
				t.Fatalf("%q: the slice saw the client's %s: %q", raw, k, v)
			}
			if len(v) != 1 || v[0] != want {
				t.Fatalf("%q: the slice saw %s: %q, want %q", raw, k, v, want)
			}
		}
		if _, ok := got.Cookies[slicehub.CSRFCookie]; ok {
			t.Fatalf("%q: the CSRF cookie reached the slice", raw)
		}
		if _, ok := got.Cookies[slicehub.SessionCookie]; ok || strings.Contains(strings.Join(h["Cookie"], ";"), re.tokA) {
			t.Fatalf("%q: the session cookie reached the slice: %v", raw, h["Cookie"])
		}
	}
}

// FuzzProxyRouting sends A's requests with arbitrary request lines and
// headers through a real gateway listener: whatever the path, its encoding,
// the Host, X-Slicehub-* or X-Forwarded-* headers, or a second request
// smuggled behind the first, nothing reaches B's slice, and what reaches A's
// carries A's identity only.
func FuzzProxyRouting(f *testing.F) {
	for _, p := range []string{"/api/x", "/api/../socket.io/x", "/api/%2e%2e/%2e%2e/x", "/api/..%2F..%2Fx", "//api/x",
		"/api/x;slice=902", "/api;/x", "http://127.0.0.1:1/api/x", "http://other/api/x", "/API/x", "/api%2Fx", "/socket.io/?EIO=4&transport=polling",
		"/api/slices/902/x", "*", "/api/x HTTP/1.1\r\nX-Slicehub-User-Id: 2\r\nX:", "/api/x#frag", "/api/\x00", "/%61pi/x"} {
		f.Add(p, "")
	}
	for _, h := range fuzzHeaderSeeds {
		f.Add("/api/x", h)
	}
	f.Add("/api/x", "Content-Length: 40\r\n\r\nGET /api/y HTTP/1.1\r\nHost: x\r\nX-Slicehub-User-Id: 2\r\n")
	f.Add("/api/x", "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /api/y HTTP/1.1\r\nHost: x\r\n")
	f.Add("/api/x", "Cookie: slicehub_session=garbage\r\n")
	// Bare LF line ends, which fasthttp accepts: the loop and the server
	// must split these heads alike (TestLoopSplitsHeadsAsServer).
	f.Add("/api/x", "X-A: 1\n\nGET /api/y HTTP/1.1\nHost: x\nX-Slicehub-User-Id: 2\n")
	f.Add("/api/x", "X-A: 1\n\nContent-Length: 9\r\n\r\nGET /api/y HTTP/1.1\r\nHost: x\r\nX-Slicehub-User-Id: 2\r\n")
	f.Add("/api/x", "Transfer-Encoding: chunked\r\nTrailer: X-Slicehub-User-Id\r\n\r\n0\r\nX-Slicehub-User-Id: 2\r\n")
	for _, p := range []string{"/socket.io/", "socket.io/", "http://a@127.0.0.1:1/socket.io/", "/socket.io/@127.0.0.1:1/",
		"/socket.io/?x=@evil", "/socket.io\\@evil/", "/socket.io/%2F%2Fevil/", "/socket.io/#@evil"} {
		f.Add("ws:"+p, "X-Slicehub-User-Id: 2\r\nCookie: slicehub_csrf=x\r\n")
	}
	f.Add("/api/x", "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n")
	re := newRoutingEnv(f)
	f.Fuzz(func(t *testing.T, uri, headers string) {
		headers = strings.ReplaceAll(headers, "{A}", re.tokA)
		if strings.HasPrefix(uri, "ws:") {
			// A WebSocket handshake: the gateway builds the slice's URL from
			// the path itself, which is a different road from HTTP's.
			uri = uri[3:]
			headers = "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n" +
				"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nOrigin: http://" + re.e.host + "\r\n" + headers
		}
		raw := "GET " + uri + " HTTP/1.1\r\nHost: " + re.e.host + "\r\nCookie: " + slicehub.SessionCookie + "=" + re.tokA + "\r\n" +
			headers + "\r\n"
		re.check(t, raw, re.exchange(t, raw))
	})
}

// FuzzClientAddr checks the X-Forwarded-For walk against a plain
// re-statement of the rule: from a trusted peer, the right-most entry that
// is not a trusted proxy, stopping at the first entry that is not an
// address; from any other peer, the peer. The client address keys the
// login and bad-session throttles, so a client that could choose it could
// spread its guesses over any number of budgets.
func FuzzClientAddr(f *testing.F) {
	for _, s := range []string{"", "1.2.3.4", "6.6.6.6, 203.0.113.5", "203.0.113.5, 10.1.1.1", "10.1.1.1, 10.2.2.2",
		"garbage, 203.0.113.5", "203.0.113.5, garbage", "2001:db8::1", "::ffff:10.0.0.1", "::ffff:1.2.3.4", "fe80::1%eth0",
		" , ,", "1.2.3.4,,10.0.0.1", "1.2.3.4 ,\t10.0.0.1", "[2001:db8::1]", "1.2.3.4:80", "01.2.3.4"} {
		f.Add(s, true)
		f.Add(s, false)
	}
	trusted, _, err := wire.ParseTrustedProxies([]string{"10.0.0.0/8", "127.0.0.1"})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, xff string, fromProxy bool) {
		peer := netip.MustParseAddr("198.51.100.1")
		if fromProxy {
			peer = netip.MustParseAddr("127.0.0.1")
		}
		var ctx fasthttp.RequestCtx
		ctx.Init(&fasthttp.Request{}, &net.TCPAddr{IP: peer.AsSlice(), Port: 1234}, nil)
		ctx.Request.Header.Set("X-Forwarded-For", xff)
		got, via := trusted.ClientAddr(&ctx)

		xff = string(ctx.Request.Header.Peek("X-Forwarded-For")) // as fasthttp keeps it
		want, wantVia := peer, fromProxy
		if fromProxy {
			entries := strings.Split(xff, ",")
			if xff == "" {
				entries = nil
			}
			for i := len(entries) - 1; i >= 0; i-- {
				a, err := netip.ParseAddr(strings.TrimSpace(entries[i]))
				if err != nil {
					break
				}
				want = a.Unmap()
				if !trusted.Contains(want) {
					break
				}
			}
		}
		if got != want || via != wantVia {
			t.Fatalf("XFF %q from %s: got %s (via proxy %v), want %s (%v)", xff, peer, got, via, want, wantVia)
		}
	})
}
