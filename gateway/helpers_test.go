package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alexedwards/argon2id"
	"github.com/fasthttp/websocket"

	"github.com/slicehub/slicehub"
	"github.com/slicehub/slicehub/gateway/accounts"
)

// testEnv is a gateway on a loopback port with in-memory dependencies.
type testEnv struct {
	t    testing.TB
	srv  *Server
	url  string
	host string // 127.0.0.1:port
	// internalURL is the internal listener's base URL.
	internalURL string
	clock       *fakeClock
	accounts    *fakeAccounts
	slices      *fakeSlices
	routes      *fakeRoutes
}

// cheapArgon2 keeps tests fast; the production parameters are tested once.
var cheapArgon2 = &argon2id.Params{Memory: 64, Iterations: 1, Parallelism: 1, SaltLength: 16, KeyLength: 32}

func testLogger() *slog.Logger {
	if os.Getenv("GATEWAY_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func newEnv(t testing.TB, opts ...func(*Config, *Deps)) *testEnv {
	t.Helper()
	return newEnvSetup(t, nil, opts...)
}

// newEnvSetup runs setup on the Server before it serves: Fiber builds its
// route tree when serving starts, so routes must be added before.
func newEnvSetup(t testing.TB, setup func(*Server), opts ...func(*Config, *Deps)) *testEnv {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return newEnvOn(t, ln, setup, opts...)
}

// newEnvOn is newEnvSetup with the public listener ln.
func newEnvOn(t testing.TB, ln net.Listener, setup func(*Server), opts ...func(*Config, *Deps)) *testEnv {
	t.Helper()
	clock := newFakeClock()
	e := &testEnv{t: t, clock: clock, accounts: newFakeAccounts(clock.Now), slices: newFakeSlices(), routes: newFakeRoutes()}
	cfg := Config{
		Argon2:       cheapArgon2,
		Logger:       testLogger(),
		Now:          clock.Now,
		ProxyTimeout: 5 * time.Second,
		DialTimeout:  time.Second,
	}
	deps := Deps{Accounts: e.accounts, Slices: e.slices, Routes: e.routes}
	for _, o := range opts {
		o(&cfg, &deps)
	}
	e.srv = New(cfg, deps)
	if setup != nil {
		setup(e.srv)
	}
	iln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{}, 2)
	go func() {
		defer func() { served <- struct{}{} }()
		_ = e.srv.Serve(ln)
	}()
	go func() {
		defer func() { served <- struct{}{} }()
		_ = e.srv.ServeInternal(iln)
	}()
	e.host = ln.Addr().String()
	e.url = "http://" + e.host
	e.internalURL = "http://" + iln.Addr().String()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := e.srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		<-served
		<-served
	})
	return e
}

// testUser is a browser: an HTTP client with its own cookie jar.
type testUser struct {
	id     int64
	email  string
	client *http.Client
}

func newBrowser() *http.Client {
	jar, _ := cookiejar.New(nil)
	return &http.Client{Jar: jar, Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// signup creates an account through the API and returns its browser.
func (e *testEnv) signup(email string) *testUser {
	e.t.Helper()
	u := &testUser{email: email, client: newBrowser()}
	r := e.do(u.client, "POST", "/auth/signup", fmt.Sprintf(`{"email":%q,"password":"correct horse battery"}`, email),
		map[string]string{"Content-Type": "application/json"})
	if r.status != http.StatusCreated {
		e.t.Fatalf("signup %s: status %d, body %s", email, r.status, r.body)
	}
	var a accounts.Account
	r.decode(e.t, &a)
	u.id = a.User.ID
	return u
}

// sessionToken is the raw session cookie the browser holds.
func (e *testEnv) sessionToken(u *testUser) string {
	e.t.Helper()
	for _, c := range u.client.Jar.Cookies(mustURL(e.url)) {
		if c.Name == slicehub.SessionCookie {
			return c.Value
		}
	}
	e.t.Fatalf("%s has no session cookie", u.email)
	return ""
}

type result struct {
	status int
	header http.Header
	body   []byte
}

func (r *result) decode(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("decoding %q: %v", r.body, err)
	}
}

// errorCode checks that the body is the error shape and returns its code.
func (r *result) errorCode(t testing.TB) string {
	t.Helper()
	var m map[string]any
	r.decode(t, &m)
	if len(m) != 2 || m["error"] == nil || m["code"] == nil {
		t.Fatalf("error body %s is not {\"error\",\"code\"}", r.body)
	}
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Fatalf("error Content-Type %q", ct)
	}
	return m["code"].(string)
}

