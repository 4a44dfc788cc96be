// Package chaos runs fault scenarios against the whole platform (real
// Docker, Nomad, Consul, PostgreSQL, Chromium) while simulated users keep
// writing CRM data and holding socket.io WebSockets, and reports how long
// each fault cost, which requests failed, and whether anything was lost.
//
// `make chaos` (SLICEHUB_CHAOS=1) runs every scenario with three users and
// writes the dated report to docs/reports (internal/report). Without the
// flag, `make test` runs a short version so that CI catches regressions
// within its time: every scenario with one user, about three minutes,
// with its report in test-artifacts only. -short skips the
// package. The stack has two Nomad client nodes (testsupport.Options
// NomadClients) for the drain.
package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	urlpkg "net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/fasthttp/websocket"
	consulapi "github.com/hashicorp/consul/api"
	"github.com/slicehub/slicehub"
	sliceconsul "github.com/slicehub/slicehub/consul"
	"github.com/slicehub/slicehub/devenv"
	"github.com/slicehub/slicehub/internal/report"
	"github.com/slicehub/slicehub/ops"
	"github.com/slicehub/slicehub/testsupport"
)

// knownFailures are defects this suite found in the platform, outside the
// suite, by scenario: the short version that make test runs reports them
// (the log, the report's "Known failures") without failing CI, until they
// are fixed; make chaos fails on them like on anything else. Remove an
// entry with its fix.
var knownFailures = map[string]string{}

// full: the whole suite (`make chaos`); otherwise the short version.
func full() bool { return os.Getenv("SLICEHUB_CHAOS") == "1" }

func TestMain(m *testing.M) {
	if os.Getenv("SLICEHUB_TESTSUPPORT_WATCHDOG_DIR") == "" {
		flag.Parse()
		if testing.Short() {
			// The test skips and says why; starting the agents for
			// nothing would cost -short a minute.
			os.Exit(m.Run())
		}
	}
	// Durable: "0 acknowledged rows lost" means something only with the
	// production settings (the PostgreSQL kill scenario depends on it).
	testsupport.Main(m, testsupport.Options{Docker: true, NomadClients: 2, Durable: true})
}

// numUsers: three in the full suite, one in the short version.
func numUsers() int {
	if full() {
		return 3
	}
	return 1
}

const (
	tick         = 250 * time.Millisecond // pace of each user's requests
	recoverLimit = 120 * time.Second      // a scenario that takes longer fails
	stableRun    = 8                      // consecutive successes that count as "served again"
	// profileQuiet: no new profile snapshot for this long after linking
	// means Chromium has written the login (the slice polls every 2 s and
	// waits 2 s of calm before a snapshot).
	profileQuiet = 15 * time.Second
	// slow marks a request that succeeded but kept its user waiting this
	// long: a frozen database shows as stalls, not as errors.
	slow = 2 * time.Second
)

func root() string {
	r, _ := filepath.Abs("..")
	return r
}

// gateway is one `slicehub serve` replica, a real process we can SIGKILL.
type gateway struct {
	name     string
	public   string
	internal string
	cmd      *exec.Cmd
	done     chan struct{}
}

func startGateway(t *testing.T, bin, name string, args []string, bootstrap string) *gateway {
	t.Helper()
	g := &gateway{name: name, public: testsupport.FreeAddr(t), internal: testsupport.FreeAddr(t), done: make(chan struct{})}
	if bootstrap == "" {
		bootstrap = "http://" + g.internal
	}
	full := append([]string{"serve", "-addr", g.public, "-internal-addr", g.internal, "-bootstrap-url", bootstrap}, args...)
	g.cmd = exec.Command(bin, full...)
	logf, err := os.Create(filepath.Join(t.TempDir(), name+".log"))
	if err != nil {
		t.Fatal(err)
	}
	g.cmd.Stdout, g.cmd.Stderr = logf, logf
	if err := g.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = g.cmd.Wait(); close(g.done) }()
	t.Cleanup(func() {
		_ = g.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-g.done:
		case <-time.After(30 * time.Second):
			_ = g.cmd.Process.Kill()
			<-g.done
		}
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			if len(b) > 8000 {
				b = b[len(b)-8000:]
			}
			t.Logf("%s log tail:\n%s", name, b)
		}
	})
	testsupport.Eventually(t, 60*time.Second, name+" listening", func() (bool, error) {
		select {
		case <-g.done:
			return false, fmt.Errorf("%s exited: %v", name, g.cmd.ProcessState)
		default:
		}
		c, err := net.DialTimeout("tcp", g.public, time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil, err
	})
	return g
}

// user is a simulated customer behind the edge: one address (the edge's),
// a session cookie, and no retries of its own. A request that fails is a
// failure the customer saw; the only retries are nginx's (idempotent
// requests, on the next replica), as in production.
type user struct {
	email   string
	sliceID string
	jar     http.CookieJar
	http    *http.Client
	edge    *edge

	inflight atomic.Int32 // requests sent and not yet answered

	mu       sync.Mutex
	acked    []int64 // contact ids the slice acknowledged with 201
	events   []event
	wsHellos int
	wsWrong  int
	wsUp     bool      // a socket.io session is open (hello received)
	wsDown   time.Time // when the last socket ended
	sawQR    int       // samples of the WhatsApp state showing a QR code to scan
}

type event struct {
	at     time.Time
	dur    time.Duration
	ok     bool
	status int    // 0: transport error
	bad    string // non-empty: a failure that is not allowed (wrong tenant, unclear body)
}

func newUser(email string, e *edge) *user {
	jar, _ := cookiejar.New(nil)
	tr := &http.Transport{TLSClientConfig: e.tls, MaxIdleConnsPerHost: 4}
	return &user{email: email, jar: jar, edge: e, http: &http.Client{Jar: jar, Timeout: 10 * time.Second, Transport: tr}}
}

// do sends one request through the edge, once. It returns status 0 when
// the edge did not answer.
func (u *user) do(method, path string, body any) (int, []byte, error) {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, "https://"+u.edge.addr+path, rd)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	u.inflight.Add(1)
	defer u.inflight.Add(-1)
	resp, err := u.http.Do(req)
	if err != nil {
		return 0, nil, err
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp.StatusCode, raw, nil
}

func (u *user) json(method, path string, body any) (int, map[string]any) {
	status, raw, _ := u.do(method, path, body)
	var out map[string]any
	_ = json.Unmarshal(raw, &out)
	return status, out
}

