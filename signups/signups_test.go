// Package signups measures a burst of simultaneous signups against the
// real platform (issue 17): the gateway binary, Nomad with the docker
// driver, real slices whose Chromium loads the stand-in WhatsApp page with
// a weight profile, and admission control on. Each user signs up as a
// browser does (the form, its CSRF token), follows the workspace page's
// event stream until a QR code is shown (noting its place in line while
// queued), scans it (the stand-in's dev scan) and waits until connected.
// The host's memory is sampled every second.
//
// `make signups` (SLICEHUB_SIGNUPS=1) runs it; SLICEHUB_SIGNUPS_REPORT=1
// writes docs/reports/signups-YYYY-MM-DD.md (otherwise the report goes to
// test-artifacts/signups and the test's log). Knobs:
// SLICEHUB_SIGNUPS_USERS (50), SLICEHUB_SIGNUPS_WARM (10),
// SLICEHUB_SIGNUPS_PROFILE (typical), SLICEHUB_SIGNUPS_DISPATCHES (3),
// SLICEHUB_SIGNUPS_PAIRINGS (4), SLICEHUB_SIGNUPS_IMPORTS (2),
// SLICEHUB_SIGNUPS_GATEWAY_ARGS (more gateway flags, e.g. the slices'
// reservations, which bound what Nomad places on the node).
package signups

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	nomadapi "github.com/hashicorp/nomad/api"
	"github.com/jackc/pgx/v5"

	"github.com/slicehub/slicehub/gateway/pages"
	"github.com/slicehub/slicehub/internal/report"
	"github.com/slicehub/slicehub/slice/standin"
	"github.com/slicehub/slicehub/testsupport"
)

func enabled() bool { return os.Getenv("SLICEHUB_SIGNUPS") == "1" }

func TestMain(m *testing.M) {
	flag.Parse()
	if !enabled() || testing.Short() {
		// The test skips loudly; starting the agents for nothing would
		// cost a minute.
		os.Exit(m.Run())
	}
	testsupport.Main(m, testsupport.Options{Docker: true, Durable: true})
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// memFloor: the run aborts when MemAvailable falls under it, so that a
// burst cannot take a shared machine into swap or the OOM killer.
const memFloor = 1.5 * (1 << 30)

// signup is one user's run, times from the moment the signup form was sent.
type signup struct {
	email         string
	sliceID       int64
	qr, connected time.Duration // 0: not reached
	queued        map[string]time.Duration
	maxPlace      map[string]int
	err           error
}

func TestSignups(t *testing.T) {
	if !enabled() {
		t.Skip("SKIPPED LOUDLY: TestSignups runs only with SLICEHUB_SIGNUPS=1 (make signups): it starts dozens of docker slices at once")
	}
	users := envInt("SLICEHUB_SIGNUPS_USERS", 50)
	warm := envInt("SLICEHUB_SIGNUPS_WARM", 10)
	caps := map[string]int{
		"dispatches": envInt("SLICEHUB_SIGNUPS_DISPATCHES", 3),
		"pairings":   envInt("SLICEHUB_SIGNUPS_PAIRINGS", 4),
		"imports":    envInt("SLICEHUB_SIGNUPS_IMPORTS", 2),
	}
	profile := os.Getenv("SLICEHUB_SIGNUPS_PROFILE")
	if profile == "" {
		profile = "typical"
	}
	if _, err := standin.ParseWeight(profile); err != nil {
		t.Fatal(err)
	}
	st := testsupport.Stack(t)
	machine := report.ReadMachine()
	pg, pgErr := report.ReadPostgres(t.Context(), st.Postgres.URL)
	bin := filepath.Join(t.TempDir(), "slicehub")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/slicehub").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	dbURL := testsupport.NewDatabase(t)
	args := []string{
		"-database-url", dbURL, "-consul-addr", st.Consul.Addr, "-nomad-addr", st.Nomad.Addr,
		"-min-warm", strconv.Itoa(warm), "-max-slices", strconv.Itoa(users + warm), "-reconcile-interval", "1s",
		"-slice-image", testsupport.SliceImage(t), "-log-format", "text",
		"-wa-standin", "true", "-wa-standin-weight", profile,
		// Users come from many addresses: the test sends X-Forwarded-For
		// as a proxy would, so the per-address signup throttle sees 50
		// visitors, not one.
		"-trusted-proxies", "127.0.0.1",
		"-admit-dispatches", strconv.Itoa(caps["dispatches"]), "-admit-pairings", strconv.Itoa(caps["pairings"]),
		"-admit-imports", strconv.Itoa(caps["imports"]),
	}
	// Anything else the run needs, e.g. the slices' reservations
	// (-slice-memory-mb ...): Nomad places only what they allow.
	extra := strings.Fields(os.Getenv("SLICEHUB_SIGNUPS_GATEWAY_ARGS"))
	args = append(args, extra...)
	gw := startGateway(t, bin, args)

	// The warm pool is full before the burst: min_warm slices healthy.
	t0 := time.Now()
	testsupport.Eventually(t, 15*time.Minute, fmt.Sprintf("%d warm slices", warm), func() (bool, error) {
		n, err := countWarm(t.Context(), dbURL)
		return n >= warm, fmt.Errorf("%d warm, %v", n, err)
	})
	warmUp := time.Since(t0)
	placement := readPlacement(st.Nomad.Client)
	nomad, err := st.Nomad.Client()
	if err != nil {
		t.Fatal(err)
	}
	mon := startMonitor(nomad)
	defer mon.stop()

	ctx, cancel := context.WithTimeout(t.Context(), 40*time.Minute)
	defer cancel()
	go func() { // the guard
		select {
		case <-mon.low:
			cancel()
		case <-ctx.Done():
		}
	}()
	runs := make([]*signup, users)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range runs {
		runs[i] = &signup{email: fmt.Sprintf("burst%d@example.com", i), queued: map[string]time.Duration{}, maxPlace: map[string]int{}}
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			runs[i].err = runUser(ctx, gw, runs[i], fmt.Sprintf("10.77.%d.%d", i/250, i%250+1))
		}()
	}
	began := time.Now()
	close(start)
	wg.Wait()
	elapsed := time.Since(began)
	mon.stop()
	aborted := mon.aborted()

	path := writeReport(t, reportInput{machine: machine, pg: pg, pgErr: pgErr, users: users, warm: warm, caps: caps,
		profile: profile, extra: extra, placement: placement, warmUp: warmUp, elapsed: elapsed, runs: runs, mem: mon.result(), aborted: aborted})
	t.Logf("report: %s", path)
	if aborted != "" {
		t.Fatalf("aborted: %s", aborted)
	}
	for _, r := range runs {
		if r.err != nil {
			t.Errorf("%s (slice %d): %v", r.email, r.sliceID, r.err)
		}
	}
}

