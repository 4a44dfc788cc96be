package admin

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"image"
	"image/color"
	"image/png"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/slicehub/slicehub"
)

// The dashboard over HTTP, on the API's fakes plus fakes of its own: the
// gateway's CSRF helpers, telemetry, the audit log, and a slice that
// reports WhatsApp states and serves a QR code.

const testCSRF = "test-csrf-token"

// fakeWeb is the gateway's double-submit CSRF, reduced to a fixed token.
type fakeWeb struct{}

func (fakeWeb) CSRFToken(*fiber.Ctx) string { return testCSRF }
func (fakeWeb) VerifyCSRF(c *fiber.Ctx) error {
	if c.FormValue("csrf_token") != testCSRF {
		return slicehub.Errorf("fake.csrf", slicehub.KindForbidden, "csrf", "the form has expired; reload the page")
	}
	return nil
}

type fakeTelemetry struct {
	mu     sync.Mutex
	alerts []Alert
}

func (f *fakeTelemetry) LatestSlices(context.Context) (map[int64]SliceSample, error) {
	return map[int64]SliceSample{
		1: {At: time.Now(), MemoryMB: 930, MemoryMaxMB: 1000, CPUPercent: 37, WhatsApp: slicehub.WAQR},
		2: {At: time.Now(), MemoryMB: 410, MemoryMaxMB: 1000, CPUPercent: 3, WhatsApp: slicehub.WAStarting},
	}, nil
}

// series is a day of a wave, one point an hour.
func series(base float64) []Point {
	var out []Point
	t0 := time.Now().Add(-24 * time.Hour)
	for i := range 25 {
		out = append(out, Point{At: t0.Add(time.Duration(i) * time.Hour), Value: base + float64((i*7)%11)*base/20})
	}
	return out
}

func (f *fakeTelemetry) SliceSeries(_ context.Context, id int64, _ time.Time) (Series, error) {
	return Series{MemoryMB: series(400 + float64(id)*100), CPUPercent: series(10)}, nil
}

func (f *fakeTelemetry) NodeSeries(context.Context, time.Time) (map[string]Series, error) {
	return map[string]Series{
		"n1": {MemoryMB: series(6000), CPUPercent: series(30)},
		"n2": {MemoryMB: series(2000), CPUPercent: series(8)},
	}, nil
}

func (f *fakeTelemetry) ActiveAlerts(context.Context) ([]Alert, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.alerts, nil
}

type fakeTokens struct{}

func (fakeTokens) GatewayToken(_ context.Context, id int64) (string, error) {
	return "gw-token-" + string(rune('0'+id)), nil
}

type fakeEvents struct{}

func (fakeEvents) RecentSliceEvents(context.Context, int) ([]slicehub.SliceEvent, error) {
	return []slicehub.SliceEvent{
		{ID: 3, SliceID: 1, At: time.Now().Add(-time.Minute), Actor: "admin:7", From: slicehub.StateSuspended, To: slicehub.StateProvisioning, Reason: "resumed by an admin"},
		{ID: 2, SliceID: 1, At: time.Now().Add(-time.Hour), Actor: "user:2", From: slicehub.StateWarm, To: slicehub.StateAssigned},
		{ID: 1, SliceID: 2, At: time.Now().Add(-2 * time.Hour), Actor: "scheduler", To: slicehub.StateProvisioning},
	}, nil
}

// fakeSlice answers /api/status/state and /api/status/qr as a slice does,
// and records whether each request came as the gateway and only as it.
type fakeSlice struct {
	srv      *httptest.Server
	png      []byte
	calls    atomic.Int32
	badCalls atomic.Int32 // without the token, or with a user id
}

