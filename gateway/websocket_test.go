package gateway

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fasthttp/websocket"

	"github.com/slicehub/slicehub"
	"github.com/slicehub/slicehub/gateway/proxy"
)

// dialWS opens a WebSocket through the gateway as u's browser would.
func (e *testEnv) dialWS(u *testUser, path string, hdr http.Header, protocols ...string) (*websocket.Conn, *http.Response, error) {
	e.t.Helper()
	if hdr == nil {
		hdr = http.Header{}
	}
	if u != nil {
		hdr.Set("Cookie", slicehub.SessionCookie+"="+e.sessionToken(u)+"; theme=dark")
	}
	if hdr.Get("Origin") == "" {
		hdr.Set("Origin", "http://"+e.host)
	}
	d := websocket.Dialer{Subprotocols: protocols, HandshakeTimeout: 5 * time.Second}
	return d.Dial("ws://"+e.host+path, hdr)
}

func wsEnv(t *testing.T, opts ...func(*Config, *Deps)) (*testEnv, *testUser, *fakeSlice) {
	e := newEnv(t, opts...)
	u := e.signup("wes@example.com")
	fs := newFakeSlice(t, 40)
	e.withSlice(u, fs)
	return e, u, fs
}

func closeCodeOf(t *testing.T, c *websocket.Conn) (int, string) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		_, _, err := c.ReadMessage()
		if err == nil {
			continue
		}
		var ce *websocket.CloseError
		if !errors.As(err, &ce) {
			t.Fatalf("read ended with %v, want a close frame", err)
		}
		return ce.Code, ce.Text
	}
}

func TestWebSocketEchoWithSubprotocol(t *testing.T) {
	e, u, fs := wsEnv(t)
	hdr := http.Header{slicehub.HeaderUserID: {"999"}, "X-Slicehub-Gateway-Token": {"forged"}}
	c, resp, err := e.dialWS(u, "/socket.io/?EIO=4&transport=websocket", hdr, "superchat", "chat")
	if err != nil {
		t.Fatalf("dial: %v (response %v)", err, resp)
	}
	defer c.Close()
	if c.Subprotocol() != "chat" {
		t.Fatalf("subprotocol %q, want the slice's choice %q", c.Subprotocol(), "chat")
	}

	got := <-fs.wsHeaders
	checks := []struct {
		what string
		ok   bool
	}{
		{"user id is the session's", got.Get(slicehub.HeaderUserID) == strconv.FormatInt(u.id, 10) && len(got[slicehub.HeaderUserID]) == 1},
		{"token is the slice's", got.Get(slicehub.HeaderGatewayToken) == e.slices.tokenOf(40) && len(got[slicehub.HeaderGatewayToken]) == 1},
		{"no session cookie", !strings.Contains(got.Get("Cookie"), slicehub.SessionCookie)},
		{"other cookies kept", strings.Contains(got.Get("Cookie"), "theme=dark")},
		{"the dialer's own handshake", got.Get("Sec-Websocket-Key") != "" && got.Get("Sec-Websocket-Protocol") == "superchat, chat"},
		{"forwarded for", got.Get("X-Forwarded-For") == "127.0.0.1"},
		{"origin kept", got.Get("Origin") == "http://"+e.host},
	}
	for _, ch := range checks {
		if !ch.ok {
			t.Errorf("%s: slice saw %v", ch.what, got)
		}
	}

	for _, m := range []struct {
		typ  int
		data string
	}{{websocket.TextMessage, "40"}, {websocket.BinaryMessage, "\x00\x01\x02"}, {websocket.TextMessage, strings.Repeat("x", 100_000)}} {
		if err := c.WriteMessage(m.typ, []byte(m.data)); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		typ, data, err := c.ReadMessage()
		if err != nil || typ != m.typ || string(data) != m.data {
			t.Fatalf("echo of %d bytes: type %d, %d bytes, %v", len(m.data), typ, len(data), err)
		}
	}
	if n := e.srv.tunnels.matching(func(*tunnel) bool { return true }); len(n) != 1 {
		t.Fatalf("%d tunnels registered, want 1", len(n))
	}

	// The browser closes with its own code; the slice sees it, and the
	// slice's answer comes back.
	c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(4002, "done"), time.Now().Add(time.Second))
	if code := <-fs.wsClosed; code != 4002 {
		t.Fatalf("slice got close code %d, want 4002", code)
	}
	if code, _ := closeCodeOf(t, c); code != 4002 {
		t.Fatalf("browser got close code %d back, want 4002", code)
	}
	eventually(t, "the tunnel to end", func() bool {
		return len(e.srv.tunnels.matching(func(*tunnel) bool { return true })) == 0
	})
}

