package slice_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/jackc/pgx/v5"

	"github.com/slicehub/slicehub"
	"github.com/slicehub/slicehub/slice"
	"github.com/slicehub/slicehub/testsupport"
)

// bootstrapGateway answers the bootstrap endpoint with fixed credentials and
// counts the claims, as the real gateway would refuse a second one.
type bootstrapGateway struct {
	srv    *httptest.Server
	claims atomic.Int32
}

func newBootstrapGateway(t *testing.T, creds slicehub.SliceCredentials) *bootstrapGateway {
	g := &bootstrapGateway{}
	g.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != slicehub.BootstrapPath {
			http.NotFound(w, r)
			return
		}
		g.claims.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(creds)
	}))
	t.Cleanup(g.srv.Close)
	return g
}

// runningSlice is a slice started by startSlice.
type runningSlice struct {
	base       string // http://127.0.0.1:port
	profileDir string
	slice      *slice.Slice
	stop       func() error // cancels Run and returns its result
}

// startSlice runs a real slice on 127.0.0.1:0 and waits until /api/health
// says ok.
func startSlice(t testing.TB, cfg slice.Config) *runningSlice {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Listener = ln
	cfg.Logger = testLogger(t)
	s, err := slice.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	var once sync.Once
	var runErr error
	stop := func() error {
		once.Do(func() {
			cancel()
			runErr = <-done
		})
		return runErr
	}
	t.Cleanup(func() { _ = stop() })
	rs := &runningSlice{base: "http://" + ln.Addr().String(), profileDir: cfg.ProfileDir, slice: s, stop: stop}
	testsupport.Eventually(t, 30*time.Second, "slice health ok", func() (bool, error) {
		resp, err := http.Get(rs.base + "/api/health")
		if err != nil {
			return false, err
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return false, fmt.Errorf("%d %s", resp.StatusCode, body)
		}
		return true, nil
	})
	return rs
}

// testLogger collects the slice's logs and shows them if the test failed.
// (Not t.Log directly: the slice's goroutines may log after the test ends.)
func testLogger(t testing.TB) *slog.Logger {
	var buf lockedBuffer
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("slice logs:\n%s", buf.String())
		}
	})
	return slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// call makes one authenticated API request and decodes the JSON answer.
func (rs *runningSlice) call(t testing.TB, method, path, body string, out any) int {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, rs.base+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set(slicehub.HeaderGatewayToken, itToken)
	req.Header.Set(slicehub.HeaderUserID, "17")
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			t.Fatalf("%s %s = %d %q: %v", method, path, resp.StatusCode, raw, err)
		}
	}
	return resp.StatusCode
}

const itToken = "it-gateway-token-0123456789"

