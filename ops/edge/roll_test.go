package edge_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fasthttp/websocket"
	consulapi "github.com/hashicorp/consul/api"

	"github.com/slicehub/slicehub/jobs"
	"github.com/slicehub/slicehub/testsupport"
)

// testRollingRestart rolls both gateway replicas (a new release, which the
// update block deploys one replica at a time) while every user holds
// socket.io WebSockets through nginx and polls its slice over HTTP. No
// session may be lost, and every WebSocket must come back to its own slice.
func testRollingRestart(t *testing.T, p *production, bs []*browser) {
	nc := p.nomad
	old, _, err := nc.Jobs().Allocations("gateway", false, nil)
	if err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	var tabs []*tab
	for _, b := range bs {
		for range tabsPerUser {
			tb := &tab{b: b, closeCodes: map[int]int{}}
			tabs = append(tabs, tb)
			wg.Go(func() { tb.run(ctx) })
		}
	}
	pollers := make([]*poller, len(bs))
	for i, b := range bs {
		pollers[i] = &poller{b: b, failures: map[string]int{}}
		wg.Go(func() { pollers[i].run(ctx) })
	}
	testsupport.Eventually(t, 30*time.Second, fmt.Sprintf("%d socket.io WebSockets through nginx", len(tabs)), func() (bool, error) {
		n := 0
		for _, tb := range tabs {
			if tb.snapshot().connected {
				n++
			}
		}
		return n == len(tabs), fmt.Errorf("%d connected", n)
	})

	t0 := time.Now()
	vars := maps.Clone(p.gatewayVars)
	vars["release"] = "v2"
	version := registerJob(t, nc, jobs.Gateway, vars)
	waitDeployment(t, nc, "gateway", version, 150*time.Second)
	rolled := time.Since(t0)

	// Both replicas of the old release are gone, both of the new one serve.
	// Each old one drained and exited by itself (exit code 0) after SIGTERM,
	// rather than being killed at kill_timeout.
	var drains []string
	for _, a := range old {
		info, _, err := nc.Allocations().Info(a.ID, nil)
		if err != nil {
			t.Fatal(err)
		}
		if info.ClientStatus == "running" || info.ClientStatus == "pending" {
			t.Errorf("old gateway allocation %s is still %s after the deployment", a.ID[:8], info.ClientStatus)
			continue
		}
		var killing, exited time.Time
		exitCode := -1
		for _, ev := range info.TaskStates["gateway"].Events {
			switch ev.Type {
			case "Killing":
				killing = time.Unix(0, ev.Time)
			case "Terminated":
				exited, exitCode = time.Unix(0, ev.Time), ev.ExitCode
			}
		}
		if exitCode != 0 {
			t.Errorf("old gateway allocation %s: exit code %d after SIGTERM; want 0 (a graceful drain)", a.ID[:8], exitCode)
		}
		if !killing.IsZero() && !exited.IsZero() {
			drains = append(drains, exited.Sub(killing).Round(time.Millisecond).String())
		}
	}
	t.Logf("old replicas: SIGTERM to exit in %v", drains)
	entries, _, err := p.consul.Health().Service("gateway", "", true, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 2 || !allTagged(entries, "release-v2") {
		t.Errorf("Consul after the roll: %d passing gateway instances (%v); want 2, all release-v2", len(entries), tagsOf(entries))
	}

	// Every WebSocket was dropped at least once (both old replicas stopped)
	// and is back, on its own slice.
	testsupport.Eventually(t, 30*time.Second, "every WebSocket reconnected after the roll", func() (bool, error) {
		for i, tb := range tabs {
			s := tb.snapshot()
			if !s.connected || len(s.reconnects) == 0 {
				return false, fmt.Errorf("tab %d of %s: connected %v, %d reconnects, %d failed dials (last: %v)",
					i, tb.b.email, s.connected, len(s.reconnects), s.failedDials, s.lastErr)
			}
		}
		return true, nil
	})
	cancel()
	wg.Wait()

	var recon []time.Duration
	codes := map[int]int{}
	failedDials := 0
	for i, tb := range tabs {
		s := tb.snapshot()
		if s.wrongSlice > 0 {
			t.Errorf("tab %d of %s reached another slice %d times", i, tb.b.email, s.wrongSlice)
		}
		recon = append(recon, s.reconnects...)
		for c, n := range s.closeCodes {
			codes[c] += n
		}
		failedDials += s.failedDials
	}
	slices.Sort(recon)
	t.Logf("roll of 2 replicas took %s; %d WebSockets, %d reconnects: min %s, median %s, p95 %s, max %s; close codes %v; %d failed handshakes on the way",
		rolled.Round(100*time.Millisecond), len(tabs), len(recon), recon[0].Round(time.Millisecond),
		recon[len(recon)/2].Round(time.Millisecond), recon[len(recon)*95/100].Round(time.Millisecond),
		recon[len(recon)-1].Round(time.Millisecond), codes, failedDials)
	for c := range codes {
		// 1001 is the gateway's drain; anything else (1006 above all: the
		// connection cut without a close frame) means it was not graceful.
		if c != websocket.CloseGoingAway {
			t.Errorf("WebSockets closed with code %d (%d times); want only 1001 (going away) from a draining gateway", c, codes[c])
		}
	}

	okPolls := 0
	for _, pl := range pollers {
		okPolls += pl.ok
		if len(pl.failures) > 0 {
			t.Errorf("%s: GET /api/whoami during the roll: %d answered by its slice, failures %v", pl.b.email, pl.ok, pl.failures)
		}
	}
	t.Logf("GET /api/whoami during the roll: %d answered by the right slice", okPolls)
	logEdgeRetries(t, p, t0)

	// Sessions are server-side: every cookie still works, on its own slice.
	for _, b := range bs {
		if status, body, err := b.do(t.Context(), "GET", "/auth/me", nil); err != nil || status != http.StatusOK {
			t.Errorf("%s: GET /auth/me after the roll = %d %v %v; want 200 (session kept)", b.email, status, body, err)
		}
		if status, who := b.whoami(t); status != http.StatusOK || who != b.sliceID {
			t.Errorf("%s: GET /api/whoami after the roll = %d from slice %q; want 200 from %s", b.email, status, who, b.sliceID)
		}
	}
}

func allTagged(entries []*consulapi.ServiceEntry, tag string) bool {
	for _, e := range entries {
		if !slices.Contains(e.Service.Tags, tag) {
			return false
		}
	}
	return true
}

func tagsOf(entries []*consulapi.ServiceEntry) [][]string {
	var out [][]string
	for _, e := range entries {
		out = append(out, e.Service.Tags)
	}
	return out
}

// tab is one browser tab running the socket.io client: it holds a
// WebSocket, answers pings, and when the connection ends it reconnects
// with a randomized, growing delay, as socket.io-client does (with shorter
// delays than its 1 s default, to keep the test short).
type tab struct {
	b *browser

	mu          sync.Mutex
	connected   bool
	reconnects  []time.Duration // from losing a connection to the next hello
	closeCodes  map[int]int     // how connections ended
	wrongSlice  int
	failedDials int
	lastErr     error
}

type tabState struct {
	connected   bool
	reconnects  []time.Duration
	closeCodes  map[int]int
	wrongSlice  int
	failedDials int
	lastErr     error
}

func (tb *tab) snapshot() tabState {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	return tabState{tb.connected, slices.Clone(tb.reconnects), maps.Clone(tb.closeCodes), tb.wrongSlice, tb.failedDials, tb.lastErr}
}

func (tb *tab) run(ctx context.Context) {
	var lostAt time.Time
	attempt := 0
	for ctx.Err() == nil {
		conn, id, err := dialSocketIO(ctx, tb.b, 20*time.Second)
		if err != nil {
			tb.mu.Lock()
			tb.failedDials++
			tb.lastErr = err
			tb.mu.Unlock()
			attempt++
			if !pause(ctx, backoff(attempt)) {
				return
			}
			continue
		}
		attempt = 0
		tb.mu.Lock()
		if id != tb.b.sliceID {
			tb.wrongSlice++
		}
		if !lostAt.IsZero() {
			tb.reconnects = append(tb.reconnects, time.Since(lostAt))
		}
		tb.connected = true
		tb.mu.Unlock()

		code := hold(ctx, conn)
		if ctx.Err() != nil {
			return
		}
		lostAt = time.Now()
		tb.mu.Lock()
		tb.connected = false
		tb.closeCodes[code]++
		tb.mu.Unlock()
		if !pause(ctx, backoff(0)) {
			return
		}
	}
}

// backoff is socket.io-client's: base * 2^attempt, capped, randomized by
// ±50%; here with a 100 ms base and a 2 s cap.
func backoff(attempt int) time.Duration {
	d := 100 * time.Millisecond << min(attempt, 5)
	d = min(d, 2*time.Second)
	return time.Duration(float64(d) * (0.5 + rand.Float64()))
}

// pause waits d, or less if ctx ends; it reports whether to go on. This is
// the client's reconnection delay, not a synchronisation.
func pause(ctx context.Context, d time.Duration) bool {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-timer.C:
		return true
	}
}