func newFakeSlice(t *testing.T) *fakeSlice {
	img := image.NewGray(image.Rect(0, 0, 33, 33))
	for y := range 33 {
		for x := range 33 {
			if (x/3+y/3)%2 == 0 {
				img.SetGray(x, y, color.Gray{})
			} else {
				img.SetGray(x, y, color.Gray{Y: 255})
			}
		}
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	fs := &fakeSlice{png: buf.Bytes()}
	fs.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fs.calls.Add(1)
		if r.Header.Get(slicehub.HeaderGatewayToken) != "gw-token-1" || r.Header.Get(slicehub.HeaderUserID) != "" {
			fs.badCalls.Add(1)
			http.Error(w, `{"error":"unauthorized"}`, http.StatusUnauthorized)
			return
		}
		switch r.URL.Path {
		case "/api/status/state":
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"state":"qr"}`)
		case "/api/status/qr":
			w.Header().Set("Content-Type", "image/png")
			w.Header().Set("X-Slicehub-QR-Seq", "1")
			w.Write(fs.png)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(fs.srv.Close)
	return fs
}

func (fs *fakeSlice) addr() string { return strings.TrimPrefix(fs.srv.URL, "http://") }

type dashEnv struct {
	app   *fiber.App
	pool  *fakePool
	store *fakeStore
	tel   *fakeTelemetry
	slice *fakeSlice
	done  chan struct{} // ends the event streams, as the daemon's shutdown does
}

// newDashEnv serves the dashboard with everything plugged in (withTelemetry)
// or with only what exists today.
func newDashEnv(t *testing.T, withTelemetry bool) *dashEnv {
	e := &dashEnv{tel: &fakeTelemetry{alerts: []Alert{{Rule: "memory_near_max", Severity: "critical",
		Subject: "slice 1", Message: "uses 93% of its memory_max", Since: time.Now().Add(-5 * time.Minute)}}},
		slice: newFakeSlice(t), done: make(chan struct{})}
	e.app, e.pool, e.store = testApp(t, func(d *Deps) {
		d.Web, d.Tokens, d.Events = fakeWeb{}, fakeTokens{}, fakeEvents{}
		d.Routes = fakeRoutes{addr: e.slice.addr()}
		d.NomadURL, d.ConsulURL, d.ConsulDC = "http://nomad.test:4646", "http://consul.test:8500", "dc1"
		d.Poll, d.MaxStream, d.Done = 20*time.Millisecond, 30*time.Second, e.done
		if withTelemetry {
			d.Telemetry = e.tel
		}
	})
	e.pool.capa = &slicehub.Capacity{Nodes: 2, MemoryMB: 16384, ReservedMB: 5120, CPU: 8000, ReservedCPU: 2000,
		SliceMemoryMB: 512, SliceCPU: 200, SliceDiskMB: 1024, Fit: 21, Limit: "memory",
		PerNode: []slicehub.NodeCapacity{
			{ID: "n1", Name: "node-1", MemoryMB: 8192, ReservedMB: 4096, CPU: 4000, ReservedCPU: 1600, DiskMB: 50000, ReservedDisk: 4000, Fit: 8},
			{ID: "n2", Name: "node-2", MemoryMB: 8192, ReservedMB: 1024, CPU: 4000, ReservedCPU: 400, DiskMB: 50000, ReservedDisk: 1000, Fit: 13},
		}}
	e.store.slices[1] = slicehub.Slice{ID: 1, State: slicehub.StateAssigned, UserID: 2, JobID: "slice/dispatch-1", DBName: "slice_1",
		StateChangedAt: time.Now().Add(-time.Hour)}
	e.store.slices[2] = slicehub.Slice{ID: 2, State: slicehub.StateWarm, JobID: "slice/dispatch-2", DBName: "slice_2"}
	e.store.slices[3] = slicehub.Slice{ID: 3, State: slicehub.StateFailed, UserID: 3, JobID: "slice/dispatch-3"}
	return e
}

// get returns the status, headers and body of a GET.
func (e *dashEnv) get(t *testing.T, path string) (int, http.Header, string) {
	t.Helper()
	resp, err := e.app.Test(httptest.NewRequest("GET", path, nil), 5000)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

// post submits a form; the CSRF token is added unless form has one.
func (e *dashEnv) post(t *testing.T, path string, form url.Values) (int, http.Header, string) {
	t.Helper()
	if form == nil {
		form = url.Values{}
	}
	if _, ok := form["csrf_token"]; !ok {
		form.Set("csrf_token", testCSRF)
	}
	req := httptest.NewRequest("POST", path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := e.app.Test(req, 5000)
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

func mustContain(t *testing.T, what, body string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(body, w) {
			t.Errorf("%s lacks %q", what, w)
		}
	}
}

func TestDashboardPanels(t *testing.T) {
	e := newDashEnv(t, true)
	status, hdr, body := e.get(t, "/admin")
	if status != 200 {
		t.Fatalf("GET /admin = %d: %s", status, body)
	}
	if csp := hdr.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || strings.Contains(csp, "unsafe-inline") {
		t.Errorf("CSP %q", csp)
	}
	if hdr.Get("Cache-Control") != "no-store" {
		t.Errorf("Cache-Control %q", hdr.Get("Cache-Control"))
	}
	// No inline script or style anywhere: the CSP would block them.
	for _, bad := range []string{"<script>", "style=", "<style", "onclick", "onsubmit"} {
		if strings.Contains(body, bad) {
			t.Errorf("the page has inline %q", bad)
		}
	}
	mustContain(t, "stat cards", body, `id="stat-users"><span class="n">7</span>`, `id="stat-slices"><span class="n">3</span>`,
		`<span class="n">1<small>/1</small></span><span class="label">warm / desired</span>`, `id="stat-paused"><span class="n">running`,
		`id="stat-fit"><span class="n">21</span>`, `data-state="failed">failed <b>1</b>`)
	mustContain(t, "capacity planner", body, "5120 / 16384 MiB (31%)", "2000 / 8000 MHz (25%)", `<strong id="cap-fit">21 more fit</strong>, limited by memory`,
		`data-node="n1"`, `<svg class="bar`)
	mustContain(t, "slice grid", body, `data-slice="1" data-state="assigned"`, "b@x", `href="http://nomad.test:4646/ui/allocations/a1"`,
		`href="http://consul.test:8500/ui/dc1/services/slice/instances"`, `href="http://nomad.test:4646/ui/jobs/slice%2Fdispatch-2"`,
		`<span class="pill wa-qr">qr</span>`, `930 MiB`, `class="num hot"`, `<svg class="spark"`, "warm pool")
	mustContain(t, "alert banner", body, `class="banner critical" data-rule="memory_near_max"`, "uses 93% of its memory_max")
	mustContain(t, "pool panel", body, `action="/admin/pool/pause"`, `id="pool-min-warm"`, `value="1"`)
	mustContain(t, "users table", body, `data-user="2"`, `action="/admin/users/2/disable"`, `name="confirm"`, `value="`+testCSRF+`"`)
	if strings.Contains(body, `action="/admin/users/7/disable"`) {
		t.Error("the admin is offered to disable themself")
	}
	mustContain(t, "audit log", body, `id="audit-log"`, `<td class="actor">admin:7</td>`, "suspended → provisioning")
	if strings.Contains(body, "no-telemetry") {
		t.Error("telemetry is plugged in, yet the page says there is none")
	}

	// The stylesheet and script, by the hashed URLs the page names.
	for _, name := range []string{"admin.css", "admin.js"} {
		i := strings.Index(body, "/admin/static/"+name+"?v=")
		if i < 0 {
			t.Fatalf("the page does not link %s", name)
		}
		u := body[i:]
		u = u[:strings.IndexByte(u, '"')]
		st, h, b := e.get(t, u)
		if st != 200 || !strings.Contains(h.Get("Cache-Control"), "immutable") || len(b) == 0 {
			t.Errorf("GET %s = %d %q", u, st, h.Get("Cache-Control"))
		}
	}
	if st, _, _ := e.get(t, "/admin/static/nope.js"); st != 404 {
		t.Errorf("unknown static file = %d", st)
	}
}

// Without telemetry (today) and with Nomad down, every panel still renders.
func TestDashboardWithoutTelemetry(t *testing.T) {
	e := newDashEnv(t, false)
	e.pool.capa = nil
	// Many retired slices: the grid keeps the newest of them.
	for id := int64(4); id < 4+retiredShown+5; id++ {
		e.store.slices[id] = slicehub.Slice{ID: id, State: slicehub.StateRetired}
	}
	status, _, body := e.get(t, "/admin")
	if status != 200 {
		t.Fatalf("GET /admin = %d: %s", status, body)
	}
	mustContain(t, "page", body, `id="hidden-retired">5 older retired slices not shown`, `data-slice="28" data-state="retired"`,
		`id="no-telemetry"`, `id="capacity-error"`, "Nomad did not answer", `id="slice-grid"`, `id="users-table"`)
	for _, bad := range []string{`class="banner critical"`, `<svg class="spark"`, `id="stat-fit"`} {
		if strings.Contains(body, bad) {
			t.Errorf("page without telemetry or capacity has %q", bad)
		}
	}
}

func TestDashboardSlicePage(t *testing.T) {
	e := newDashEnv(t, true)
	status, _, body := e.get(t, "/admin/slices/1")
	if status != 200 {
		t.Fatalf("GET /admin/slices/1 = %d: %s", status, body)
	}
	mustContain(t, "slice page", body, `id="slice-state">assigned`, "b@x (id 2)", `id="wa-state">qr`, `src="/admin/slices/1/qr.png?seq=`,
		`id="nomad-link"`, `id="consul-link"`, `action="/admin/slices/1/retire"`, `id="retire-confirm"`, `<svg class="spark"`)

	// The QR code comes through the dashboard, fetched as the gateway.
	status, hdr, png := e.get(t, "/admin/slices/1/qr.png?seq=x")
	if status != 200 || hdr.Get("Content-Type") != "image/png" || png != string(e.slice.png) || hdr.Get("Cache-Control") != "no-store" {
		t.Errorf("QR = %d %q %d bytes", status, hdr.Get("Content-Type"), len(png))
	}
	if e.slice.calls.Load() < 2 || e.slice.badCalls.Load() != 0 {
		t.Errorf("slice saw %d calls, %d not as the gateway alone", e.slice.calls.Load(), e.slice.badCalls.Load())
	}

	// Suspended, it is not asked, even while it still passes its check.
	calls := e.slice.calls.Load()
	e.store.slices[1] = slicehub.Slice{ID: 1, State: slicehub.StateSuspended, UserID: 2}
	_, _, body = e.get(t, "/admin/slices/1")
	mustContain(t, "suspended slice page", body, `id="wa-offline"`, "passing at")
	if e.slice.calls.Load() != calls {
		t.Error("the dashboard asked a suspended slice for its WhatsApp state")
	}

	// A slice that does not run: no WhatsApp state, no QR.
	_, _, body = e.get(t, "/admin/slices/2")
	mustContain(t, "warm slice page", body, `id="wa-offline"`, "none (warm pool)")
	if st, _, _ := e.get(t, "/admin/slices/2/qr.png"); st != 404 {
		t.Errorf("QR of an unrouted slice = %d", st)
	}
	if st, _, _ := e.get(t, "/admin/slices/99"); st != 404 {
		t.Errorf("unknown slice page = %d", st)
	}
}

func TestDashboardActions(t *testing.T) {
	e := newDashEnv(t, true)
	e.store.slices[4] = slicehub.Slice{ID: 4, State: slicehub.StateWarm}
	form := func(kv ...string) url.Values {
		v := url.Values{}
		for i := 0; i+1 < len(kv); i += 2 {
			v.Set(kv[i], kv[i+1])
		}
		return v
	}
	cases := []struct {
		path     string
		form     url.Values
		status   int
		location string // of a 303
		text     string // on the page otherwise
	}{
		{"/admin/slices/1/suspend", form("csrf_token", "forged"), 403, "", "The form has expired"},
		{"/admin/slices/1/suspend", nil, 303, "/admin/slices/1?done=suspend", ""},
		{"/admin/slices/1/suspend", nil, 409, "", "Cannot act on a suspended slice"},
		{"/admin/slices/1/resume", nil, 303, "/admin/slices/1?done=resume", ""},
		{"/admin/slices/2/restart", nil, 303, "/admin/slices/2?done=restart", ""},
		{"/admin/slices/1/reassign", form("user_id", "x"), 400, "", "The user id must be a positive integer"},
		{"/admin/slices/1/reassign", form("user_id", "99"), 404, "", "No such account"},
		{"/admin/slices/2/reassign", nil, 400, "", "A user_id is required"},
		{"/admin/slices/1/retire", nil, 400, "", "type the slice id 1 to confirm"},
		{"/admin/slices/1/retire", form("confirm", "2"), 400, "", "type the slice id 1 to confirm"},
		{"/admin/slices/4/retire", form("confirm", "4"), 303, "/admin/slices/4?done=retire", ""},
		{"/admin/slices/1/explode", nil, 404, "", ""},
		{"/admin/slices/2/note", nil, 400, "", "A note of 1 to 500 bytes is required"},
		{"/admin/slices/2/note", form("note", "called the customer"), 303, "/admin/slices/2?done=note", ""},
		{"/admin/users/2/disable", form("csrf_token", ""), 403, "", "The form has expired"},
		{"/admin/users/2/disable", nil, 400, "", "type the user id 2 to confirm"},
		{"/admin/users/7/disable", form("confirm", "7"), 409, "", "An admin cannot disable their own account"},
		{"/admin/users/2/disable", form("confirm", "2"), 303, "/admin?done=disable#users", ""},
		{"/admin/pool/pause", form("csrf_token", "x"), 403, "", "The form has expired"},
		{"/admin/pool/pause", nil, 303, "/admin?done=pause#pool", ""},
		{"/admin/pool/scale", form("min_warm", "many"), 400, "", "The target must be a whole number."},
		{"/admin/pool/scale", form("min_warm", "11"), 400, "", "Out of range."},
		{"/admin/pool/scale", form("min_warm", "3"), 303, "/admin?done=scale#pool", ""},
		{"/admin/pool/resume", nil, 303, "/admin?done=unpause#pool", ""},
		{"/admin/pool/drain", nil, 404, "", ""},
	}
	for _, c := range cases {
		status, hdr, body := e.post(t, c.path, c.form)
		if status != c.status {
			t.Errorf("POST %s %v = %d; want %d\n%.300s", c.path, c.form, status, c.status, body)
			continue
		}
		if c.location != "" && hdr.Get("Location") != c.location {
			t.Errorf("POST %s → %q; want %q", c.path, hdr.Get("Location"), c.location)
		}
		if c.text != "" && !strings.Contains(body, c.text) {
			t.Errorf("POST %s: page lacks %q\n%.500s", c.path, c.text, body)
		}
	}
	// suspend, resume, restart, retire reached the scheduler, as the admin;
	// a refused form (bad CSRF, no confirmation) did not.
	if got := strings.Join(e.pool.actors, ","); got != "admin:7,admin:7,admin:7,admin:7" {
		t.Errorf("scheduler actions by %q", got)
	}
	if e.store.users[2].DisabledAt == nil {
		t.Error("user 2 is not disabled")
	}
	if e.pool.Paused() || e.pool.MinWarm() != 3 {
		t.Errorf("pool paused %v, min_warm %d; want running with 3", e.pool.Paused(), e.pool.MinWarm())
	}
	if len(e.store.notes) != 1 || e.store.notes[0].Reason != "note: called the customer" || e.store.notes[0].Actor != "admin:7" {
		t.Errorf("notes %+v; want admin:7's one note", e.store.notes)
	}
	// The notice after the redirect.
	_, _, body := e.get(t, "/admin/slices/4?done=retire")
	mustContain(t, "after retire", body, `id="notice"`, "The slice is retired.", `id="slice-state">retired`)
	// Every action of the table has its form on the slice page.
	for _, a := range slicehub.AdminActions {
		mustContain(t, "the slice page's form of "+string(a.Name), body,
			`action="/admin/slices/4/`+string(a.Name)+`"`, `id="`+string(a.Name)+`">`+a.Label+`</button>`)
	}
}

// readEvent reads the next "live" event of an SSE stream.
func readEvent(t *testing.T, rd *bufio.Reader) liveEvent {
	t.Helper()
	name := ""
	for {
		line, err := rd.ReadString('\n')
		if err != nil {
			t.Fatalf("reading the stream: %v", err)
		}
		line = strings.TrimRight(line, "\n")
		switch {
		case strings.HasPrefix(line, "event: "):
			name = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: ") && name == "live":
			var ev liveEvent
			if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &ev); err != nil {
				t.Fatalf("event data: %v", err)
			}
			return ev
		}
	}
}