// classify judges a failed answer: only 502, 503 or 504 with a JSON body
// naming an error are allowed.
func classify(status int, raw []byte) string {
	if status == 0 {
		return "" // the edge did not answer: counted as a failure, not as a wrong answer
	}
	if status != 502 && status != 503 && status != 504 {
		return fmt.Sprintf("status %d: %.120s", status, raw)
	}
	var b map[string]any
	if json.Unmarshal(raw, &b) != nil || (b["code"] == nil && b["error"] == nil) {
		return fmt.Sprintf("status %d without a JSON error body: %.120s", status, raw)
	}
	return ""
}

// step is one unit of load: whoami (checking the tenant) and one CRM write.
func (u *user) step(n int) {
	now := time.Now()
	status, raw, _ := u.do("GET", "/api/whoami", nil)
	ev := event{at: now, status: status}
	switch {
	case status == 200:
		var who struct {
			SliceID string `json:"slice_id"`
		}
		_ = json.Unmarshal(raw, &who)
		if who.SliceID != u.sliceID {
			ev.bad = fmt.Sprintf("whoami answered by slice %q, want %s", who.SliceID, u.sliceID)
			break
		}
		status, raw, _ = u.do("POST", "/api/contacts", map[string]string{"name": fmt.Sprintf("%s #%d", u.email, n), "phone": fmt.Sprintf("+1555%07d", n)})
		ev.status = status
		// A linked session that comes back showing a QR code needs the
		// customer's phone again: sample the state on every step.
		if st, b := u.json("GET", "/api/status/state", nil); st == 200 && b["state"] == slicehub.WAQR {
			u.mu.Lock()
			u.sawQR++
			u.mu.Unlock()
		}
		if status == 201 {
			var c struct {
				ID int64 `json:"id"`
			}
			_ = json.Unmarshal(raw, &c)
			u.mu.Lock()
			u.acked = append(u.acked, c.ID)
			u.mu.Unlock()
			ev.ok = true
		} else {
			ev.bad = classify(status, raw)
		}
	default:
		ev.bad = classify(status, raw)
	}
	ev.dur = time.Since(now)
	u.mu.Lock()
	u.events = append(u.events, ev)
	u.mu.Unlock()
}

// socket holds a socket.io WebSocket through the gateway until ctx ends,
// dialing again when it drops, and checks each hello's slice id.
func (u *user) socket(ctx context.Context) {
	pace := time.NewTicker(500 * time.Millisecond)
	defer pace.Stop()
	for ctx.Err() == nil {
		_ = u.socketOnce(ctx)
		select {
		case <-ctx.Done():
		case <-pace.C:
		}
	}
}

func (u *user) socketOnce(ctx context.Context) error {
	base := u.edge.addr
	hdr := http.Header{}
	hdr.Set("Origin", "https://"+base)
	for _, ck := range u.jar.Cookies(&urlpkg.URL{Scheme: "https", Host: base}) {
		hdr.Add("Cookie", ck.Name+"="+ck.Value)
	}
	d := websocket.Dialer{HandshakeTimeout: 5 * time.Second, TLSClientConfig: u.edge.tls}
	conn, _, err := d.Dial("wss://"+base+"/socket.io/?EIO=4&transport=websocket", hdr)
	if err != nil {
		return err
	}
	defer conn.Close()
	defer func() {
		u.mu.Lock()
		if u.wsUp {
			u.wsUp, u.wsDown = false, time.Now()
		}
		u.mu.Unlock()
	}()
	// Closing the connection is how ctx stops the blocking read below.
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	joined := false
	for {
		// Engine.IO pings every 25 s by default; a longer silence is a dead peer.
		_ = conn.SetReadDeadline(time.Now().Add(60 * time.Second))
		_, msg, err := conn.ReadMessage()
		if err != nil {
			return err
		}
		s := string(msg)
		switch {
		case strings.HasPrefix(s, "0{") && !joined:
			joined = true
			if err := conn.WriteMessage(websocket.TextMessage, []byte("40")); err != nil {
				return err
			}
		case s == "2":
			_ = conn.WriteMessage(websocket.TextMessage, []byte("3"))
		case strings.HasPrefix(s, `42["hello"`):
			var ev []json.RawMessage
			var hello struct {
				SliceID string `json:"slice_id"`
			}
			if json.Unmarshal([]byte(s[2:]), &ev) == nil && len(ev) > 1 {
				_ = json.Unmarshal(ev[1], &hello)
			}
			u.mu.Lock()
			u.wsHellos++
			u.wsUp = true
			if hello.SliceID != u.sliceID {
				u.wsWrong++
			}
			u.mu.Unlock()
		}
	}
}

// waState polls the user's WhatsApp state until it is want.
func (u *user) waitState(want string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	poll := time.NewTicker(500 * time.Millisecond)
	defer poll.Stop()
	last := ""
	for time.Now().Before(deadline) {
		status, b := u.json("GET", "/api/status/state", nil)
		last = fmt.Sprintf("%d %v", status, b)
		if status == 200 && b["state"] == want {
			return nil
		}
		<-poll.C
	}
	return fmt.Errorf("%s: WhatsApp state not %q after %s (last %s)", u.email, want, timeout, last)
}

// missing lists the acknowledged contact ids that the slice no longer has,
// out of every contact acknowledged so far (checked is how many): call it
// with the load stopped, so that rows acknowledged during the fault are
// among them.
func (u *user) missing() (lost []int64, checked int, err error) {
	have := map[int64]bool{}
	after := int64(0)
	for pages := 0; pages < 10000; pages++ {
		status, raw, err := u.do("GET", fmt.Sprintf("/api/contacts?limit=200&after=%d", after), nil)
		if status != 200 {
			return nil, 0, fmt.Errorf("GET /api/contacts: %d %v %.200s", status, err, raw)
		}
		// GET /api/contacts answers {"contacts": [...]}, oldest id first.
		var page struct {
			Contacts []struct {
				ID int64 `json:"id"`
			} `json:"contacts"`
		}
		if err := json.Unmarshal(raw, &page); err != nil {
			return nil, 0, fmt.Errorf("GET /api/contacts: %w: %.200s", err, raw)
		}
		cs := page.Contacts
		if len(cs) == 0 {
			break
		}
		for _, c := range cs {
			have[c.ID] = true
			after = max(after, c.ID)
		}
	}
	u.mu.Lock()
	acked := append([]int64(nil), u.acked...)
	u.mu.Unlock()
	for _, id := range acked {
		if !have[id] {
			lost = append(lost, id)
		}
	}
	return lost, len(acked), nil
}