func TestWebSocketCloseCodes(t *testing.T) {
	e, u, _ := wsEnv(t)
	// The slice's code and reason reach the browser.
	c, _, err := e.dialWS(u, "/socket.io/close4001", nil)
	if err != nil {
		t.Fatal(err)
	}
	if code, text := closeCodeOf(t, c); code != 4001 || text != "bye" {
		t.Fatalf("got %d %q, want 4001 bye", code, text)
	}
	c.Close()

	// A slice that vanishes without a close frame is reported as 1001,
	// never 1006.
	c, _, err = e.dialWS(u, "/socket.io/drop", nil)
	if err != nil {
		t.Fatal(err)
	}
	if code, _ := closeCodeOf(t, c); code != websocket.CloseGoingAway {
		t.Fatalf("got %d, want 1001", code)
	}
	c.Close()
}

func TestWebSocketBrowserVanishes(t *testing.T) {
	e, u, fs := wsEnv(t)
	c, _, err := e.dialWS(u, "/socket.io/", nil)
	if err != nil {
		t.Fatal(err)
	}
	<-fs.wsHeaders
	c.UnderlyingConn().Close()
	if code := <-fs.wsClosed; code != websocket.CloseGoingAway {
		t.Fatalf("slice got %d, want 1001", code)
	}
}

func TestWebSocketReadLimit(t *testing.T) {
	e, u, fs := wsEnv(t, func(c *Config, _ *Deps) { c.WSReadLimit = 1024 })
	c, _, err := e.dialWS(u, "/socket.io/", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	<-fs.wsHeaders
	c.WriteMessage(websocket.TextMessage, make([]byte, 2048))
	if code, _ := closeCodeOf(t, c); code != websocket.CloseMessageTooBig {
		t.Fatalf("browser got %d, want 1009", code)
	}
	if code := <-fs.wsClosed; code != websocket.CloseGoingAway {
		t.Fatalf("slice got %d, want 1001", code)
	}
}

func TestWebSocketRefusals(t *testing.T) {
	e, u, fs := wsEnv(t)
	_, resp, err := e.dialWS(u, "/socket.io/", http.Header{"Origin": {"https://evil.example"}})
	if err == nil || resp == nil || resp.StatusCode != 403 {
		t.Fatalf("foreign origin: err %v, response %v; want 403", err, resp)
	}
	_, resp, err = e.dialWS(nil, "/socket.io/", nil)
	if err == nil || resp == nil || resp.StatusCode != 401 {
		t.Fatalf("no session: err %v, response %v; want 401", err, resp)
	}
	_, resp, err = e.dialWS(u, "/socket.io/refuse", nil)
	if err == nil || resp == nil || resp.StatusCode != 400 {
		t.Fatalf("slice refuses: err %v, response %v; want its 400 relayed", err, resp)
	}
	if body, _ := io.ReadAll(resp.Body); !strings.Contains(string(body), "Session ID unknown") {
		t.Fatalf("relayed body %q, want the slice's", body)
	}
	// The slice's words on the platform origin: confined like any slice answer.
	if resp.Header.Get("Set-Cookie") != "" || resp.Header.Get("Content-Security-Policy") != proxy.SliceAnswerCSP ||
		resp.Header.Get("X-Content-Type-Options") != "nosniff" {
		t.Fatalf("relayed refusal's headers %v; want no cookie, the slice-answer CSP and nosniff", resp.Header)
	}
	e.routes.set(fs.id, "")
	_, resp, err = e.dialWS(u, "/socket.io/", nil)
	if err == nil || resp == nil || resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("no route: err %v, response %v; want 503 with Retry-After", err, resp)
	}
}