// serve runs the app on a loopback listener, for what app.Test cannot do:
// a stream, and a browser.
func (e *dashEnv) serve(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go e.app.Listener(ln)
	t.Cleanup(func() {
		// Streams first: a shutdown waits for the requests in flight.
		close(e.done)
		e.app.ShutdownWithTimeout(5 * time.Second)
	})
	return "http://" + ln.Addr().String()
}

func TestDashboardEvents(t *testing.T) {
	e := newDashEnv(t, true)
	base := e.serve(t)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", base+"/admin/events", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("Content-Type %q", ct)
	}
	rd := bufio.NewReader(resp.Body)
	ev := readEvent(t, rd)
	mustContain(t, "first live event", ev.HTML, `id="stats"`, `id="capacity"`, `data-slice="1" data-state="assigned"`, `id="audit-log"`, `data-rule="memory_near_max"`)
	if strings.Contains(ev.HTML, "csrf_token") {
		t.Error("the live fragment carries a form: an update would wipe what is typed in it")
	}

	// A change is pushed at the next tick; an unchanged view is not resent.
	if _, err := e.pool.Suspend(ctx, 1, "admin:7"); err != nil {
		t.Fatal(err)
	}
	// An event for another change (a tick late on a loaded machine) may
	// come first: read until the awaited one, within the stream's deadline.
	ev = readEventUntil(t, rd, "an event after suspend", func(ev liveEvent) bool {
		return strings.Contains(ev.HTML, `data-slice="1" data-state="suspended"`)
	})
	e.tel.mu.Lock()
	e.tel.alerts = nil
	e.tel.mu.Unlock()
	readEventUntil(t, rd, "an event without the resolved alert's banner", func(ev liveEvent) bool {
		return !strings.Contains(ev.HTML, `id="alerts"`)
	})
}

// readEventUntil reads live events until one satisfies ok; the stream's
// context bounds the wait (readEvent then fails the test).
func readEventUntil(t *testing.T, rd *bufio.Reader, what string, ok func(liveEvent) bool) liveEvent {
	t.Helper()
	for n := 0; ; n++ {
		ev := readEvent(t, rd)
		if ok(ev) {
			return ev
		}
		t.Logf("waiting for %s: event %d is another", what, n+1)
	}
}