// dialSocketIO opens an Engine.IO v4 WebSocket through nginx with the
// browser's cookie, joins the default namespace and returns the connection
// with the slice id of the "hello" event.
func dialSocketIO(ctx context.Context, b *browser, timeout time.Duration) (*websocket.Conn, string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	local := &net.Dialer{LocalAddr: &net.TCPAddr{IP: b.ip}}
	d := websocket.Dialer{
		NetDialContext:   local.DialContext,
		TLSClientConfig:  &tls.Config{RootCAs: b.p.roots},
		HandshakeTimeout: timeout,
	}
	u := "wss" + strings.TrimPrefix(b.p.base, "https") + "/socket.io/?EIO=4&transport=websocket"
	hdr := http.Header{}
	hdr.Set("Origin", b.p.base)
	hdr.Set("Cookie", b.cookieHeader())
	conn, resp, err := d.DialContext(ctx, u, hdr)
	if err != nil {
		if resp != nil {
			return nil, "", fmt.Errorf("handshake: %w (status %d)", err, resp.StatusCode)
		}
		return nil, "", fmt.Errorf("handshake: %w", err)
	}
	deadline, _ := ctx.Deadline()
	_ = conn.SetReadDeadline(deadline)
	id, err := awaitHello(conn)
	if err != nil {
		conn.Close()
		return nil, "", err
	}
	return conn, id, nil
}