// readPlacement says what Nomad can place: the nodes' CPU and memory and
// the slice job's reservations, so that a run cut short by placement is
// told from one cut short by the platform.
func readPlacement(client func() (*nomadapi.Client, error)) string {
	c, err := client()
	if err != nil {
		return "unknown (" + err.Error() + ")"
	}
	var parts []string
	stubs, _, err := c.Nodes().List(nil)
	if err != nil {
		return "unknown (" + err.Error() + ")"
	}
	for _, s := range stubs {
		n, _, err := c.Nodes().Info(s.ID, nil)
		if err != nil || n.NodeResources == nil {
			continue
		}
		cpu, mem := n.NodeResources.Cpu.CpuShares, n.NodeResources.Memory.MemoryMB
		if r := n.ReservedResources; r != nil {
			cpu -= int64(r.Cpu.CpuShares)
			mem -= int64(r.Memory.MemoryMB)
		}
		parts = append(parts, fmt.Sprintf("node %s allocatable %d MHz, %d MiB", n.Name, cpu, mem))
	}
	job, _, err := c.Jobs().Info("slice", nil)
	if err == nil && len(job.TaskGroups) > 0 && len(job.TaskGroups[0].Tasks) > 0 {
		res := job.TaskGroups[0].Tasks[0].Resources
		if res != nil && res.CPU != nil && res.MemoryMB != nil {
			mx := 0
			if res.MemoryMaxMB != nil {
				mx = *res.MemoryMaxMB
			}
			parts = append(parts, fmt.Sprintf("a slice reserves %d MHz and %d MiB (memory_max %d MiB)", *res.CPU, *res.MemoryMB, mx))
		}
	}
	return strings.Join(parts, "; ") + "."
}

func countWarm(ctx context.Context, dbURL string) (int, error) {
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return 0, err
	}
	defer conn.Close(context.Background())
	var n int
	err = conn.QueryRow(ctx, `SELECT count(*) FROM slices WHERE state = 'warm'`).Scan(&n)
	return n, err
}

// gateway is the `slicehub serve` process.
type gateway struct {
	base string // http://host:port
	cmd  *exec.Cmd
	done chan struct{}
}