func TestSliceAgainstPostgres(t *testing.T) {
	dbURL := testsupport.NewDatabase(t)
	gw := newBootstrapGateway(t, slicehub.SliceCredentials{DatabaseURL: dbURL, GatewayToken: itToken})
	cache := filepath.Join(t.TempDir(), "credentials.json")
	cfg := slice.Config{
		SliceID: "42", AllocID: "alloc-it", BootstrapURL: gw.srv.URL, CredentialsFile: cache,
		ProfileDir: filepath.Join(t.TempDir(), "profiles", "42"),
		// The WhatsApp side has its own tests (whatsapp_test.go); here the
		// state must stay where the socket.io tests put it.
		Chromium: slice.ChromiumConfig{Disabled: true},
	}
	rs := startSlice(t, cfg)

	t.Run("crm", func(t *testing.T) {
		var c slice.Contact
		if st := rs.call(t, "POST", "/api/contacts", `{"name":"  Ana Souza ","phone":"+55 (11) 98765-4321"}`, &c); st != 201 {
			t.Fatalf("POST /api/contacts = %d, want 201", st)
		}
		if c.ID <= 0 || c.Name != "Ana Souza" || c.Phone != "+5511987654321" || c.CreatedAt.IsZero() {
			t.Fatalf("created contact %+v, want a trimmed name and a digits-only phone", c)
		}
		var got slice.Contact
		if st := rs.call(t, "GET", fmt.Sprintf("/api/contacts/%d", c.ID), "", &got); st != 200 || got.ID != c.ID || got.Phone != c.Phone {
			t.Fatalf("GET contact = %d %+v, want %+v", st, got, c)
		}
		for i := 0; i < 3; i++ {
			var n slice.Note
			if st := rs.call(t, "POST", fmt.Sprintf("/api/contacts/%d/notes", c.ID), fmt.Sprintf(`{"body":"note %d"}`, i), &n); st != 201 || n.ContactID != c.ID {
				t.Fatalf("POST note = %d %+v", st, n)
			}
		}
		var notes struct{ Notes []slice.Note }
		if st := rs.call(t, "GET", fmt.Sprintf("/api/contacts/%d/notes?limit=2", c.ID), "", &notes); st != 200 || len(notes.Notes) != 2 || notes.Notes[0].Body != "note 0" {
			t.Fatalf("GET notes?limit=2 = %d %+v, want the first two notes", st, notes)
		}
		after := notes.Notes[1].ID
		if st := rs.call(t, "GET", fmt.Sprintf("/api/contacts/%d/notes?after=%d", c.ID, after), "", &notes); st != 200 || len(notes.Notes) != 1 || notes.Notes[0].Body != "note 2" {
			t.Fatalf("GET notes?after = %d %+v, want the third note", st, notes)
		}
		var list struct{ Contacts []slice.Contact }
		if st := rs.call(t, "GET", "/api/contacts", "", &list); st != 200 || len(list.Contacts) == 0 {
			t.Fatalf("GET /api/contacts = %d %+v", st, list)
		}

		var e struct{ Error, Code string }
		for _, c := range []struct{ method, path, body string }{
			{"GET", "/api/contacts/999999", ""},
			{"GET", "/api/contacts/999999/notes", ""},
			{"POST", "/api/contacts/999999/notes", `{"body":"orphan"}`},
		} {
			if st := rs.call(t, c.method, c.path, c.body, &e); st != 404 || e.Code != "contact_not_found" {
				t.Errorf("%s %s = %d %+v, want 404 contact_not_found", c.method, c.path, st, e)
			}
		}
	})

	t.Run("pool stays small", func(t *testing.T) {
		var wg sync.WaitGroup
		for i := 0; i < 30; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var list struct{ Contacts []slice.Contact }
				if st := rs.call(t, "GET", "/api/contacts", "", &list); st != 200 {
					t.Errorf("GET /api/contacts under load = %d", st)
				}
			}()
		}
		wg.Wait()
		conn, err := pgx.Connect(context.Background(), dbURL)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(context.Background())
		var n int
		if err := conn.QueryRow(context.Background(),
			`SELECT count(*) FROM pg_stat_activity WHERE application_name = 'slice-42'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n < 1 || n > slice.MaxPoolConns {
			t.Fatalf("the slice holds %d connections, want 1..%d", n, slice.MaxPoolConns)
		}
	})

	t.Run("socket.io polling", func(t *testing.T) { testPolling(t, rs) })
	t.Run("socket.io websocket", func(t *testing.T) { testWebSocket(t, rs) })

	t.Run("restart in the same allocation", func(t *testing.T) {
		// The load above leaves spare client connections that never carried
		// a request; http.Server.Shutdown alone would wait 5 s for them.
		ts := time.Now()
		err := rs.stop()
		if took := time.Since(ts); took > 4*time.Second {
			t.Errorf("graceful stop took %v, want well under the 5 s that idle new connections cost", took)
		}
		if err != nil {
			t.Fatalf("Run after cancel = %v, want nil (graceful stop)", err)
		}
		if _, err := http.Get(rs.base + "/api/health"); err == nil {
			t.Fatal("the slice still answers after Run returned")
		}
		again := startSlice(t, cfg)
		if n := gw.claims.Load(); n != 1 {
			t.Fatalf("the gateway saw %d claims, want 1: a restart must reuse the cached credentials", n)
		}
		var list struct{ Contacts []slice.Contact }
		if st := again.call(t, "GET", "/api/contacts", "", &list); st != 200 || len(list.Contacts) != 1 {
			t.Fatalf("after restart GET /api/contacts = %d %+v, want the one contact", st, list)
		}
	})
}

// eioPacket splits an Engine.IO v4 polling payload into its packets.
func eioPackets(payload string) []string { return strings.Split(payload, "\x1e") }

// pollClient speaks Engine.IO v4 long-polling, just enough for the tests.
type pollClient struct {
	t      *testing.T
	base   string
	sid    string
	header http.Header
	queue  []string
}

func (c *pollClient) do(method, body string, header http.Header) (int, string) {
	c.t.Helper()
	u := c.base + "/socket.io/?EIO=4&transport=polling"
	if c.sid != "" {
		u += "&sid=" + url.QueryEscape(c.sid)
	}
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, _ := http.NewRequest(method, u, rd)
	req.Header = header.Clone()
	if body != "" {
		req.Header.Set("Content-Type", "text/plain;charset=UTF-8")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(raw)
}

// next returns the next Engine.IO packet, long-polling when none is queued.
// Pings are answered.
func (c *pollClient) next() string {
	c.t.Helper()
	for {
		if len(c.queue) > 0 {
			p := c.queue[0]
			c.queue = c.queue[1:]
			if p == "2" { // ping
				c.send("3")
				continue
			}
			return p
		}
		st, body := c.do("GET", "", c.header)
		if st != 200 {
			c.t.Fatalf("poll = %d %q", st, body)
		}
		c.queue = append(c.queue, eioPackets(body)...)
	}
}

func (c *pollClient) send(packet string) {
	c.t.Helper()
	if st, body := c.do("POST", packet, c.header); st != 200 || body != "ok" {
		c.t.Fatalf("POST %q = %d %q", packet, st, body)
	}
}

func testPolling(t *testing.T, rs *runningSlice) {
	h := http.Header{}
	h.Set(slicehub.HeaderGatewayToken, itToken)
	h.Set(slicehub.HeaderUserID, "17")
	c := &pollClient{t: t, base: rs.base, header: h}

	// Without the token the handshake is refused.
	if st, _ := c.do("GET", "", http.Header{}); st != http.StatusUnauthorized {
		t.Fatalf("handshake without token = %d, want 401", st)
	}

	st, open := c.do("GET", "", h)
	if st != 200 || !strings.HasPrefix(open, "0{") {
		t.Fatalf("handshake = %d %q, want an open packet", st, open)
	}
	var hs struct{ Sid string }
	if err := json.Unmarshal([]byte(open[1:]), &hs); err != nil || hs.Sid == "" {
		t.Fatalf("open packet %q: %v", open, err)
	}
	c.sid = hs.Sid

	// A poll on a valid session id but without the token is refused too:
	// knowing a sid is not enough.
	if st, _ := c.do("GET", "", http.Header{}); st != http.StatusUnauthorized {
		t.Fatalf("poll with sid but no token = %d, want 401", st)
	}

	c.send("40") // connect to namespace "/"
	want := []string{"40{", `42["hello",{"slice_id":"42"}]`, `42["state",{"state":"starting"}]`}
	for _, w := range want {
		if p := c.next(); !strings.HasPrefix(p, w) {
			t.Fatalf("packet %q, want %q", p, w)
		}
	}
	c.send(`421["whoami"]`)
	if p := c.next(); p != `431[{"slice_id":"42","user_id":"17"}]` {
		t.Fatalf("whoami ack = %q, want slice 42 user 17", p)
	}

	// A state change is pushed.
	if err := rs.slice.State().Set(slicehub.WAQR); err != nil {
		t.Fatal(err)
	}
	if p := c.next(); p != `42["state",{"state":"qr"}]` {
		t.Fatalf("after Set(qr) got %q, want a state event", p)
	}
	c.send("41") // disconnect
}

func testWebSocket(t *testing.T, rs *runningSlice) {
	u := "ws" + strings.TrimPrefix(rs.base, "http") + "/socket.io/?EIO=4&transport=websocket"

	// Refused without the token, before any upgrade.
	_, resp, err := websocket.DefaultDialer.Dial(u, nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("websocket without token: err=%v resp=%v, want 401", err, resp)
	}

	h := http.Header{}
	h.Set(slicehub.HeaderGatewayToken, itToken)
	h.Set(slicehub.HeaderUserID, "23")
	// A browser's Origin (the public site) must not make the upgrade fail:
	// the gateway checks it, the slice trusts the token.
	h.Set("Origin", "https://app.slicehub.example")
	conn, _, err := websocket.DefaultDialer.Dial(u, h)
	if err != nil {
		t.Fatalf("websocket with token: %v", err)
	}
	defer conn.Close()
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	read := func() string {
		t.Helper()
		for {
			_, b, err := conn.ReadMessage()
			if err != nil {
				t.Fatalf("websocket read: %v", err)
			}
			if string(b) == "2" {
				_ = conn.WriteMessage(websocket.TextMessage, []byte("3"))
				continue
			}
			return string(b)
		}
	}
	write := func(s string) {
		t.Helper()
		if err := conn.WriteMessage(websocket.TextMessage, []byte(s)); err != nil {
			t.Fatalf("websocket write: %v", err)
		}
	}
	if p := read(); !strings.HasPrefix(p, "0{") {
		t.Fatalf("first frame %q, want an open packet", p)
	}
	write("40")
	for _, w := range []string{"40{", `42["hello",{"slice_id":"42"}]`, `42["state",`} {
		if p := read(); !strings.HasPrefix(p, w) {
			t.Fatalf("frame %q, want %q", p, w)
		}
	}
	write(`427["whoami"]`)
	if p := read(); p != `437[{"slice_id":"42","user_id":"23"}]` {
		t.Fatalf("whoami ack = %q, want slice 42 user 23", p)
	}

	// A note added over HTTP (another tab) is pushed to this one. (A note,
	// not a contact: the restart test below counts the contacts.)
	var list struct{ Contacts []slice.Contact }
	if st := rs.call(t, "GET", "/api/contacts", "", &list); st != 200 || len(list.Contacts) == 0 {
		t.Fatalf("GET /api/contacts = %d %+v, want the contact created above", st, list)
	}
	req, _ := http.NewRequest("POST", fmt.Sprintf("%s/api/contacts/%d/notes", rs.base, list.Contacts[0].ID), strings.NewReader(`{"body":"pushed note"}`))
	req.Header = h.Clone()
	req.Header.Set("Content-Type", "application/json")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("POST notes = %d, want 201", resp.StatusCode)
	}
	if p := read(); !strings.HasPrefix(p, `42["note",{`) || !strings.Contains(p, `"pushed note"`) {
		t.Fatalf("after POST notes got %q, want a note event", p)
	}
}