func awaitHello(conn *websocket.Conn) (string, error) {
	_, open, err := conn.ReadMessage()
	if err != nil {
		return "", fmt.Errorf("read open: %w", err)
	}
	if !strings.HasPrefix(string(open), "0{") {
		return "", fmt.Errorf("first Engine.IO packet %q; want open (0{...})", open)
	}
	if err := conn.WriteMessage(websocket.TextMessage, []byte("40")); err != nil {
		return "", err
	}
	for range 20 {
		_, msg, err := conn.ReadMessage()
		if err != nil {
			return "", fmt.Errorf("waiting for hello: %w", err)
		}
		switch m := string(msg); {
		case m == "2": // Engine.IO ping
			if err := conn.WriteMessage(websocket.TextMessage, []byte("3")); err != nil {
				return "", err
			}
		case strings.HasPrefix(m, `42["hello"`):
			var ev []json.RawMessage
			if err := json.Unmarshal([]byte(m[2:]), &ev); err != nil || len(ev) < 2 {
				return "", fmt.Errorf("hello event %q: %v", m, err)
			}
			var hello struct {
				SliceID string `json:"slice_id"`
			}
			if err := json.Unmarshal(ev[1], &hello); err != nil {
				return "", err
			}
			return hello.SliceID, nil
		}
	}
	return "", errors.New("no hello event in the first 20 packets")
}