func (e *testEnv) do(c *http.Client, method, path, body string, hdr map[string]string) *result {
	e.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, e.url+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	for k, v := range hdr {
		if k == "Host" {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	if c == nil {
		c = newBrowser()
	}
	resp, err := c.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatalf("%s %s: reading body: %v", method, path, err)
	}
	return &result{status: resp.StatusCode, header: resp.Header, body: b}
}

func mustURL(s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		panic(err)
	}
	return u
}

// fakeSlice is a slice backend that reports what reached it.
type fakeSlice struct {
	id  int64
	srv *httptest.Server

	sseNext   chan struct{}    // each receive lets /api/sse send one more event
	wsHeaders chan http.Header // handshake headers of each WebSocket
	wsClosed  chan int         // close code each WebSocket received from the gateway
	slowDone  chan struct{}    // closed by the test to release /api/slow
	conns     atomic.Int64     // TCP connections the gateway opened to it
	slowIn    atomic.Int64     // requests to /api/slow that have arrived
}

// echo is what the fake slice answers for any plain request.
type echo struct {
	Slice   int64               `json:"slice"`
	Method  string              `json:"method"`
	URI     string              `json:"uri"`
	Proto   string              `json:"proto"`
	Host    string              `json:"host"`
	Headers map[string][]string `json:"headers"`
	Cookies map[string]string   `json:"cookies"`
	Body    string              `json:"body"`
}

func newFakeSlice(t testing.TB, id int64) *fakeSlice {
	fs := &fakeSlice{id: id, sseNext: make(chan struct{}), wsHeaders: make(chan http.Header, 16),
		wsClosed: make(chan int, 16), slowDone: make(chan struct{})}
	// A bare handler, not a ServeMux: a mux would clean the path, and the
	// tests check the path arrives exactly as sent.
	fs.srv = httptest.NewUnstartedServer(http.HandlerFunc(fs.serve))
	fs.srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			fs.conns.Add(1)
		}
	}
	fs.srv.Start()
	t.Cleanup(func() {
		select {
		case <-fs.slowDone:
		default:
			close(fs.slowDone)
		}
		fs.srv.CloseClientConnections()
		fs.srv.Close()
	})
	return fs
}

func (fs *fakeSlice) addr() string { return strings.TrimPrefix(fs.srv.URL, "http://") }

