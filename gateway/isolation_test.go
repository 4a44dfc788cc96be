package gateway

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fasthttp/websocket"

	"github.com/slicehub/slicehub"
	"github.com/slicehub/slicehub/gateway/accounts"
	"github.com/slicehub/slicehub/gateway/proxy"
)

// The tenant-isolation suite: tenant A tries every trick we know to reach
// tenant B's slice, or to reach its own slice as someone else. Each slice
// is a spy that records every request it is sent, so that a request
// smuggled inside another (which no response would reveal) is seen too.

// spySlice is a slice backend that keeps every request that reached it.
type spySlice struct {
	id  int64
	srv *httptest.Server

	mu   sync.Mutex
	seen []*http.Request // header and URI only; bodies are read and dropped
}

func newSpySlice(t *testing.T, id int64) *spySlice {
	s := &spySlice{id: id}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body := make([]byte, 0, 64)
		buf := make([]byte, 512)
		for {
			n, err := r.Body.Read(buf)
			body = append(body, buf[:n]...)
			if err != nil {
				break
			}
		}
		s.mu.Lock()
		s.seen = append(s.seen, &http.Request{Method: r.Method, RequestURI: r.RequestURI, Host: r.Host, Header: r.Header.Clone()})
		s.mu.Unlock()
		cookies := map[string]string{}
		for _, c := range r.Cookies() {
			cookies[c.Name] = c.Value
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(echo{Slice: s.id, Method: r.Method, URI: r.RequestURI, Host: r.Host,
			Headers: r.Header, Cookies: cookies, Body: string(body)})
	}))
	t.Cleanup(s.srv.Close)
	return s
}

func (s *spySlice) addr() string { return strings.TrimPrefix(s.srv.URL, "http://") }

func (s *spySlice) requests() []*http.Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*http.Request(nil), s.seen...)
}

type isolationEnv struct {
	e      *testEnv
	a, b   *testUser
	sa, sb *spySlice
	tokA   string
	tokB   string
}

func newIsolationEnv(t *testing.T) *isolationEnv {
	e := newEnv(t)
	a, b := e.signup("alice@example.com"), e.signup("bob@example.com")
	sa, sb := newSpySlice(t, 301), newSpySlice(t, 302)
	for _, p := range []struct {
		u *testUser
		s *spySlice
	}{{a, sa}, {b, sb}} {
		e.slices.set(p.u.id, slicehub.Slice{ID: p.s.id, State: slicehub.StateAssigned, UserID: p.u.id})
		e.routes.set(p.s.id, p.s.addr())
		e.srv.Invalidate(p.u.id)
	}
	return &isolationEnv{e: e, a: a, b: b, sa: sa, sb: sb, tokA: e.sessionToken(a), tokB: e.sessionToken(b)}
}

// assertOnlyA fails if B's slice was reached at all, or if A's slice saw a
// request that did not carry exactly A's identity and its own token, or that
// carried a gateway cookie or a client's X-Slicehub-* header.
// Only A's requests from index since on are looked at, so that one failure
// is reported once.
func (ie *isolationEnv) assertOnlyA(t *testing.T, what string, since int) {
	t.Helper()
	if n := len(ie.sb.requests()); n != 0 {
		t.Fatalf("%s: tenant B's slice was reached %d times", what, n)
	}
	wantUser := strconv.FormatInt(ie.a.id, 10)
	wantToken := ie.e.slices.tokenOf(ie.sa.id)
	for _, r := range ie.sa.requests()[since:] {
		for k, v := range r.Header {
			if !proxy.IsReservedHeader([]byte(k)) {
				continue
			}
			switch {
			case k == slicehub.HeaderUserID && len(v) == 1 && v[0] == wantUser:
			case k == slicehub.HeaderGatewayToken && len(v) == 1 && v[0] == wantToken:
			default:
				t.Fatalf("%s: A's slice saw %s: %q (request %s)", what, k, v, r.RequestURI)
			}
		}
		if r.Header.Get(slicehub.HeaderUserID) != wantUser || r.Header.Get(slicehub.HeaderGatewayToken) != wantToken {
			t.Fatalf("%s: A's slice got %s without A's identity: %v", what, r.RequestURI, r.Header)
		}
		for _, c := range r.Cookies() {
			if c.Name == slicehub.SessionCookie || c.Name == slicehub.CSRFCookie || strings.Contains(c.Value, ie.tokA) {
				t.Fatalf("%s: A's slice saw the gateway's cookie %s", what, c.Name)
			}
		}
		for _, v := range r.Header["Cookie"] {
			if strings.Contains(v, ie.tokA) || strings.Contains(v, ie.tokB) {
				t.Fatalf("%s: a session token reached A's slice in %q", what, v)
			}
		}
	}
}