// startGateway starts `slicehub serve` with its own bootstrap listener
// (as chaos/chaos_test.go does, with one replica) and waits until it
// listens.
func startGateway(t *testing.T, bin string, args []string) *gateway {
	t.Helper()
	public, internal := testsupport.FreeAddr(t), testsupport.FreeAddr(t)
	g := &gateway{base: "http://" + public, done: make(chan struct{})}
	g.cmd = exec.Command(bin, append([]string{"serve", "-addr", public, "-internal-addr", internal, "-bootstrap-url", "http://" + internal}, args...)...)
	logf, err := os.Create(filepath.Join(t.TempDir(), "gateway.log"))
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
			t.Logf("gateway log tail:\n%s", b)
		}
	})
	testsupport.Eventually(t, 60*time.Second, "the gateway listening", func() (bool, error) {
		select {
		case <-g.done:
			return false, fmt.Errorf("the gateway exited: %v", g.cmd.ProcessState)
		default:
		}
		c, err := net.DialTimeout("tcp", public, time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil, err
	})
	return g
}

// forwarded is a browser behind a proxy that names it: every request
// carries its address in X-Forwarded-For, and an Origin on posts.
type forwarded struct {
	addr, origin string
	next         http.RoundTripper
}

func (f forwarded) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("X-Forwarded-For", f.addr)
	if r.Method == http.MethodPost {
		r.Header.Set("Origin", f.origin)
	}
	return f.next.RoundTrip(r)
}

var csrfInput = regexp.MustCompile(`name="csrf_token" value="([A-Za-z0-9_-]{43})"`)

// runUser is one browser: the sign-up form, then the workspace page's
// event stream until connected, scanning the first QR code it is shown.
func runUser(ctx context.Context, gw *gateway, r *signup, addr string) error {
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, Transport: forwarded{addr: addr, origin: gw.base, next: &http.Transport{MaxIdleConnsPerHost: 2}}}
	get := func(path string) (string, error) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, gw.base+path, nil)
		resp, err := c.Do(req)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			return "", fmt.Errorf("GET %s: %d %.200s", path, resp.StatusCode, b)
		}
		return string(b), nil
	}
	page, err := get("/signup")
	if err != nil {
		return err
	}
	m := csrfInput.FindStringSubmatch(page)
	if m == nil {
		return errors.New("no CSRF token in the sign-up form")
	}
	token := m[1]
	form := url.Values{"email": {r.email}, "password": {"correct horse battery"}, "csrf_token": {token}}
	claimed := time.Now() // the signup claims a slice
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, gw.base+"/signup", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := c.Do(req) // follows the redirect to /workspace
	if err != nil {
		return err
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Request.URL.Path != "/workspace" {
		return fmt.Errorf("sign-up: %d at %s: %.300s", resp.StatusCode, resp.Request.URL.Path, b)
	}

	var last pages.WorkspaceStatus
	var lastAt time.Time
	scanned := false
	for ctx.Err() == nil {
		// The stream ends now and then (WorkspaceMaxStream); the browser
		// reconnects after its retry, and so does this.
		err := followEvents(ctx, c, gw.base, func(st pages.WorkspaceStatus) bool {
			now := time.Now()
			if last.Queued != "" {
				r.queued[last.Queued] += now.Sub(lastAt)
			}
			last, lastAt = st, now
			r.sliceID = st.SliceID
			if st.Queued != "" {
				r.maxPlace[st.Queued] = max(r.maxPlace[st.Queued], st.QueuePosition)
			}
			if st.QR != nil && r.qr == 0 {
				r.qr = now.Sub(claimed)
			}
			if st.Phase == "connected" {
				r.connected = now.Sub(claimed)
				return true
			}
			if st.QR != nil && !scanned {
				scanned = devScan(ctx, c, gw.base, token) == nil // the next code is scanned if this failed
			}
			return false
		})
		if r.connected > 0 {
			return nil
		}
		if err != nil && ctx.Err() == nil {
			wait := time.NewTimer(2 * time.Second)
			select {
			case <-ctx.Done():
			case <-wait.C:
			}
		}
	}
	return fmt.Errorf("not connected (QR at %v; last status %s %q, queued %q at %d): %w",
		r.qr, last.Phase, last.WhatsApp, last.Queued, last.QueuePosition, context.Cause(ctx))
}