// hold keeps the connection alive (answering Engine.IO pings) until it ends
// or ctx does, and returns its close code; 1006 when it ended without a
// close frame.
func hold(ctx context.Context, conn *websocket.Conn) int {
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	defer conn.Close()
	for {
		// The slice pings every 25 s; a silence twice that long is a dead
		// connection, as socket.io's pingTimeout would decide.
		_ = conn.SetReadDeadline(time.Now().Add(60 * time.Second))
		_, msg, err := conn.ReadMessage()
		if err != nil {
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				return ce.Code
			}
			return websocket.CloseAbnormalClosure
		}
		if string(msg) == "2" {
			if err := conn.WriteMessage(websocket.TextMessage, []byte("3")); err != nil {
				return websocket.CloseAbnormalClosure
			}
		}
	}
}

// socketIOHello connects once and returns the hello's slice id.
func socketIOHello(ctx context.Context, b *browser, timeout time.Duration) (string, error) {
	conn, id, err := dialSocketIO(ctx, b, timeout)
	if err != nil {
		return "", err
	}
	conn.Close()
	return id, nil
}

// poller is the HTTP side of the load: one browser asking its slice who it
// is ten times a second, through nginx and whichever replica is up.
type poller struct {
	b        *browser
	ok       int
	failures map[string]int // by kind; read after run returns
}

func (pl *poller) run(ctx context.Context) {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		status, body, err := pl.b.do(ctx, "GET", "/api/whoami", nil)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			pl.failures["error: "+err.Error()]++
		case status != http.StatusOK:
			pl.failures[fmt.Sprintf("%d %v", status, body["code"])]++
		case fmt.Sprint(body["slice_id"]) != pl.b.sliceID:
			pl.failures["another slice"]++
		default:
			pl.ok++
		}
	}
}

// logEdgeRetries reports, from nginx's access log, how many requests since
// start nginx passed to a second replica (the first was gone) and how many
// it answered with a 5xx: the part of the rolling deploy a browser never
// sees.
func logEdgeRetries(t *testing.T, p *production, since time.Time) {
	allocs, _, err := p.nomad.Jobs().Allocations("edge", false, nil)
	if err != nil || len(allocs) == 0 {
		t.Logf("no edge allocation to read the access log of (%v)", err)
		return
	}
	path := filepath.Join(testsupport.Stack(t).Nomad.DataDir, "alloc", allocs[0].ID, "alloc", "logs", "nginx.stdout.0")
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Logf("edge access log: %v", err)
		return
	}
	var total, retried, errs5xx int
	for _, line := range strings.Split(string(raw), "\n") {
		// 127.0.0.10 [2026-11-25T21:28:44+00:00] "GET ..." 200 ... upstream=a:1, b:2 status=502, 200 ...
		open, end := strings.IndexByte(line, '['), strings.IndexByte(line, ']')
		if open < 0 || end < open {
			continue
		}
		at, err := time.Parse(time.RFC3339, line[open+1:end])
		if err != nil || at.Before(since.Truncate(time.Second)) {
			continue
		}
		up := strings.Index(line, "upstream=")
		if up < 0 {
			continue
		}
		total++
		if strings.Contains(strings.SplitN(line[up:], " status=", 2)[0], ", ") {
			retried++
		}
		// After the quoted request line: the status.
		if f := strings.Fields(line[strings.LastIndexByte(line[:up], '"')+1:]); len(f) > 0 && strings.HasPrefix(f[0], "5") {
			errs5xx++
		}
	}
	t.Logf("nginx during the roll: %d requests, %d passed on to a second replica, %d answered 5xx", total, retried, errs5xx)
}