// TestIsolationRawRequests sends A's requests with tricks in the request
// line, the headers and the framing, over raw connections so that nothing
// is normalised on the way. Each must be refused or reach A's slice only,
// as A.
func TestIsolationRawRequests(t *testing.T) {
	ie := newIsolationEnv(t)
	re := &routingEnv{e: ie.e}
	host := ie.e.host
	bID := strconv.FormatInt(ie.b.id, 10)
	cookieA := "Cookie: " + slicehub.SessionCookie + "=" + ie.tokA + "\r\n"
	inner := "GET /api/inner HTTP/1.1\r\nHost: x\r\nX-Slicehub-User-Id: " + bID + "\r\n\r\n"
	req := func(target, headers string) string {
		return "GET " + target + " HTTP/1.1\r\nHost: " + host + "\r\n" + headers + "\r\n"
	}
	tricks := []struct {
		name string
		raw  string
		// reachA: the request must reach A's slice (false: it may be refused).
		reachA bool
	}{
		{"plain", req("/api/x", cookieA), true},
		{"dot-dot", req("/api/../../slices/302/api/x", cookieA), false},
		{"encoded dot-dot", req("/api/%2e%2e/%2E%2E/302/x", cookieA), true},
		{"encoded slash", req("/api%2F..%2F302%2Fapi/x", cookieA), false},
		{"double slash", req("//api//x", cookieA), false},
		{"matrix params", req("/api;slice=302/x;user="+bID, cookieA), false},
		{"absolute-form to B's slice", req("http://"+ie.sb.addr()+"/api/x", cookieA), true},
		{"absolute-form to another host", req("http://other.example/api/x", cookieA), true},
		{"Host of B's slice", "GET /api/x HTTP/1.1\r\nHost: " + ie.sb.addr() + "\r\n" + cookieA + "\r\n", true},
		{"two Hosts", "GET /api/x HTTP/1.1\r\nHost: " + host + "\r\nHost: " + ie.sb.addr() + "\r\n" + cookieA + "\r\n", false},
		{"X-Slicehub-* in every spelling", req("/api/x", cookieA+
			"X-Slicehub-User-Id: "+bID+"\r\nx-slicehub-user-id: "+bID+"\r\nX_Slicehub_User_Id: "+bID+"\r\n"+
			"X-SLICEHUB-GATEWAY-TOKEN: "+ie.e.slices.tokenOf(ie.sb.id)+"\r\nx_slicehub_gateway_token: x\r\n"+
			"X-Slicehub-Slice-Id: 302\r\nX-sLiCeHuB-uSeR-iD: "+bID+"\r\n"), true},
		{"X-Slicehub-* named in Connection", req("/api/x", cookieA+"Connection: X-Slicehub-User-Id\r\nX-Slicehub-User-Id: "+bID+"\r\n"), true},
		{"X-Forwarded-* spoofing", req("/api/x", cookieA+"X-Forwarded-Host: "+ie.sb.addr()+"\r\nX-Forwarded-For: 10.0.0.2\r\n"+
			"X-Forwarded-Proto: https\r\nForwarded: for=10.0.0.2;host="+ie.sb.addr()+"\r\nX-Original-URL: /api/slices/302\r\nX-Rewrite-URL: /x\r\n"), true},
		{"garbage session first", req("/api/x", "Cookie: "+slicehub.SessionCookie+"=garbage; "+slicehub.SessionCookie+"="+ie.tokA+"\r\n"), false},
		{"session cookie twice", req("/api/x", "Cookie: "+slicehub.SessionCookie+"="+ie.tokA+"\r\nCookie: "+slicehub.SessionCookie+"="+ie.tokA+"; theme=x\r\n"), true},
		// Regression: the CSRF cookie used to reach the slice (gateway/proxy).
		{"CSRF cookie", req("/api/x", "Cookie: "+slicehub.SessionCookie+"="+ie.tokA+"; "+slicehub.CSRFCookie+"=csrf-secret\r\n"), true},
		// Regression: fasthttp keeps these as nameless cookies and writes
		// them back as "slicehub_session=planted", which the slice read as
		// the gateway's cookie (proxy.IsGatewayCookie).
		{"nameless cookies", req("/api/x", cookieA+"Cookie: =slicehub_session=planted; slicehub_csrf; =slicehub_csrf=x; theme=dark\r\n"), true},
		{"cookie name in upper case", req("/api/x", "Cookie: SLICEHUB_SESSION="+ie.tokA+"\r\n"), false},
		{"cookie in other headers", req("/api/x", "X-Cookie: "+slicehub.SessionCookie+"="+ie.tokA+"\r\nCookie2: "+
			slicehub.SessionCookie+"="+ie.tokA+"\r\nAuthorization: Bearer "+ie.tokA+"\r\n"), false},
		{"CL and TE both", "POST /api/x HTTP/1.1\r\nHost: " + host + "\r\n" + cookieA + "Origin: http://" + host + "\r\n" +
			"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /api/smuggled HTTP/1.1\r\nHost: x\r\nX-Slicehub-User-Id: " + bID + "\r\n\r\n", false},
		{"two Content-Lengths", "POST /api/x HTTP/1.1\r\nHost: " + host + "\r\n" + cookieA + "Origin: http://" + host + "\r\n" +
			"Content-Length: 0\r\nContent-Length: 60\r\n\r\nGET /api/smuggled HTTP/1.1\r\nHost: x\r\nX-Slicehub-User-Id: " + bID + "\r\n\r\n", false},
		{"request in a body", "POST /api/x HTTP/1.1\r\nHost: " + host + "\r\n" + cookieA + "Origin: http://" + host + "\r\n" +
			"Content-Length: " + strconv.Itoa(len(inner)) + "\r\n\r\n" + inner, true},
		{"X-Slicehub-* in a chunked trailer", "POST /api/x HTTP/1.1\r\nHost: " + host + "\r\n" + cookieA + "Origin: http://" + host + "\r\n" +
			"Transfer-Encoding: chunked\r\nTrailer: X-Slicehub-User-Id, X-Slicehub-Gateway-Token\r\n\r\n3\r\nabc\r\n0\r\n" +
			"X-Slicehub-User-Id: " + bID + "\r\nX-Slicehub-Gateway-Token: forged\r\n\r\n", false},
		{"obs-fold TE", "POST /api/x HTTP/1.1\r\nHost: " + host + "\r\n" + cookieA + "Origin: http://" + host + "\r\n" +
			"Transfer-Encoding:\r\n chunked\r\nContent-Length: 3\r\n\r\nabc", false},
		{"HTTP/1.0 with keep-alive", "GET /api/x HTTP/1.0\r\nHost: " + host + "\r\n" + cookieA + "Connection: keep-alive\r\n\r\n", true},
		// Regression: a reserved header name longer than stripRequest's
		// buffer made it loop for ever (proxy.KeySet's long).
		{"reserved header name of 600 bytes", req("/api/x", cookieA+"X-Slicehub-"+strings.Repeat("U", 600)+": "+bID+"\r\n"+
			"Connection: X-"+strings.Repeat("H", 600)+"\r\nX-"+strings.Repeat("H", 600)+": hop\r\n"), true},
		{"request line injection", req("/api/x HTTP/1.1\r\nX-Slicehub-User-Id: "+bID+"\r\nX:", cookieA), false},
	}
	// Where a refusal is the only right answer.
	wantStatus := map[string]int{
		"garbage session first":     http.StatusUnauthorized, // the first session cookie is the one
		"cookie name in upper case": http.StatusUnauthorized,
		"cookie in other headers":   http.StatusUnauthorized,
		"two Content-Lengths":       http.StatusBadRequest,
		"obs-fold TE":               http.StatusBadRequest,
	}
	for _, tc := range tricks {
		t.Run(tc.name, func(t *testing.T) {
			before := len(ie.sa.requests())
			resps := re.exchange(t, tc.raw)
			ie.assertOnlyA(t, tc.name, before)
			if len(resps) == 0 {
				t.Fatalf("no answer at all")
			}
			for _, resp := range resps {
				if resp.StatusCode >= 500 {
					t.Fatalf("status %d", resp.StatusCode)
				}
			}
			t.Logf("statuses: %v", statuses(resps))
			if want, ok := wantStatus[tc.name]; ok && resps[0].StatusCode != want {
				t.Fatalf("status %d, want %d", resps[0].StatusCode, want)
			}
			// What follows a chunked body is read by the gateway as a request
			// of its own, and checked as one: without a cookie it is refused.
			for _, resp := range resps[1:] {
				if resp.StatusCode != http.StatusUnauthorized {
					t.Fatalf("a request read after the first got %d, want 401", resp.StatusCode)
				}
			}
			if reached := len(ie.sa.requests()) > before; tc.reachA && !reached {
				t.Fatalf("did not reach A's slice: status %d", resps[0].StatusCode)
			}
			// The smuggled request inside a body must arrive as a body: as a
			// request of its own it would have been sent without a session.
			for _, r := range ie.sa.requests()[before:] {
				if strings.Contains(r.RequestURI, "smuggled") || strings.Contains(r.RequestURI, "inner") {
					t.Fatalf("a request smuggled in a body reached the slice as %s %s", r.Method, r.RequestURI)
				}
			}
		})
	}
	// B is still served, by its own slice, after all that.
	r := ie.e.do(ie.b.client, "GET", "/api/x", "", nil)
	var got echo
	r.decode(t, &got)
	if got.Slice != ie.sb.id || got.Headers[slicehub.HeaderUserID][0] != bID {
		t.Fatalf("B reached slice %d as %v", got.Slice, got.Headers[slicehub.HeaderUserID])
	}
}