func (fs *fakeSlice) serve(w http.ResponseWriter, r *http.Request) {
	path := r.URL.Path
	switch {
	case path == "/socket.io/refuse": // as socket.io answers an unknown sid
		w.Header().Set("Content-Type", "application/json")
		w.Header().Add("Set-Cookie", "io_sid=x; Path=/")
		w.WriteHeader(http.StatusBadRequest)
		w.Write([]byte(`{"code":1,"message":"Session ID unknown"}`))
	case websocket.IsWebSocketUpgrade(r):
		fs.serveWebSocket(w, r)
	case path == "/api/sse":
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		for i := 1; i <= 3; i++ {
			select {
			case <-fs.sseNext:
			case <-r.Context().Done():
				return
			}
			fmt.Fprintf(w, "data: event %d\n\n", i)
			w.(http.Flusher).Flush()
		}
	case path == "/api/slow":
		fs.slowIn.Add(1)
		select {
		case <-fs.slowDone:
		case <-r.Context().Done():
		}
	case path == "/api/page": // what a hostile slice would answer an admin's navigation with
		w.Header().Set("Content-Type", "text/html")
		w.Header().Set("Content-Security-Policy", "script-src * 'unsafe-inline'")
		w.Header().Add("Content-Security-Policy", "img-src *")
		w.Header().Set("X-Content-Type-Options", "sniff-away")
		w.Header().Add("X-Content-Type-Options", "sniff-more")
		w.Write([]byte(`<title>slice page</title><script>document.title = "ran";
fetch("/auth/me").then(r => r.text()).then(t => navigator.sendBeacon("/api/leak", t))</script><p id="p">hello</p>`))
	case path == "/api/until-close": // an answer with no length, ended by closing
		conn, bw, err := w.(http.Hijacker).Hijack()
		if err != nil {
			return
		}
		bw.WriteString("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it, then the end")
		bw.Flush()
		conn.Close()
	case path == "/api/bytes": // ?n= bytes of /api/big's pattern
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Write(pattern(n))
	case path == "/api/big":
		w.Header().Set("Content-Type", "application/octet-stream")
		b := make([]byte, 3<<20)
		for i := range b {
			b[i] = byte(i % 251)
		}
		w.Write(b)
	case path == "/api/set-cookies":
		http.SetCookie(w, &http.Cookie{Name: slicehub.SessionCookie, Value: "planted", Path: "/"})
		http.SetCookie(w, &http.Cookie{Name: "crm_pref", Value: "dark", Path: "/"})
		// A nameless cookie, which browsers store as slicehub_session=planted.
		w.Header().Add("Set-Cookie", "=slicehub_session=planted; Path=/api")
		w.Header().Add("Set-Cookie", "slicehub_session")
		w.Header().Set("Set-Cookie2", "slicehub_session=planted")
		w.Header().Set("Clear-Site-Data", `"cookies", "storage"`)
		w.Header().Set("Service-Worker-Allowed", "/")
		w.Header().Set("Strict-Transport-Security", "max-age=0")
		w.Header().Set("Keep-Alive", "timeout=5")
		w.Header().Set("X-Hop", "x")
		w.Header().Set("Connection", "X-Hop")
		w.WriteHeader(http.StatusOK)
	default:
		body, _ := io.ReadAll(r.Body)
		cookies := map[string]string{}
		for _, c := range r.Cookies() {
			cookies[c.Name] = c.Value
		}
		hdr := map[string][]string{}
		for k, v := range r.Header {
			hdr[k] = v
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(echo{Slice: fs.id, Method: r.Method, URI: r.RequestURI, Proto: r.Proto,
			Host: r.Host, Headers: hdr, Cookies: cookies, Body: string(body)})
	}
}

func (fs *fakeSlice) serveWebSocket(w http.ResponseWriter, r *http.Request) {
	up := websocket.Upgrader{Subprotocols: []string{"chat"}, CheckOrigin: func(*http.Request) bool { return true }}
	conn, err := up.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	defer conn.Close()
	fs.wsHeaders <- r.Header.Clone()
	switch r.URL.Path {
	case "/socket.io/close4001":
		conn.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(4001, "bye"))
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		for {
			if _, _, err := conn.ReadMessage(); err != nil {
				return
			}
		}
	case "/socket.io/drop":
		conn.UnderlyingConn().Close() // vanish without a close frame
		return
	}
	conn.SetCloseHandler(func(code int, text string) error {
		fs.wsClosed <- code
		return conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, text), time.Now().Add(time.Second))
	})
	for {
		mt, msg, err := conn.ReadMessage()
		if err != nil {
			var ce *websocket.CloseError
			if !errors.As(err, &ce) {
				fs.wsClosed <- -1
			}
			return
		}
		if err := conn.WriteMessage(mt, msg); err != nil {
			return
		}
	}
}

// pattern is n bytes of the fake slice's binary answers.
func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i % 251)
	}
	return b
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond) // polling interval, not synchronisation
	}
}

// withSlice gives user u an assigned slice served by fs, routed.
func (e *testEnv) withSlice(u *testUser, fs *fakeSlice) {
	e.slices.set(u.id, slicehub.Slice{ID: fs.id, State: slicehub.StateAssigned, UserID: u.id})
	e.routes.set(fs.id, fs.addr())
	e.srv.Invalidate(u.id)
}