type result struct {
	name     string
	recovery time.Duration // the later of requestsBack and catalogBack; -1: not recovered
	// requestsBack: from the fault until the slowest user's first fast
	// success after its last failed or slow request. catalogBack: until
	// every user's slice is passing in Consul's catalog again (the control
	// plane converged, not only the gateway's route cache serving).
	requestsBack, catalogBack time.Duration
	failed                    map[int]int // status (0: the edge did not answer) -> count
	requests                  int
	inflight                  int // requests in flight at the fault (all users, every replica)
	bad                       []string
	lost                      int
	checked                   int      // acknowledged rows checked after recovery (all so far)
	lostErr                   []string // checks that could not run: the row count is then unknown
	wsWrong                   int      // socket.io hellos from another tenant's slice
	wsNotBack                 int      // users whose socket did not come back after recovery
	known                     []string // failures of a known defect (knownFailures), in the short version
	edgeRetries               int      // requests nginx sent to a second replica (idempotent, or not yet sent); -1: unknown
	newQR                     int
	pairings                  int // new pairings at the stand-in (QR pages shown) across users
	resumes                   int // page loads that found the linked session in the browser's storage
	wsDrops                   int
	maxLat                    time.Duration
	note                      string
	skipped                   string
}

type platform struct {
	edge    *edge
	gws     []*gateway
	users   []*user
	consul  *consulapi.Client
	results []*result
	stepN   int
	stepMu  sync.Mutex
}

// load keeps every user stepping at the tick until ctx ends.
func (p *platform) load(ctx context.Context) *sync.WaitGroup {
	var wg sync.WaitGroup
	for _, u := range p.users {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tk := time.NewTicker(tick)
			defer tk.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-tk.C:
				}
				p.stepMu.Lock()
				p.stepN++
				n := p.stepN
				p.stepMu.Unlock()
				u.step(n)
			}
		}()
	}
	return &wg
}

// pairingStats is what a slice's stand-in WhatsApp page counted.
type pairingStats struct {
	addr     string // the stand-in's listener: a new one means a new slice process
	Pairings int    `json:"pairings"`
	Resumes  int    `json:"resumes"`
}

var standinAddr = regexp.MustCompile(`serving the stand-in WhatsApp page.*?"?addr"?[=:]"?([0-9.]+:[0-9]+)`)

// standinStats reads the stand-in's /stats. The stand-in runs inside the
// slice on a loopback port of its own (host networking), which the slice
// logs at start; the newest such line in the container's log is current.
func (p *platform) standinStats(sliceID string) (pairingStats, error) {
	var st pairingStats
	alloc, err := p.waitAlloc(sliceID, 90*time.Second)
	if err != nil {
		return st, err
	}
	out, err := testsupport.ContainerLogs("slice-" + alloc)
	if err != nil {
		return st, err
	}
	m := standinAddr.FindAllSubmatch(out, -1)
	if len(m) == 0 {
		return st, fmt.Errorf("slice-%s logged no stand-in address", alloc)
	}
	st.addr = string(m[len(m)-1][1])
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + st.addr + "/stats")
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return st, fmt.Errorf("stand-in /stats: %w", err)
	}
	return st, nil
}

// waitAlloc polls allocOf until the slice is passing in Consul.
func (p *platform) waitAlloc(sliceID string, timeout time.Duration) (string, error) {
	deadline := time.Now().Add(timeout)
	poll := time.NewTicker(250 * time.Millisecond)
	defer poll.Stop()
	for {
		alloc, err := p.allocOf(sliceID)
		if err == nil || time.Now().After(deadline) {
			return alloc, err
		}
		<-poll.C
	}
}

// allocOf finds the Nomad allocation serving a slice, through Consul.
func (p *platform) allocOf(sliceID string) (string, error) {
	entries, _, err := p.consul.Health().Service(slicehub.ConsulService, "", false, nil)
	if err != nil {
		return "", err
	}
	entries = sliceconsul.RoutableOnly(entries) // the WhatsApp check may be a warning
	for _, e := range entries {
		if e.Service.Meta[slicehub.MetaSliceID] == sliceID {
			return e.Service.Meta["alloc_id"], nil
		}
	}
	return "", fmt.Errorf("slice %s not passing in Consul", sliceID)
}