func TestWebSocketEndsWhenSliceChanges(t *testing.T) {
	e, u, fs := wsEnv(t)
	c, _, err := e.dialWS(u, "/socket.io/", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	<-fs.wsHeaders

	// A change that keeps the assignment (a restart count, a timestamp)
	// leaves the connection alone.
	e.srv.Invalidate(u.id)
	if err := c.WriteMessage(websocket.TextMessage, []byte("still here")); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, msg, err := c.ReadMessage(); err != nil || string(msg) != "still here" {
		t.Fatalf("after a harmless invalidation: %q %v", msg, err)
	}

	// Suspension ends it with 1012, so the client reconnects and learns why.
	e.slices.set(u.id, slicehub.Slice{ID: fs.id, State: slicehub.StateSuspended, UserID: u.id})
	e.srv.Invalidate(u.id)
	if code, _ := closeCodeOf(t, c); code != websocket.CloseServiceRestart {
		t.Fatalf("got %d, want 1012", code)
	}
}

func TestWebSocketEndsAtLogout(t *testing.T) {
	e, u, fs := wsEnv(t)
	c, _, err := e.dialWS(u, "/socket.io/", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	<-fs.wsHeaders
	if r := e.do(u.client, "POST", "/auth/logout", "", nil); r.status != 204 {
		t.Fatalf("logout %d", r.status)
	}
	if code, _ := closeCodeOf(t, c); code != websocket.ClosePolicyViolation {
		t.Fatalf("got %d, want 1008", code)
	}
}

func TestWebSocketEndsAtShutdown(t *testing.T) {
	e, u, fs := wsEnv(t)
	c, _, err := e.dialWS(u, "/socket.io/", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	<-fs.wsHeaders
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		done <- e.srv.Shutdown(ctx)
	}()
	if code, _ := closeCodeOf(t, c); code != websocket.CloseGoingAway {
		t.Fatalf("browser got %d, want 1001", code)
	}
	if code := <-fs.wsClosed; code != websocket.CloseGoingAway {
		t.Fatalf("slice got %d, want 1001", code)
	}
	if err := <-done; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
}

func TestWebSocketPingKeepsIdleConnectionsAlive(t *testing.T) {
	e, u, fs := wsEnv(t, func(c *Config, _ *Deps) {
		// A pong wait long enough for a loaded two-core CI machine to
		// answer in; the pings still span more than one of them.
		c.WSPingInterval = 50 * time.Millisecond
		c.WSPongWait = time.Second
	})
	c, _, err := e.dialWS(u, "/socket.io/", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	<-fs.wsHeaders
	pings := make(chan struct{}, 100)
	c.SetPingHandler(func(data string) error {
		pings <- struct{}{}
		return c.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(time.Second))
	})
	go func() {
		for {
			if _, _, err := c.NextReader(); err != nil {
				return
			}
		}
	}()
	// Thirty pings span 1.5 pong waits: the connection lives because it
	// answers them, not because it sends data.
	for i := 0; i < 30; i++ {
		select {
		case <-pings:
		case <-time.After(5 * time.Second):
			t.Fatalf("ping %d never came", i)
		}
	}
	if n := len(e.srv.tunnels.matching(func(*tunnel) bool { return true })); n != 1 {
		t.Fatalf("%d tunnels, want the idle one still open", n)
	}
}