// TestIsolationFollowsTheSession checks the other half of routing: the
// session alone decides, at once. After B's slice is reassigned to A (a
// slice is released and claimed again), A's requests go to it and B's are
// refused; after a logout the old token opens nothing.
func TestIsolationFollowsTheSession(t *testing.T) {
	ie := newIsolationEnv(t)
	e := ie.e
	get := func(tok string) *result {
		return e.do(nil, "GET", "/api/x", "", map[string]string{"Cookie": slicehub.SessionCookie + "=" + tok})
	}
	// B loses its slice; A is moved onto it.
	e.slices.set(ie.b.id, slicehub.Slice{})
	e.slices.set(ie.a.id, slicehub.Slice{ID: ie.sb.id, State: slicehub.StateAssigned, UserID: ie.a.id})
	e.srv.InvalidateSlice(ie.sb.id)
	e.srv.Invalidate(ie.a.id)
	e.srv.Invalidate(ie.b.id)
	var got echo
	r := get(ie.tokA)
	r.decode(t, &got)
	if got.Slice != ie.sb.id || got.Headers[slicehub.HeaderUserID][0] != strconv.FormatInt(ie.a.id, 10) {
		t.Fatalf("after the move A reached slice %d as %v", got.Slice, got.Headers[slicehub.HeaderUserID])
	}
	if r := get(ie.tokB); r.status < 400 {
		t.Fatalf("B, without a slice, got %d %s", r.status, r.body)
	}

	// Logout ends the token at once, on this replica, cache or not.
	if r := e.do(ie.a.client, "POST", "/auth/logout", "", nil); r.status != http.StatusNoContent {
		t.Fatalf("logout: %d", r.status)
	}
	if r := get(ie.tokA); r.status != http.StatusUnauthorized {
		t.Fatalf("the logged-out token got %d %s", r.status, r.body)
	}
}