// scenario runs one fault under load and measures it. prepare (may be nil)
// runs before the load starts, to find the fault's target without that
// lookup counting against the platform; after (may be nil) runs once every
// user is served again and returns a note for the report.
func (p *platform) scenario(t *testing.T, name string, prepare, fault func() error, after func() string) {
	res := &result{name: name, failed: map[int]int{}}
	p.results = append(p.results, res)
	errorf := t.Errorf
	if reason, ok := knownFailures[name]; ok && !full() {
		// Reported (log and report), not failing make test; make chaos
		// fails on it.
		errorf = func(format string, args ...any) {
			msg := fmt.Sprintf(format, args...)
			res.known = append(res.known, msg)
			t.Logf("KNOWN FAILURE, reported but not failing make test (%s): %s", reason, msg)
		}
	}
	if prepare != nil {
		if err := prepare(); err != nil {
			res.skipped = err.Error()
			errorf("%s: prepare: %v", name, err)
			return
		}
	}
	evBefore := make([]int, len(p.users))
	hellosBefore := make([]int, len(p.users))
	wrongBefore := make([]int, len(p.users))
	qrBefore := make([]int, len(p.users))
	for i, u := range p.users {
		u.mu.Lock()
		evBefore[i], hellosBefore[i], wrongBefore[i], qrBefore[i] = len(u.events), u.wsHellos, u.wsWrong, u.sawQR
		u.mu.Unlock()
	}
	statsBefore := make([]pairingStats, len(p.users))
	for i, u := range p.users {
		var err error
		if statsBefore[i], err = p.standinStats(u.sliceID); err != nil {
			errorf("%s: stand-in stats of %s: %v", name, u.email, err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	wg := p.load(ctx)
	// A few healthy steps first, so that the fault lands on live traffic.
	p.waitStable(t, evBefore, time.Now(), 30*time.Second)
	start := time.Now()
	for _, u := range p.users {
		res.inflight += int(u.inflight.Load())
	}
	retriesBefore, retryErr := p.edge.retries()
	catalog := p.watchCatalog(start)
	if err := fault(); err != nil {
		catalog.stop()
		cancel()
		wg.Wait()
		res.skipped = err.Error()
		errorf("%s: fault: %v", name, err)
		return
	}
	t.Logf("%s: fault injected in %s", name, time.Since(start).Round(time.Millisecond))
	ok := p.waitStable(t, evBefore, time.Now(), recoverLimit)
	// The control plane must have converged too: every slice passing in
	// Consul's catalog, measured from the fault like the requests.
	res.catalogBack = -1
	if ok {
		back, err := catalog.converged(start.Add(recoverLimit))
		if err != nil {
			ok = false
			errorf("%s: Consul's catalog did not converge within %s: %v", name, recoverLimit, err)
		} else {
			res.catalogBack = back
		}
	}
	catalog.stop()
	if ok && after != nil {
		res.note = after()
	}
	cancel()
	wg.Wait()
	// Recovery per user: from the fault until the end of the first fast
	// success after its last failed or slow request; the slowest user is
	// the scenario's figure.
	for i, u := range p.users {
		u.mu.Lock()
		evs := append([]event(nil), u.events[evBefore[i]:]...)
		res.wsDrops += max(0, u.wsHellos-hellosBefore[i]) // each new hello is a reconnect
		res.wsWrong += u.wsWrong - wrongBefore[i]
		u.mu.Unlock()
		last := -1
		for j, e := range evs {
			res.requests++
			res.maxLat = max(res.maxLat, e.dur)
			if !e.ok {
				res.failed[e.status]++
				if e.bad != "" {
					res.bad = append(res.bad, u.email+": "+e.bad)
				}
			}
			if (!e.ok || e.dur > slow) && e.at.Add(e.dur).After(start) {
				last = j
			}
		}
		if last >= 0 {
			recovered := false
			for _, e := range evs[last+1:] {
				if e.ok && e.dur <= slow {
					res.requestsBack = max(res.requestsBack, e.at.Add(e.dur).Sub(start))
					recovered = true
					break
				}
			}
			// Failures until the load stopped (they may start after the
			// first stable run, while the note's check waits): not
			// recovered, not "0 s".
			if !recovered {
				ok = false
			}
		}
	}
	res.recovery = max(res.requestsBack, res.catalogBack)
	if after, err := p.edge.retries(); err == nil && retryErr == nil {
		res.edgeRetries = after - retriesBefore
	} else {
		res.edgeRetries = -1
		errorf("%s: reading the edge's access log for its retries: %v %v", name, retryErr, err)
	}
	if !ok {
		res.recovery = -1
		errorf("%s: not every user served again within %s", name, recoverLimit)
	}
	if res.wsWrong > 0 {
		errorf("%s: %d socket.io hellos came from another tenant's slice", name, res.wsWrong)
	}
	// A socket that never comes back is a failure, however the requests
	// fared: give it the time a socket.io client's reconnect takes.
	for _, u := range p.users {
		if !u.waitSocket(30 * time.Second) {
			res.wsNotBack++
			errorf("%s: %s's socket.io WebSocket did not come back within 30 s of recovery", name, u.email)
		}
	}
	// A session that came back in any state but connected would need the
	// customer to scan a QR code again.
	for i, u := range p.users {
		err := u.waitState(slicehub.WAConnected, 60*time.Second)
		u.mu.Lock()
		sawQR := u.sawQR - qrBefore[i]
		u.mu.Unlock()
		// A new slice process starts its stand-in at zero: all its
		// pairings are new.
		now, serr := p.standinStats(u.sliceID)
		paired, resumed := now.Pairings, now.Resumes
		if now.addr == statsBefore[i].addr {
			paired -= statsBefore[i].Pairings
			resumed -= statsBefore[i].Resumes
		}
		res.resumes += resumed
		if serr != nil {
			errorf("%s: stand-in stats of %s: %v", name, u.email, serr)
		}
		res.pairings += paired
		t.Logf("%s: %s stand-in %s pairings %d→%d resumes %d→%d (at %s)", name, u.email, statsBefore[i].addr, statsBefore[i].Pairings, now.Pairings, statsBefore[i].Resumes, now.Resumes, now.addr)
		if err != nil || sawQR > 0 || paired > 0 {
			res.newQR++
			errorf("%s: %s needs a new QR scan: %v (QR state seen %d times, %d new pairings)", name, u.email, err, sawQR, paired)
		}
	}
	// Every row acknowledged so far, those of this fault's window
	// included (the load has stopped): a check that cannot run fails the
	// scenario and shows in the report; it never reads as 0 lost.
	for _, u := range p.users {
		lost, checked, err := u.missing()
		if err != nil {
			res.lostErr = append(res.lostErr, u.email+": "+err.Error())
			errorf("%s: checking %s's acknowledged rows: %v", name, u.email, err)
			continue
		}
		res.checked += checked
		res.lost += len(lost)
		if len(lost) > 0 {
			errorf("%s: %s lost acknowledged contacts %v", name, u.email, lost)
		}
	}
	for _, b := range res.bad {
		errorf("%s: disallowed answer: %s", name, b)
	}
	if lim := target(name); res.recovery > lim {
		msg := fmt.Sprintf("%s: recovery %s (requests back %s, catalog back %s), over its target %s", name, res.recovery, res.requestsBack, res.catalogBack, lim)
		if full() {
			errorf("%s", msg)
		} else {
			// make test runs two packages at once on a CI machine: a time
			// there is no measurement (speed belongs to make chaos and the
			// benchmarks). The report marks it ✗ all the same.
			t.Logf("OVER TARGET, reported (✗ in the report), failing make chaos but not make test: %s", msg)
		}
	}
	if inflightOnly(name) {
		if n := res.failures(); n > res.inflight {
			errorf("%s: %d requests failed, more than the %d in flight at the kill", name, n, res.inflight)
		}
	}
}

// failures counts the failed requests.
func (r *result) failures() int {
	n := 0
	for _, c := range r.failed {
		n += c
	}
	return n
}

// catalogWatch samples, from the fault on, whether every user's slice is
// passing in Consul's catalog. Its figure is symmetrical with the
// requests': the first passing sample after the last failing one (0 when
// no sample failed), not the moment someone happened to look.
type catalogWatch struct {
	start    time.Time
	mu       sync.Mutex
	lastBad  time.Time // the last sample that found a slice missing
	goodBack time.Time // the first passing sample after lastBad
	lastErr  error
	cancel   context.CancelFunc
	done     chan struct{}
}

func (p *platform) watchCatalog(start time.Time) *catalogWatch {
	ctx, cancel := context.WithCancel(context.Background())
	w := &catalogWatch{start: start, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		tk := time.NewTicker(200 * time.Millisecond)
		defer tk.Stop()
		for {
			err := p.allPassing()
			now := time.Now()
			w.mu.Lock()
			if err != nil {
				w.lastBad, w.goodBack, w.lastErr = now, time.Time{}, err
			} else if !w.lastBad.IsZero() && w.goodBack.IsZero() {
				w.goodBack = now
			}
			w.mu.Unlock()
			select {
			case <-ctx.Done():
				return
			case <-tk.C:
			}
		}
	}()
	return w
}

// converged waits until the catalog's latest sample passes, or deadline,
// and returns how long after the fault it came back (0: it never left).
func (w *catalogWatch) converged(deadline time.Time) (time.Duration, error) {
	for {
		w.mu.Lock()
		lastBad, goodBack, lastErr := w.lastBad, w.goodBack, w.lastErr
		w.mu.Unlock()
		switch {
		case lastBad.IsZero():
			return 0, nil
		case !goodBack.IsZero():
			return goodBack.Sub(w.start), nil
		case time.Now().After(deadline):
			return 0, lastErr
		}
		time.Sleep(100 * time.Millisecond) // the sampler's results are read, not waited for
	}
}

func (w *catalogWatch) stop() {
	w.cancel()
	<-w.done
}

// allPassing: every user's slice passing in Consul's catalog now.
func (p *platform) allPassing() error {
	for _, u := range p.users {
		if _, err := p.allocOf(u.sliceID); err != nil {
			return err
		}
	}
	return nil
}

// waitSocket polls until the user's socket.io session is open.
func (u *user) waitSocket(timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	poll := time.NewTicker(100 * time.Millisecond)
	defer poll.Stop()
	for {
		u.mu.Lock()
		up := u.wsUp
		u.mu.Unlock()
		if up {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		<-poll.C
	}
}

// waitStable polls until each user has stableRun consecutive successes
// started after since.
func (p *platform) waitStable(t *testing.T, from []int, since time.Time, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	poll := time.NewTicker(200 * time.Millisecond)
	defer poll.Stop()
	for time.Now().Before(deadline) {
		all := true
		for i, u := range p.users {
			u.mu.Lock()
			run := 0
			for _, e := range u.events[from[i]:] {
				switch {
				case !e.at.After(since):
				case e.ok && e.dur <= slow:
					run++
				default:
					run = 0
				}
			}
			u.mu.Unlock()
			all = all && run >= stableRun
		}
		if all {
			return true
		}
		<-poll.C
	}
	return false
}

func TestChaos(t *testing.T) {
	if testing.Short() {
		t.Skip("SKIPPED with -short: the chaos scenarios need Docker, Chromium and the agents (make test runs the short version, make chaos all of them)")
	}
	st := testsupport.Stack(t)
	bin := filepath.Join(t.TempDir(), "slicehub")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/slicehub").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	dbURL := testsupport.NewDatabase(t)
	args := []string{
		"-database-url", dbURL,
		"-consul-addr", st.Consul.Addr, "-nomad-addr", st.Nomad.Addr,
		"-min-warm", "1", "-max-slices", strconv.Itoa(numUsers() + 2), "-reconcile-interval", "1s",
		"-slice-image", testsupport.SliceImage(t), "-log-format", "text", "-wa-standin", "true",
		// Behind the edge, as in production: TLS there, the edge's
		// X-Forwarded-* believed.
		"-cookie-secure", "true", "-trusted-proxies", "127.0.0.1",
	}
	// Replica b serves the slices' bootstrap, so that killing replica a
	// (scenario 3) leaves restarting slices a gateway to start from.
	b := startGateway(t, bin, "gateway-b", args, "")
	a := startGateway(t, bin, "gateway-a", args, "http://"+b.internal)
	ccfg := consulapi.DefaultConfig()
	ccfg.Address = st.Consul.Addr
	consul, err := consulapi.NewClient(ccfg)
	if err != nil {
		t.Fatal(err)
	}
	p := &platform{gws: []*gateway{a, b}, consul: consul}
	edgeProxy := startEdge(t, p.gws)
	p.edge = edgeProxy
	machine := report.ReadMachine() // before the scenarios: the load average is the machine's
	pgSettings, pgErr := report.ReadPostgres(t.Context(), st.Postgres.URL)

	// Users sign up one after another (each claims the warm slice and the
	// pool refills), then link WhatsApp through the stand-in.
	for i := 0; i < numUsers(); i++ {
		u := newUser(fmt.Sprintf("chaos%d@example.com", i), edgeProxy)
		var body map[string]any
		testsupport.Eventually(t, 180*time.Second, u.email+" signed up", func() (bool, error) {
			var status int
			status, body = u.json("POST", "/auth/signup", map[string]string{"email": u.email, "password": "correct horse battery"})
			return status == 201, fmt.Errorf("signup: %d %v", status, body)
		})
		sl, _ := body["slice"].(map[string]any)
		u.sliceID = fmt.Sprint(sl["id"])
		p.users = append(p.users, u)
	}
	for _, u := range p.users {
		testsupport.Eventually(t, 180*time.Second, u.email+" linked", func() (bool, error) {
			status, b := u.json("POST", "/api/dev/scan", nil)
			return status == 204, fmt.Errorf("scan: %d %v", status, b)
		})
		if err := u.waitState(slicehub.WAConnected, 60*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	// A login is only as durable as the profile on disk: Chromium writes
	// its Local Storage seconds after WhatsApp shows "connected", and the
	// slice snapshots the essentials once they stop changing. A slice
	// killed before that needs a new QR (found by the short version, whose
	// first fault comes seconds after the scan). The scenarios measure the
	// platform, not that window: wait until each slice saved a snapshot
	// and its profile has been quiet for a while.
	for _, u := range p.users {
		var saved int
		var since time.Time
		testsupport.Eventually(t, 3*time.Minute, u.email+"'s login saved in its profile", func() (bool, error) {
			alloc, err := p.allocOf(u.sliceID)
			if err != nil {
				return false, err
			}
			out, err := testsupport.ContainerLogs("slice-" + alloc)
			if err != nil {
				return false, err
			}
			n := bytes.Count(out, []byte("profile snapshot saved"))
			if n != saved {
				saved, since = n, time.Now()
			}
			quiet := time.Since(since)
			return saved > 0 && quiet >= profileQuiet, fmt.Errorf("%d snapshots, the last %s ago", saved, quiet.Round(time.Second))
		})
	}
	wsCtx, cancelWS := context.WithCancel(context.Background())
	var wsWG sync.WaitGroup
	for _, u := range p.users {
		wsWG.Add(1)
		go func() { defer wsWG.Done(); u.socket(wsCtx) }()
	}
	defer func() { cancelWS(); wsWG.Wait() }()
	// The first hellos must not count as reconnects in the first scenario.
	testsupport.Eventually(t, 60*time.Second, "every user's socket.io hello", func() (bool, error) {
		for _, u := range p.users {
			u.mu.Lock()
			n := u.wsHellos
			u.mu.Unlock()
			if n == 0 {
				return false, fmt.Errorf("%s has no hello yet", u.email)
			}
		}
		return true, nil
	})
	ctx := context.Background()
	victim := p.users[0]

	// Every user's slice back in Consul: the platform has converged, not
	// merely kept serving from the gateway's route cache.
	inConsul := func() string {
		t0 := time.Now()
		for _, u := range p.users {
			if _, err := p.waitAlloc(u.sliceID, 90*time.Second); err != nil {
				return "not back in Consul: " + err.Error()
			}
		}
		return fmt.Sprintf("all slices passing in Consul %s after recovery", time.Since(t0).Round(100*time.Millisecond))
	}
	var alloc string
	var killed int
	findTarget := func() (err error) {
		alloc, err = p.waitAlloc(victim.sliceID, 90*time.Second)
		return err
	}

	t.Run("4 nomad agent restart", func(t *testing.T) {
		p.scenario(t, "Nomad agent restarted", nil, func() error { return st.RestartNomad(ctx) }, inConsul)
	})
	t.Run("5 consul agent restart", func(t *testing.T) {
		p.scenario(t, "Consul agent restarted", nil, func() error { return st.RestartConsul(ctx) }, inConsul)
	})
	t.Run("2 chromium killed", func(t *testing.T) {
		p.scenario(t, "Chromium killed in a slice", findTarget, func() error {
			pid, err := chromiumBrowser(alloc)
			if err != nil {
				return err
			}
			killed = pid
			return syscall.Kill(pid, syscall.SIGKILL)
		}, func() string {
			// Served again is not enough: the kill must have been noticed
			// and Chromium started again, logged in from its profile.
			t0 := time.Now()
			deadline := t0.Add(90 * time.Second)
			poll := time.NewTicker(250 * time.Millisecond)
			defer poll.Stop()
			for time.Now().Before(deadline) {
				if pid, err := chromiumBrowser(alloc); err == nil && pid != killed {
					if err := victim.waitState(slicehub.WAConnected, 60*time.Second); err != nil {
						return err.Error()
					}
					return fmt.Sprintf("new Chromium, connected again %s after recovery", time.Since(t0).Round(100*time.Millisecond))
				}
				<-poll.C
			}
			t.Errorf("no new Chromium browser process in slice-%s after the kill", alloc)
			return "Chromium did not come back"
		})
	})
	t.Run("1 slice container killed", func(t *testing.T) {
		p.scenario(t, "slice container kill -9", findTarget, func() error {
			out, err := exec.Command("docker", "kill", "-s", "KILL", "slice-"+alloc).CombinedOutput()
			if err != nil {
				return fmt.Errorf("docker kill: %v: %s", err, out)
			}
			return nil
		}, inConsul)
	})
	t.Run("6 postgres frozen 10s", func(t *testing.T) {
		p.scenario(t, "PostgreSQL stopped 10 s (SIGSTOP)", nil, func() error { return freezePostgres(st, 10*time.Second) }, nil)
	})
	t.Run("9 postgres SIGKILL and restart", func(t *testing.T) {
		var before map[string]string
		p.scenario(t, "PostgreSQL SIGKILL + restart", func() error {
			before = p.sliceInstances()
			return nil
		}, func() error { return st.KillPostgres(ctx) }, func() string {
			after := p.sliceInstances()
			restarted := 0
			for k, v := range before {
				if after[k] != v {
					restarted++
				}
			}
			return fmt.Sprintf("crash recovery from the WAL; %d of %d slices restarted meanwhile (container or allocation replaced, read from Docker)", restarted, len(before))
		})
	})
	t.Run("3 gateway replica SIGKILL", func(t *testing.T) {
		p.scenario(t, "gateway replica SIGKILL (1 of 2)", nil, func() error {
			if err := a.cmd.Process.Kill(); err != nil {
				return err
			}
			<-a.done
			return nil
		}, nil)
	})
	t.Run("7 slice over memory limit", func(t *testing.T) {
		var hog *exec.Cmd
		var hogDone chan error
		var before int
		p.scenario(t, "slice over its memory limit", func() error {
			if err := findTarget(); err != nil {
				return err
			}
			out, err := exec.Command("docker", "inspect", "-f", "{{.HostConfig.Memory}}", "slice-"+alloc).Output()
			if limit, _ := strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64); err != nil || limit <= 0 {
				return fmt.Errorf("slice-%s has no memory limit to exceed (%q, %v)", alloc, out, err)
			}
			before, err = chromiumBrowser(alloc)
			return err
		}, func() error {
			// A process in the slice's cgroup that grows without bound (tail
			// buffers /dev/zero looking for a newline): the cgroup goes over
			// its limit and the kernel's OOM killer picks a victim in it.
			hog = exec.Command("docker", "exec", "slice-"+alloc, "tail", "/dev/zero")
			if err := hog.Start(); err != nil {
				return err
			}
			hogDone = make(chan error, 1)
			go func() { hogDone <- hog.Wait() }()
			return nil
		}, func() string {
			select {
			case err := <-hogDone:
				// The OOM killer may have hit the slice or Chromium rather
				// than the hog: wait until everyone is served again.
				from := make([]int, len(p.users))
				for i, u := range p.users {
					u.mu.Lock()
					from[i] = len(u.events)
					u.mu.Unlock()
				}
				if !p.waitStable(t, from, time.Now(), recoverLimit) {
					t.Errorf("users not served again within %s after the OOM kill", recoverLimit)
				}
				now, cerr := chromiumBrowser(alloc)
				return fmt.Sprintf("hog ended (%v); Chromium %s", err, map[bool]string{true: "kept running", false: fmt.Sprintf("replaced or gone (%v)", cerr)}[cerr == nil && now == before])
			case <-time.After(90 * time.Second):
				_ = hog.Process.Kill()
				t.Errorf("the memory hog in slice-%s was not stopped within 90 s: no memory limit enforced?", alloc)
				return "hog not OOM-killed within 90 s"
			}
		})
	})
	t.Run("8 nomad node drained", func(t *testing.T) {
		var node, key string
		var drained []string
		p.scenario(t, "Nomad node drained (slicectl drain)", func() error {
			if err := findTarget(); err != nil {
				return err
			}
			// The victim's node is drained; every user whose slice is on it
			// moves with it.
			nc, err := st.Nomad.Client()
			if err != nil {
				return err
			}
			drained = nil
			for _, u := range p.users {
				ua, err := p.waitAlloc(u.sliceID, 90*time.Second)
				if err != nil {
					return err
				}
				info, _, err := nc.Allocations().Info(ua, nil)
				if err != nil {
					return err
				}
				if u == victim {
					node = info.NodeName
				}
				if node == "" || info.NodeName == node {
					drained = append(drained, u.email)
				}
			}
			// slicectl talks to the admin API with a key, as an operator
			// would: one made in the gateway's database (bootstrap).
			var out, errb bytes.Buffer
			if code := ops.Execute(ctx, []string{"users", "create-admin", "--database-url", dbURL,
				"--email", "chaos-admin@example.com", "--json"}, &out, &errb); code != 0 {
				return fmt.Errorf("slicectl users create-admin: exit %d: %s", code, errb.String())
			}
			var made struct{ Key string }
			if err := json.Unmarshal(out.Bytes(), &made); err != nil || made.Key == "" {
				return fmt.Errorf("create-admin output: %v", err)
			}
			key = made.Key
			return nil
		}, func() error {
			var out, errb bytes.Buffer
			// Replica b: replica a was killed in scenario 3.
			code := ops.Execute(ctx, []string{"drain", node, "--yes", "--deadline", "2m",
				"--gateway", "http://" + b.public, "--key", key}, &out, &errb)
			t.Logf("slicectl drain %s: exit %d\n%s%s", node, code, out.String(), errb.String())
			if code != 0 {
				return fmt.Errorf("slicectl drain: exit %d: %s", code, errb.String())
			}
			return nil
		}, func() string {
			return fmt.Sprintf("drained %s (users %s) with slicectl; each slice moved to the other Nomad client on this machine, which shares the profiles host volume, so the linked session moved with it; %s",
				node, strings.Join(drained, ", "), inConsul())
		})
	})
	writeReport(t, p, machine, pgSettings, pgErr)
}

// chromiumBrowser finds the Chromium browser process (not a --type= child)
// in the slice's container, from the host's /proc.
func chromiumBrowser(allocID string) (int, error) {
	out, err := exec.Command("docker", "inspect", "-f", "{{.State.Pid}}", "slice-"+allocID).Output()
	if err != nil {
		return 0, fmt.Errorf("docker inspect slice-%s: %w", allocID, err)
	}
	rootPID, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil || rootPID <= 0 {
		return 0, fmt.Errorf("container not running (pid %q)", out)
	}
	for _, pid := range descendants(rootPID) {
		cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		args := string(bytes.ReplaceAll(cmd, []byte{0}, []byte{' '}))
		if strings.Contains(args, "--user-data-dir=") && !strings.Contains(args, "--type=") {
			return pid, nil
		}
	}
	return 0, errors.New("no Chromium browser process in the container")
}

// descendants lists pid and all processes under it, from /proc.
func descendants(pid int) []int {
	children := map[int][]int{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...; comm may hold spaces, so split after ')'.
		fields := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
		if len(fields) > 1 {
			pp, _ := strconv.Atoi(fields[1])
			children[pp] = append(children[pp], p)
		}
	}
	out := []int{}
	queue := []int{pid}
	for len(queue) > 0 && len(out) < 10000 {
		p := queue[0]
		queue = queue[1:]
		out = append(out, p)
		queue = append(queue, children[p]...)
	}
	return out
}

// freezePostgres stops PostgreSQL for d (devenv's SIGSTOP of the
// postmaster and every backend), then continues it: to clients this is a
// database that does not answer.
func freezePostgres(st *devenv.Stack, d time.Duration) error {
	thaw, err := st.FreezePostgres()
	if err != nil {
		return err
	}
	// The fault's duration is the point here, not a synchronisation.
	timer := time.NewTimer(d)
	<-timer.C
	thaw()
	return nil
}

// target is the recovery each scenario must meet: a slice crash under 5 s,
// a gateway replica's death under 2 s (the edge steers around it), the
// rest under 15 s.
func target(name string) time.Duration {
	switch {
	case inflightOnly(name):
		return 2 * time.Second
	case strings.Contains(name, "slice container") || strings.Contains(name, "Chromium"):
		return 5 * time.Second
	}
	return 15 * time.Second
}

// inflightOnly: scenarios that may fail no more requests than were in
// flight when the fault hit (a replica's death loses what it held; the
// edge sends everything after it to the other replica).
func inflightOnly(name string) bool { return strings.Contains(name, "gateway replica") }

// sliceInstances identifies what runs each user's slice: its allocation
// and its container's start time, read from Consul and Docker. A changed
// value is a slice that restarted.
func (p *platform) sliceInstances() map[string]string {
	out := map[string]string{}
	for _, u := range p.users {
		alloc, err := p.allocOf(u.sliceID)
		if err != nil {
			out[u.email] = "not in Consul: " + err.Error()
			continue
		}
		started, err := exec.Command("docker", "inspect", "-f", "{{.State.StartedAt}}", "slice-"+alloc).Output()
		if err != nil {
			out[u.email] = alloc + " (docker inspect: " + err.Error() + ")"
			continue
		}
		out[u.email] = alloc + " " + strings.TrimSpace(string(started))
	}
	return out
}

func writeReport(t *testing.T, p *platform, machine report.Machine, pg map[string]string, pgErr error) {
	r := report.New("chaos", time.Now())
	var sb strings.Builder
	mode := "The full suite (`make chaos`)"
	if !full() {
		mode = "The short version that `make test` runs (SLICEHUB_CHAOS unset: every scenario, one user)"
	}
	users := fmt.Sprintf("%d users", len(p.users))
	if len(p.users) == 1 {
		users = "1 user"
	}
	fmt.Fprintf(&sb, "# Chaos report %s\n\n", time.Now().UTC().Format("2006-01-02 15:04 UTC"))
	fmt.Fprintf(&sb, "%s. %s, each a whoami + a CRM contact write every %s, plus a socket.io WebSocket, all through the edge: nginx with the production configuration (ops/nginx/slicehub.conf.ctmpl rendered with both replicas as upstreams, TLS); two gateway replicas; two Nomad client nodes on one machine; docker driver with Chromium and the stand-in WhatsApp page. The client never retries; the only retries are nginx's (`proxy_next_upstream error timeout`: idempotent requests, or requests not yet sent, go to the next replica), as in production.\n\n", mode, users, tick)
	r.Printf("%s", sb.String())
	r.Environment(machine, pg, pgErr)
	sb.Reset()
	sb.WriteString("| scenario | recovery (target) | requests back / catalog back | requests | in flight at fault | failed (by status) | max latency | disallowed answers | rows lost / checked | WebSocket cross-tenant hellos | sockets not back | new QR needed (stand-in pairings Δ / resumes Δ) | WebSocket reconnects | edge retries | note |\n")
	sb.WriteString("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	var bars []report.Bar
	for _, r := range p.results {
		if r.skipped != "" && r.requests == 0 {
			fmt.Fprintf(&sb, "| %s | skipped: %s | | | | | | | | | | | | | |\n", r.name, r.skipped)
			continue
		}
		rec := r.recovery.Round(100 * time.Millisecond).String()
		if r.recovery < 0 {
			rec = fmt.Sprintf("> %s", recoverLimit)
		}
		verdict := "✓"
		if r.recovery < 0 || r.recovery > target(r.name) {
			verdict = "✗ over target"
		}
		bar := report.Bar{Label: r.name, Value: r.recovery.Seconds(), Mark: target(r.name).Seconds(), Note: verdict}
		if r.recovery < 0 {
			bar.Value, bar.Note = recoverLimit.Seconds(), "not recovered"
		}
		bars = append(bars, bar)
		rec = fmt.Sprintf("%s (< %s %s)", rec, target(r.name), verdict)
		catalog := r.catalogBack.Round(100 * time.Millisecond).String()
		if r.catalogBack < 0 {
			catalog = "not converged"
		}
		var codes []int
		for c := range r.failed {
			codes = append(codes, c)
		}
		sort.Ints(codes)
		var fs []string
		for _, c := range codes {
			label := strconv.Itoa(c)
			if c == 0 {
				label = "no answer"
			}
			fs = append(fs, fmt.Sprintf("%s×%d", label, r.failed[c]))
		}
		failed := "0"
		if len(fs) > 0 {
			failed = strings.Join(fs, ", ")
		}
		if inflightOnly(r.name) {
			mark := "✓"
			if r.failures() > r.inflight {
				mark = "✗"
			}
			failed += fmt.Sprintf(" (target: ≤ %d in flight %s)", r.inflight, mark)
		}
		lost := fmt.Sprintf("%d / %d", r.lost, r.checked)
		if len(r.lostErr) > 0 {
			lost = fmt.Sprintf("**unknown: %d check(s) failed** (%s); %d / %d of the rest", len(r.lostErr), strings.Join(r.lostErr, "; "), r.lost, r.checked)
		}
		retries := strconv.Itoa(r.edgeRetries)
		if r.edgeRetries < 0 {
			retries = "unknown"
		}
		fmt.Fprintf(&sb, "| %s | %s | %s / %s | %d | %d | %s | %s | %d | %s | %d | %d | %s | %d | %s | %s |\n", r.name, rec,
			r.requestsBack.Round(100*time.Millisecond), catalog, r.requests, r.inflight, failed, r.maxLat.Round(time.Millisecond), len(r.bad), lost,
			r.wsWrong, r.wsNotBack, fmt.Sprintf("%d (%d / %d)", r.newQR, r.pairings, r.resumes), r.wsDrops, retries, r.note)
	}
	var known []string
	for _, r := range p.results {
		for _, k := range r.known {
			known = append(known, fmt.Sprintf("- %s (%s): %s", r.name, knownFailures[r.name], k))
		}
	}
	if len(known) > 0 {
		fmt.Fprintf(&sb, "\n**Known failures** (defects found by this suite and not yet fixed; they fail `make chaos`, and are reported here without failing `make test`):\n\n%s\n", strings.Join(known, "\n"))
	}
	if !full() {
		sb.WriteString("\nIn this short version a recovery over its target is marked ✗ and logged, and fails only `make chaos`: `make test` runs two test packages at once, so its times are not measurements. Every other check (rows lost, disallowed answers, cross-tenant answers, sockets not back, failures beyond those in flight) fails `make test`.\n")
	}
	sb.WriteString("\nRecovery: the later of (a) from the fault until the slowest user's first fast (under 2 s) success after its last failed or slow request (0 when none was), and (b) from the fault until every user's slice is passing in Consul's catalog again (the control plane converged, not only the gateway's route cache serving). A request is a whoami (tenant checked) followed by a contact write; a 201 is an acknowledged row. Rows lost: every row acknowledged since the start of the run, those written during this fault included, checked after the scenario's recovery with the load stopped; a check that could not run says so instead of a count. In flight at fault: the requests the users had sent and not yet seen answered when the fault was injected (all replicas; an upper bound on those held by a killed replica). Failures allowed: 502/503/504 with a JSON error body, or no answer from the edge; anything else, or an answer from another tenant's slice, is disallowed. Edge retries: requests nginx sent to a second replica during the scenario, from its access log (its upstream field lists every try); the client itself never retries. Sockets not back: users whose socket.io WebSocket was not open again 30 s after recovery. New QR: users whose WhatsApp state showed a QR code at any sample during the scenario, was not `connected` within 60 s after recovery, or whose slice's stand-in WhatsApp page handed out a new pairing (its /stats, read from the host). A resume is Chromium loading the page again and finding the linked session in its profile: the evidence that a browser restart really happened and needed no QR. Memory limit: a process in the slice's cgroup grows until the cgroup's limit; the kernel's OOM killer picks the victim, and the note says which. Node drain: `slicectl drain` moves the node's slices two at a time to the other Nomad client; both clients run on this machine and share the `slice-profiles` host path, which is why the Chromium profile (and the linked session) survives the move here. On separate hosts the profile must live on shared storage (NFS, a CSI volume) for the same result.\n\n")
	sb.WriteString("PostgreSQL SIGKILL + restart: the postmaster and every backend are killed at once (no shutdown checkpoint) and PostgreSQL restarts on the same data directory, replaying its WAL. 0 acknowledged rows lost there shows that a commit is acknowledged only once its WAL record is written (synchronous_commit, with the settings stated above). It does not test fsync: a killed process leaves the kernel's page cache intact, and only a power loss or a kernel crash would lose what was written but not flushed. The note says how many slices restarted meanwhile (each slice's health check pings its own database, so PostgreSQL's absence can fail every slice's check).\n")
	r.Printf("%s", sb.String())
	r.Chart("recovery", "Recovery time per scenario against its target (the mark)", report.Bars("Recovery per scenario (mark: target)", "s", bars))
	t.Log("\n" + r.Markdown())
	// The full suite's report is the published one; the short run under
	// make test leaves its own in test-artifacts, so that CI can keep it
	// without touching docs/.
	dir := filepath.Join(root(), "test-artifacts")
	if full() {
		dir = report.Dir(root())
	}
	path, err := r.Write(dir)
	if err != nil {
		t.Error(err)
	}
	t.Logf("report: %s", path)
}
