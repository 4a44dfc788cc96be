package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	urlpkg "net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fasthttp/websocket"
	consulapi "github.com/hashicorp/consul/api"
	"github.com/slicehub/slicehub"
	sliceconsul "github.com/slicehub/slicehub/consul"
	"github.com/slicehub/slicehub/postgres"
	"github.com/slicehub/slicehub/testsupport"
)

func TestMain(m *testing.M) { testsupport.Main(m, testsupport.Options{Docker: true}) }

var platforms atomic.Int64

// platformDatabase is a new, migrated gateway database whose slice ids
// start in a range of their own. Slice databases (wa_slice_<id>, with the
// profile snapshot and the stand-in's account) and profile directories
// belong to the stack, shared by every test of the package: a second
// platform's slice 1 would otherwise restore the first one's linked
// WhatsApp.
func platformDatabase(t *testing.T) string {
	t.Helper()
	url := testsupport.NewDatabase(t)
	db := migrate(t, url)
	if _, err := db.Pool.Exec(t.Context(), fmt.Sprintf(`ALTER SEQUENCE slices_id_seq RESTART WITH %d`, 1+platforms.Add(1)*100_000)); err != nil {
		t.Fatal(err)
	}
	return url
}

// migratedDB opens a new gateway database with its schema, closed when the
// test ends.
func migratedDB(t *testing.T) *postgres.DB {
	t.Helper()
	return migrate(t, testsupport.NewDatabase(t))
}