// TestIsolationSessionFixation plants a session token in the victim's
// browser (the attacker's own valid one, and a made-up one) before the
// victim logs in. The login must issue a fresh token, and the planted one
// must keep opening only the attacker's slice.
func TestIsolationSessionFixation(t *testing.T) {
	ie := newIsolationEnv(t)
	e := ie.e
	for _, planted := range []string{ie.tokA, strings.Repeat("A", accounts.TokenLen)} {
		victim := newBrowser()
		victim.Jar.SetCookies(mustURL(e.url), []*http.Cookie{{Name: slicehub.SessionCookie, Value: planted, Path: "/"}})
		r := e.do(victim, "POST", "/auth/login", `{"email":"bob@example.com","password":"correct horse battery"}`,
			map[string]string{"Content-Type": "application/json"})
		if r.status != http.StatusOK {
			t.Fatalf("login: %d %s", r.status, r.body)
		}
		var fresh string
		for _, c := range victim.Jar.Cookies(mustURL(e.url)) {
			if c.Name == slicehub.SessionCookie {
				fresh = c.Value
			}
		}
		if fresh == "" || fresh == planted {
			t.Fatalf("login kept the planted token %q (got %q)", planted, fresh)
		}
		var got echo
		e.do(victim, "GET", "/api/x", "", nil).decode(t, &got)
		if got.Slice != ie.sb.id {
			t.Fatalf("the victim reached slice %d", got.Slice)
		}
		// A login ends the session the browser held before ("one cookie, one
		// session"), so the attacker's planted token is now worth nothing,
		// to the attacker too: never the victim's.
		r = e.do(nil, "GET", "/api/x", "", map[string]string{"Cookie": slicehub.SessionCookie + "=" + planted})
		if r.status != http.StatusUnauthorized {
			t.Fatalf("the planted token after the victim's login: %d %s", r.status, r.body)
		}
	}
}