// followEvents reads GET /workspace/events until on returns true or the
// stream ends.
func followEvents(ctx context.Context, c *http.Client, base string, on func(pages.WorkspaceStatus) bool) error {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/workspace/events", nil)
	req.Header.Set("Accept", "text/event-stream")
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("events: %d %.200s", resp.StatusCode, b)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	event := ""
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "event: "):
			event = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: ") && event == "status":
			var st pages.WorkspaceStatus
			if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &st); err != nil {
				return err
			}
			if on(st) {
				return nil
			}
		case strings.HasPrefix(line, "data: ") && event == "signed_out":
			return errors.New("signed out")
		}
	}
	return sc.Err()
}

// devScan is the workspace page's "simulate a scan" button (the stand-in
// only): a form post with the CSRF token.
func devScan(ctx context.Context, c *http.Client, base, token string) error {
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, base+"/workspace/dev-scan", strings.NewReader(url.Values{"csrf_token": {token}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Request.URL.Path != "/workspace" {
		return fmt.Errorf("dev scan: %d at %s: %.200s", resp.StatusCode, resp.Request.URL.Path, b)
	}
	return nil
}

// monitor samples the host's memory (MemTotal - MemAvailable, swap) and
// each slice container's cgroup (anon + shmem against its limit) every
// second, and signals low when MemAvailable falls under memFloor.
type monitor struct {
	nomad *nomadapi.Client // this run's: the docker daemon is shared
	low   chan struct{}
	quit  chan struct{}
	done  chan struct{}
	once  sync.Once

	mu    sync.Mutex
	res   memResult
	abort string
}

type memResult struct {
	start                 time.Time
	baseUsed, peakUsed    float64 // bytes
	minAvail              float64
	baseSwap, peakSwap    float64
	total                 float64
	slicePeak, sliceLimit float64 // the highest anon+shmem of any slice, and that slice's limit
	sliceName             string
	overBudget            []string // slices whose anon+shmem reached their limit
	containers            int      // slice containers seen
	series                []report.Point
	readErr               string
}

func startMonitor(nomad *nomadapi.Client) *monitor {
	m := &monitor{nomad: nomad, low: make(chan struct{}), quit: make(chan struct{}), done: make(chan struct{})}
	m.res.start = time.Now()
	m.res.minAvail = -1
	go m.run()
	return m
}

func (m *monitor) stop() {
	m.once.Do(func() { close(m.quit) })
	<-m.done
}

func (m *monitor) aborted() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.abort
}

func (m *monitor) result() memResult {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.res
}

// container is a slice container's cgroup memory files and limit.
type container struct {
	name, stat string
	limit      float64
}

func (m *monitor) run() {
	defer close(m.done)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	known := map[string]*container{}
	for n := 0; ; n++ {
		if n%5 == 0 {
			discover(m.nomad, known)
		}
		mi, err := readMeminfo()
		m.mu.Lock()
		if err != nil {
			m.res.readErr = err.Error()
		} else {
			used, swap := mi["MemTotal"]-mi["MemAvailable"], mi["SwapTotal"]-mi["SwapFree"]
			if n == 0 {
				m.res.baseUsed, m.res.baseSwap, m.res.total = used, swap, mi["MemTotal"]
			}
			m.res.peakUsed, m.res.peakSwap = max(m.res.peakUsed, used), max(m.res.peakSwap, swap)
			if m.res.minAvail < 0 || mi["MemAvailable"] < m.res.minAvail {
				m.res.minAvail = mi["MemAvailable"]
			}
			m.res.series = append(m.res.series, report.Point{X: time.Since(m.res.start).Seconds(), Y: used / (1 << 30)})
			if mi["MemAvailable"] < memFloor && m.abort == "" {
				m.abort = fmt.Sprintf("MemAvailable %.2f GiB under the %.1f GiB floor %s into the burst",
					mi["MemAvailable"]/(1<<30), memFloor/(1<<30), time.Since(m.res.start).Round(time.Second))
				close(m.low)
			}
		}
		m.res.containers = len(known)
		for _, c := range known {
			v, err := anonShmem(c.stat)
			if err != nil {
				continue // the container ended
			}
			if v > m.res.slicePeak {
				m.res.slicePeak, m.res.sliceLimit, m.res.sliceName = v, c.limit, c.name
			}
			if c.limit > 0 && v >= c.limit && !contains(m.res.overBudget, c.name) {
				m.res.overBudget = append(m.res.overBudget, c.name)
			}
		}
		m.mu.Unlock()
		select {
		case <-m.quit:
			return
		case <-tick.C:
		}
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func readMeminfo() (map[string]float64, error) {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 {
			kb, _ := strconv.ParseFloat(f[1], 64)
			out[strings.TrimSuffix(f[0], ":")] = kb * 1024
		}
	}
	return out, nil
}

// discover adds the slice containers of this run's Nomad that appeared
// (named slice-<alloc id>; other runs' slices may share the docker
// daemon) with their cgroup's memory.stat and limit.
func discover(nomad *nomadapi.Client, known map[string]*container) {
	allocs, _, err := nomad.Allocations().List(nil)
	if err != nil {
		return
	}
	ours := map[string]bool{}
	for _, a := range allocs {
		ours["slice-"+a.ID] = true
	}
	out, err := exec.Command("docker", "ps", "--no-trunc", "--filter", "name=slice-", "--format", "{{.ID}} {{.Names}}").Output()
	if err != nil {
		return
	}
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		id, name, ok := strings.Cut(l, " ")
		if !ok || known[id] != nil || !ours[name] {
			continue
		}
		c := &container{name: name}
		// cgroup v1 (cgroupfs or systemd driver), then v2.
		for _, pat := range []string{"/sys/fs/cgroup/memory/*/" + id + "/memory.stat", "/sys/fs/cgroup/memory/*/docker-" + id + ".scope/memory.stat",
			"/sys/fs/cgroup/*/docker-" + id + ".scope/memory.stat", "/sys/fs/cgroup/docker/" + id + "/memory.stat"} {
			if m, _ := filepath.Glob(pat); len(m) > 0 {
				c.stat = m[0]
				break
			}
		}
		if c.stat == "" {
			continue // not yet in its cgroup; next round
		}
		if b, err := exec.Command("docker", "inspect", "--format", "{{.HostConfig.Memory}}", id).Output(); err == nil {
			c.limit, _ = strconv.ParseFloat(strings.TrimSpace(string(b)), 64)
		}
		known[id] = c
	}
}

// anonShmem is a cgroup's anonymous memory plus shmem: what the slice's
// governor watches (on v1, usage_in_bytes would count page cache too).
func anonShmem(stat string) (float64, error) {
	b, err := os.ReadFile(stat)
	if err != nil {
		return 0, err
	}
	var v float64
	for _, l := range strings.Split(string(b), "\n") {
		k, s, _ := strings.Cut(l, " ")
		switch k {
		case "rss", "anon", "shmem": // v1 rss, v2 anon; both shmem
			n, _ := strconv.ParseFloat(s, 64)
			v += n
		}
	}
	return v, nil
}

type reportInput struct {
	machine     report.Machine
	pg          map[string]string
	pgErr       error
	users, warm int
	caps        map[string]int
	profile     string
	extra       []string
	placement   string
	warmUp      time.Duration
	elapsed     time.Duration
	runs        []*signup
	mem         memResult
	aborted     string
}

func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	i := int(p*float64(len(ds))+0.5) - 1
	return ds[min(max(i, 0), len(ds)-1)]
}