// migrate opens the gateway database at url and migrates it; it is closed
// when the test ends.
func migrate(t *testing.T, url string) *postgres.DB {
	t.Helper()
	db, err := postgres.Open(t.Context(), url, testsupport.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	if err := db.Migrate(t.Context()); err != nil {
		t.Fatal(err)
	}
	return db
}

// startPlatform runs the whole daemon against the test stack.
func startPlatform(t *testing.T, extra ...string) *Main {
	t.Helper()
	st := testsupport.Stack(t)
	args := append([]string{
		"-addr", "127.0.0.1:0", "-internal-addr", "127.0.0.1:0",
		"-database-url", platformDatabase(t),
		"-consul-addr", st.Consul.Addr, "-nomad-addr", st.Nomad.Addr,
		// The gateway's least-privilege tokens, as in production.
		"-consul-token", st.ACL.ConsulGateway, "-nomad-token", st.ACL.NomadGateway,
		"-min-warm", "1", "-reconcile-interval", "1s",
		"-slice-image", testsupport.SliceImage(t), "-log-format", "text", "-wa-standin", "true",
	}, extra...)
	cfg, _, err := parseConfig("test", args, func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	m := &Main{Config: cfg, Log: testsupport.Logger(t)}
	if err := m.Run(context.Background()); err != nil {
		t.Fatalf("Main.Run: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

type client struct {
	t    *testing.T
	base string
	http *http.Client
}

func newClient(t *testing.T, m *Main) *client {
	jar, _ := cookiejar.New(nil)
	return &client{t: t, base: "http://" + m.PublicAddr, http: &http.Client{Jar: jar, Timeout: 30 * time.Second}}
}

func (c *client) do(method, path string, body any) (int, map[string]any) {
	c.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, c.base+path, rd)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if len(raw) > 0 && json.Unmarshal(raw, &out) != nil {
		c.t.Fatalf("%s %s: %d, not JSON: %q", method, path, resp.StatusCode, raw)
	}
	return resp.StatusCode, out
}

func (c *client) signup(email string) int64 {
	c.t.Helper()
	status, body := c.do("POST", "/auth/signup", map[string]string{"email": email, "password": "correct horse battery"})
	if status != http.StatusCreated {
		c.t.Fatalf("signup %s: %d %v", email, status, body)
	}
	sl, _ := body["slice"].(map[string]any)
	id, ok := slicehub.ParseSliceID(fmt.Sprint(sl["id"]))
	if !ok {
		c.t.Fatalf("signup %s: no slice id in %v", email, body)
	}
	return id
}

// whoami asks the caller's slice who it is, waiting while the gateway says
// the slice is starting (503).
func (c *client) whoami() (status int, sliceID string) {
	c.t.Helper()
	var body map[string]any
	testsupport.Eventually(c.t, 90*time.Second, "GET /api/whoami answered by a slice", func() (bool, error) {
		status, body = c.do("GET", "/api/whoami", nil)
		return status != http.StatusServiceUnavailable, fmt.Errorf("status %d %v", status, body)
	})
	return status, fmt.Sprint(body["slice_id"])
}

func warmSlices(t *testing.T, m *Main) []slicehub.Slice {
	t.Helper()
	warm, err := m.DB.Slices(context.Background(), slicehub.StateWarm)
	if err != nil {
		t.Fatal(err)
	}
	return warm
}

// The thin path of the foundation, end to end on real Nomad (docker driver),
// Consul and PostgreSQL: a warm slice, a signup that claims it, HTTP and a
// socket.io WebSocket through the gateway to that slice, and a refill.
func TestSignupReachesItsOwnSliceThroughTheGateway(t *testing.T) {
	m := startPlatform(t)
	testsupport.Eventually(t, 120*time.Second, "a warm slice", func() (bool, error) {
		return len(warmSlices(t, m)) >= 1, nil
	})
	warm := warmSlices(t, m)[0]

	alice := newClient(t, m)
	start := time.Now()
	id := alice.signup("alice@example.com")
	if id != warm.ID {
		t.Errorf("signup got slice %d; want the warm slice %d", id, warm.ID)
	}
	status, who := alice.whoami()
	if status != http.StatusOK || who != fmt.Sprint(id) {
		t.Fatalf("whoami = %d %q; want 200 from slice %d", status, who, id)
	}
	t.Logf("signup to first answer from the slice: %s", time.Since(start).Round(time.Millisecond))

	// socket.io over WebSocket reaches the same slice.
	if got := socketIOHello(t, m, alice); got != fmt.Sprint(id) {
		t.Errorf("socket.io hello from slice %q; want %d", got, id)
	}

	// The pool refills to one warm slice.
	testsupport.Eventually(t, 120*time.Second, "the pool refilled", func() (bool, error) {
		w := warmSlices(t, m)
		return len(w) == 1 && w[0].ID != id, fmt.Errorf("warm: %v", w)
	})

	// Consul shows the slice service with its id; Nomad the dispatched child.
	assertInConsul(t, id)
	children, err := m.Nomad.Children(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, c := range children {
		found = found || (c.SliceID == id && c.Alive())
	}
	if !found {
		t.Errorf("no live Nomad child of %q for slice %d in %+v", slicehub.NomadJobID, id, children)
	}

	// A second customer gets the refilled slice, and each sees only their own.
	bob := newClient(t, m)
	bobID := bob.signup("bob@example.com")
	if bobID == id {
		t.Fatalf("bob was bound to alice's slice %d", id)
	}
	if _, who := bob.whoami(); who != fmt.Sprint(bobID) {
		t.Errorf("bob's whoami answered by slice %q; want %d", who, bobID)
	}
	if _, who := alice.whoami(); who != fmt.Sprint(id) {
		t.Errorf("alice's whoami answered by slice %q after bob signed up; want %d", who, id)
	}

	// Without a session the proxy refuses, with a JSON error.
	anon := newClient(t, m)
	if status, body := anon.do("GET", "/api/whoami", nil); status != http.StatusUnauthorized || body["code"] == nil {
		t.Errorf("anonymous /api/whoami = %d %v; want 401 with a JSON code", status, body)
	}
}

// socketIOHello opens an Engine.IO v4 WebSocket through the gateway, joins
// the default namespace and returns the slice id of the "hello" event.
func socketIOHello(t *testing.T, m *Main, c *client) string {
	t.Helper()
	u := "ws://" + m.PublicAddr + "/socket.io/?EIO=4&transport=websocket"
	hdr := http.Header{}
	hdr.Set("Origin", "http://"+m.PublicAddr)
	for _, ck := range c.http.Jar.Cookies(mustURL(c.base)) {
		hdr.Add("Cookie", ck.Name+"="+ck.Value)
	}
	conn, resp, err := websocket.DefaultDialer.Dial(u, hdr)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("websocket dial through the gateway: %v (status %d)", err, status)
	}
	defer conn.Close()
	_ = conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	read := func() string {
		_, msg, err := conn.ReadMessage()
		if err != nil {
			t.Fatalf("websocket read: %v", err)
		}
		return string(msg)
	}
	if open := read(); !strings.HasPrefix(open, "0{") {
		t.Fatalf("first Engine.IO packet %q; want open (0{...})", open)
	}
	if err := conn.WriteMessage(websocket.TextMessage, []byte("40")); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 10; i++ {
		msg := read()
		if msg == "2" { // Engine.IO ping
			_ = conn.WriteMessage(websocket.TextMessage, []byte("3"))
			continue
		}
		if strings.HasPrefix(msg, `42["hello"`) {
			var ev []json.RawMessage
			if err := json.Unmarshal([]byte(msg[2:]), &ev); err != nil || len(ev) < 2 {
				t.Fatalf("hello event %q: %v", msg, err)
			}
			var hello struct {
				SliceID string `json:"slice_id"`
			}
			_ = json.Unmarshal(ev[1], &hello)
			return hello.SliceID
		}
	}
	t.Fatal("no hello event from the slice")
	return ""
}

func assertInConsul(t *testing.T, id int64) {
	t.Helper()
	cfg := consulapi.DefaultConfig()
	cfg.Address = testsupport.Stack(t).Consul.Addr
	c, err := consulapi.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	entries, _, err := c.Health().Service(slicehub.ConsulService, "", false, nil)
	if err != nil {
		t.Fatal(err)
	}
	entries = sliceconsul.RoutableOnly(entries) // the WhatsApp check may be a warning
	for _, e := range entries {
		if e.Service.Meta[slicehub.MetaSliceID] == fmt.Sprint(id) {
			return
		}
	}
	t.Errorf("Consul has no passing %q instance with slice_id=%d", slicehub.ConsulService, id)
}

func mustURL(s string) *urlpkg.URL {
	u, err := urlpkg.Parse(s)
	if err != nil {
		panic(err)
	}
	return u
}