// TestIsolationWebSocket checks WebSockets: a handshake with forged
// identity headers reaches the caller's own slice as the caller; a socket
// ends when its session ends or its slice is reassigned, and the old token
// cannot open a new one.
func TestIsolationWebSocket(t *testing.T) {
	e := newEnv(t)
	a, b := e.signup("wanda@example.com"), e.signup("walt@example.com")
	fa, fb := newFakeSlice(t, 501), newFakeSlice(t, 502)
	e.withSlice(a, fa)
	e.withSlice(b, fb)
	tokA := e.sessionToken(a)
	bID := strconv.FormatInt(b.id, 10)

	hdr := http.Header{}
	hdr.Set(slicehub.HeaderUserID, bID)
	hdr["X_slicehub_user_id"] = []string{bID}
	hdr.Set(slicehub.HeaderGatewayToken, e.slices.tokenOf(fb.id))
	hdr.Set("X-Forwarded-Host", fb.addr())
	// A's cookie with the CSRF cookie, then a forged session in a second
	// Cookie line: neither cookie of the gateway may reach the slice.
	hdr["Cookie"] = []string{slicehub.SessionCookie + "=" + tokA + "; " + slicehub.CSRFCookie + "=csrf-secret",
		slicehub.SessionCookie + "=garbage"}
	hdr.Set("Origin", "http://"+e.host)
	c, _, err := (&websocket.Dialer{HandshakeTimeout: 5 * time.Second}).Dial(
		"ws://"+e.host+"/socket.io/?EIO=4&transport=websocket&user="+bID, hdr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var seen http.Header
	select {
	case seen = <-fa.wsHeaders:
	case seen = <-fb.wsHeaders:
		t.Fatalf("A's WebSocket reached B's slice")
	case <-time.After(5 * time.Second):
		t.Fatal("the handshake never reached a slice")
	}
	for k, v := range seen {
		if proxy.IsReservedHeader([]byte(k)) && k != slicehub.HeaderUserID && k != slicehub.HeaderGatewayToken {
			t.Fatalf("the slice saw the client's %s: %v", k, v)
		}
	}
	if got := seen[slicehub.HeaderUserID]; len(got) != 1 || got[0] != strconv.FormatInt(a.id, 10) {
		t.Fatalf("the slice saw user %v", got)
	}
	if got := seen[slicehub.HeaderGatewayToken]; len(got) != 1 || got[0] != e.slices.tokenOf(fa.id) {
		t.Fatalf("the slice saw token %v", got)
	}
	if ck := strings.Join(seen["Cookie"], ";"); strings.Contains(ck, tokA) || strings.Contains(ck, "garbage") ||
		strings.Contains(ck, "csrf-secret") {
		t.Fatalf("a gateway cookie reached the slice: %v", seen["Cookie"])
	}

	// A's slice is reassigned to B: A's socket ends, and B's new socket to
	// that slice is B's. Nothing A opened carries on as B.
	e.slices.set(a.id, slicehub.Slice{})
	e.slices.set(b.id, slicehub.Slice{ID: fa.id, State: slicehub.StateAssigned, UserID: b.id})
	e.srv.InvalidateSlice(fa.id)
	e.srv.Invalidate(a.id)
	e.srv.Invalidate(b.id)
	if code, _ := closeCodeOf(t, c); code != websocket.CloseServiceRestart {
		t.Fatalf("A's socket after reassignment: close %d, want 1012", code)
	}
	if _, resp, err := e.dialWS(a, "/socket.io/", nil); err == nil || resp == nil || resp.StatusCode < 400 {
		t.Fatalf("A, without a slice, opened a socket: %v %v", resp, err)
	}
	cb, _, err := e.dialWS(b, "/socket.io/", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cb.Close()
	select {
	case h := <-fa.wsHeaders:
		if got := h[slicehub.HeaderUserID]; len(got) != 1 || got[0] != bID {
			t.Fatalf("B's socket reached the slice as %v", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("B's handshake never reached the slice")
	}

	// B logs out: the socket ends with 1008 and the token opens no new one.
	tokB := e.sessionToken(b)
	if r := e.do(b.client, "POST", "/auth/logout", "", nil); r.status != http.StatusNoContent {
		t.Fatalf("logout: %d", r.status)
	}
	if code, _ := closeCodeOf(t, cb); code != websocket.ClosePolicyViolation {
		t.Fatalf("B's socket after logout: close %d, want 1008", code)
	}
	h := http.Header{"Cookie": {slicehub.SessionCookie + "=" + tokB}, "Origin": {"http://" + e.host}}
	if _, resp, err := (&websocket.Dialer{HandshakeTimeout: 5 * time.Second}).Dial("ws://"+e.host+"/socket.io/", h); err == nil ||
		resp == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("the logged-out token opened a socket: %v %v", resp, err)
	}
}

// TestStripRequestTerminates is the unit regression for the loop above:
// stripRequest must finish, and remove every reserved header, whatever the
// number and length of the names.
func TestStripRequestTerminates(t *testing.T) {
	for name, hdrs := range map[string]string{
		"one long name":         "X-Slicehub-" + strings.Repeat("A", 600) + ": 1\r\n",
		"long names and short":  strings.Repeat("X-Slicehub-B: 1\r\n", 20) + "X_Slicehub_" + strings.Repeat("C", 2000) + ": 1\r\n",
		"many distinct names":   strings.Repeat("X-Slicehub-D"+strings.Repeat("d", 40)+": 1\r\n", 1) + manyReserved(40),
		"long Connection token": "Connection: X-" + strings.Repeat("E", 700) + "\r\nX-" + strings.Repeat("E", 700) + ": 1\r\n",
	} {
		t.Run(name, func(t *testing.T) {
			ctx, ok := parseRawRequest("GET /api/x HTTP/1.1\r\nHost: h\r\n" + hdrs + "\r\n")
			if !ok {
				t.Fatal("fasthttp refused the request")
			}
			done := make(chan struct{})
			go func() { proxy.StripRequest(&ctx.Request.Header); close(done) }()
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				t.Fatal("stripRequest does not terminate")
			}
			ctx.Request.Header.VisitAll(func(k, _ []byte) {
				if proxy.IsDroppedRequestHeader(k) {
					t.Errorf("%.40s... survived", k)
				}
			})
		})
	}
}

func manyReserved(n int) string {
	var b strings.Builder
	for i := 0; i < n; i++ {
		b.WriteString("X-Slicehub-" + strconv.Itoa(i) + strings.Repeat("x", 30) + ": 1\r\n")
	}
	return b.String()
}

func statuses(rs []*http.Response) []int {
	var out []int
	for _, r := range rs {
		out = append(out, r.StatusCode)
	}
	return out
}