func gib(b float64) string { return fmt.Sprintf("%.2f GiB", b/(1<<30)) }
func mib(b float64) string { return fmt.Sprintf("%.0f MiB", b/(1<<20)) }

func writeReport(t *testing.T, in reportInput) string {
	t.Helper()
	r := report.New("signups", time.Now())
	r.Printf("# Signup burst %s\n\n", time.Now().UTC().Format("2006-01-02 15:04 UTC"))
	r.Printf("%d users sign up at once over HTTP (the sign-up form with its CSRF token, each from its own address in X-Forwarded-For), with min_warm %d: the first take warm slices, the rest are dispatched on demand. Each follows its workspace page's event stream (what the page's script reads; the gateway polls the slice on its behalf every tick) until a QR code is shown, scans it with the stand-in's dev scan and waits until connected. Slices are real docker slices; the stand-in page carries the **%s** weight profile, so every memory figure here is **modelled** (slice/standin/README.md). `make signups` (TestSignups in signups/).\n\n",
		in.users, in.warm, in.profile)
	r.Printf("Admission caps per host (chosen for 2 cores, set with SLICEHUB_SIGNUPS_DISPATCHES/PAIRINGS/IMPORTS): dispatches in flight %d, QR codes shown at once %d, linking or importing at once %d; pairing hold and import hold at the gateway's defaults.\n\n",
		in.caps["dispatches"], in.caps["pairings"], in.caps["imports"])
	if len(in.extra) > 0 {
		r.Printf("Extra gateway flags (SLICEHUB_SIGNUPS_GATEWAY_ARGS): `%s`.\n\n", strings.Join(in.extra, " "))
	}
	r.Printf("Placement, read from Nomad: %s\n\n", in.placement)
	r.Environment(in.machine, in.pg, in.pgErr)
	if in.aborted != "" {
		r.Printf("**Aborted by the guard:** %s. The figures below are those taken until then.\n\n", in.aborted)
	}
	var qr, conn []time.Duration
	queued := map[string][]time.Duration{}
	places := map[string]int{}
	failed := 0
	for _, s := range in.runs {
		if s.qr > 0 {
			qr = append(qr, s.qr)
		}
		if s.connected > 0 {
			conn = append(conn, s.connected)
		}
		if s.err != nil {
			failed++
		}
		for _, q := range []string{"dispatch", "pairing"} {
			queued[q] = append(queued[q], s.queued[q])
			places[q] = max(places[q], s.maxPlace[q])
		}
	}
	for _, ds := range append([][]time.Duration{qr, conn}, queued["dispatch"], queued["pairing"]) {
		sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	}
	row := func(name string, ds []time.Duration) {
		r.Printf("| %s | %d | %s | %s | %s | %s |\n", name, len(ds), percentile(ds, .5).Round(100*time.Millisecond),
			percentile(ds, .95).Round(100*time.Millisecond), percentile(ds, .99).Round(100*time.Millisecond), percentile(ds, 1).Round(100*time.Millisecond))
	}
	r.Printf("## Times (from the sign-up form sent)\n\nWarm pool of %d filled in %s before the burst; the burst took %s; %d of %d users did not reach connected.\n\n",
		in.warm, in.warmUp.Round(time.Second), in.elapsed.Round(time.Second), failed, in.users)
	r.Printf("| | users | p50 | p95 | p99 | max |\n|---|---|---|---|---|---|\n")
	row("claim → QR shown", qr)
	row("claim → connected", conn)
	row("time queued for a dispatch", queued["dispatch"])
	row("time queued for a QR code", queued["pairing"])
	r.Printf("\nHighest place in line seen: dispatch %d, QR code %d.\n\n", places["dispatch"], places["pairing"])
	m := in.mem
	r.Printf("## Memory (sampled every second from /proc/meminfo and each slice container's cgroup)\n\n")
	if m.readErr != "" {
		r.Printf("- /proc/meminfo could not be read: %s\n", m.readErr)
	}
	r.Printf("- Host used (MemTotal − MemAvailable, the whole machine's: anything else running counts): %s before the burst, peak %s of %s; lowest MemAvailable %s (guard: abort under %s).\n",
		gib(m.baseUsed), gib(m.peakUsed), gib(m.total), gib(m.minAvail), gib(memFloor))
	r.Printf("- Swap used: %s before, peak %s.\n", mib(m.baseSwap), mib(m.peakSwap))
	limit := "no limit read"
	if m.sliceLimit > 0 {
		limit = "its limit (memory_max) " + mib(m.sliceLimit)
	}
	r.Printf("- Highest slice cgroup anon+shmem: %s (%s), against %s; %d slice containers watched.\n", mib(m.slicePeak), m.sliceName, limit, m.containers)
	if len(m.overBudget) > 0 {
		r.Printf("- **Slices that reached their limit:** %s.\n", strings.Join(m.overBudget, ", "))
	} else {
		r.Printf("- No slice reached its limit.\n")
	}
	r.Chart("host-memory", "host memory used during the burst", report.Lines("Host memory used (MemTotal − MemAvailable)", "s", "GiB",
		[]report.Series{{Name: "used", Points: m.series}}))
	r.Printf("\n## Failures\n\n")
	if failed == 0 {
		r.Printf("None.\n")
	}
	for _, s := range in.runs {
		if s.err != nil {
			r.Printf("- %s (slice %d): %v\n", s.email, s.sliceID, s.err)
		}
	}
	// Smoke runs keep theirs in test-artifacts (ignored by git), and log it.
	dir := filepath.Join("..", "test-artifacts", "signups")
	if os.Getenv("SLICEHUB_SIGNUPS_REPORT") == "1" {
		dir = report.Dir("..")
	} else {
		t.Logf("report (SLICEHUB_SIGNUPS_REPORT unset: not in docs/reports):\n%s", r.Markdown())
	}
	path, err := r.Write(dir)
	if err != nil {
		t.Fatal(err)
	}
	return path
}
