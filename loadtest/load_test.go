package loadtest

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	consulapi "github.com/hashicorp/consul/api"
	"github.com/jackc/pgx/v5"

	"github.com/slicehub/slicehub"
	sliceconsul "github.com/slicehub/slicehub/consul"
	"github.com/slicehub/slicehub/internal/report"
	"github.com/slicehub/slicehub/testsupport"
)

func TestMain(m *testing.M) {
	// Durable: the published figures must be those of production settings.
	testsupport.Main(m, testsupport.Options{Durable: true})
}

// loadConfig is the run's shape. `make load` sets SLICEHUB_LOAD=1 for the
// full run (500 users, 3 minutes, a report in docs/reports); without it the
// same code runs a short version in `make test` (5 users, 15 s, no report),
// so that a regression in the farm or the path through the gateway shows.
type loadConfig struct {
	full     bool
	users    int
	duration time.Duration
	think    time.Duration // pause between one user's requests
	ackEvery time.Duration // socket.io whoami over the WebSocket
	warm     int           // the gateway's -min-warm
	inflight int           // signups waiting for their slice at once
	// serveLimit bounds how long a user waits for their slice after signup.
	serveLimit time.Duration
}

func configFromEnv(t *testing.T) loadConfig {
	c := loadConfig{users: 5, duration: 15 * time.Second, think: time.Second, ackEvery: 5 * time.Second, warm: 5, inflight: 5}
	if os.Getenv("SLICEHUB_LOAD") == "1" {
		c = loadConfig{full: true, users: 500, duration: 3 * time.Minute, think: 2 * time.Second, ackEvery: 10 * time.Second, warm: 25, inflight: 25}
	}
	envInt := func(name string, v *int) {
		if s := os.Getenv(name); s != "" {
			n, err := strconv.Atoi(s)
			if err != nil || n < 1 {
				t.Fatalf("%s=%q: want a positive integer", name, s)
			}
			*v = n
		}
	}
	envDur := func(name string, v *time.Duration) {
		if s := os.Getenv(name); s != "" {
			d, err := time.ParseDuration(s)
			if err != nil || d <= 0 {
				t.Fatalf("%s=%q: want a positive duration", name, s)
			}
			*v = d
		}
	}
	envInt("SLICEHUB_LOAD_USERS", &c.users)
	envDur("SLICEHUB_LOAD_DURATION", &c.duration)
	envDur("SLICEHUB_LOAD_THINK", &c.think)
	envDur("SLICEHUB_LOAD_ACK_EVERY", &c.ackEvery)
	envInt("SLICEHUB_LOAD_WARM", &c.warm)
	envInt("SLICEHUB_LOAD_INFLIGHT", &c.inflight)
	c.serveLimit = 15 * time.Minute
	envDur("SLICEHUB_LOAD_SERVE_LIMIT", &c.serveLimit)
	// Bounded in count and time: a typo must not start 50 000 users.
	if c.users > 2000 || c.duration > 30*time.Minute {
		t.Fatalf("load: at most 2000 users for 30 minutes (got %d for %s)", c.users, c.duration)
	}
	return c
}

func repoRoot() string {
	r, _ := filepath.Abs("..")
	return r
}

// proc is a subprocess of the run (the gateway, the farm), logging to a
// file kept as a test artifact.
type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	log  string
}

func startProc(t *testing.T, name, bin string, args ...string) *proc {
	t.Helper()
	p := &proc{name: name, done: make(chan struct{}), log: filepath.Join(artifactDir(t), name+".log")}
	logf, err := os.Create(p.log)
	if err != nil {
		t.Fatal(err)
	}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = p.cmd.Wait(); logf.Close(); close(p.done) }()
	t.Cleanup(func() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(30 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			b, _ := os.ReadFile(p.log)
			if len(b) > 6000 {
				b = b[len(b)-6000:]
			}
			t.Logf("%s log tail (%s):\n%s", name, p.log, b)
		}
	})
	return p
}

func (p *proc) exited() error {
	select {
	case <-p.done:
		return fmt.Errorf("%s exited: %v (log: %s)", p.name, p.cmd.ProcessState, p.log)
	default:
		return nil
	}
}

// artifactDir is test-artifacts/load under the repository (ignored by git):
// the processes' logs outlive the test there.
func artifactDir(t *testing.T) string {
	dir := filepath.Join(repoRoot(), "test-artifacts", "load")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

func goBuild(t *testing.T, out, pkg string) {
	t.Helper()
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Dir = repoRoot()
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, b)
	}
}

func TestLoad(t *testing.T) {
	cfg := configFromEnv(t)
	st := testsupport.Stack(t)
	machine := report.ReadMachine() // before the run: its load average is the machine's, not ours
	pgSettings, pgSettingsErr := report.ReadPostgres(t.Context(), st.Postgres.URL)
	t.Logf("load: %d users for %s (think %s, socket.io ack every %s), warm pool %d, full=%v",
		cfg.users, cfg.duration, cfg.think, cfg.ackEvery, cfg.warm, cfg.full)

	bins := t.TempDir()
	goBuild(t, filepath.Join(bins, "slicehub"), "./cmd/slicehub")
	goBuild(t, filepath.Join(bins, "slice"), "./cmd/slice")

	ccfg := consulapi.DefaultConfig()
	ccfg.Address = st.Consul.Addr
	consul, err := consulapi.NewClient(ccfg)
	if err != nil {
		t.Fatal(err)
	}

	// Info: each slice's bootstrap retries are counted from the log.
	dataDirs := []string{st.Nomad.DataDir}
	for _, nd := range st.Nodes {
		dataDirs = append(dataDirs, nd.Nomad.DataDir)
	}
	farm := startProc(t, "farm", filepath.Join(bins, "slice"), "farm", "-consul-addr", st.Consul.Addr, "-slice-log-level", "info",
		"-nomad-data-dirs", strings.Join(dataDirs, ","))
	public, internal := testsupport.FreeAddr(t), testsupport.FreeAddr(t)
	gw := startProc(t, "gateway", filepath.Join(bins, "slicehub"), "serve",
		"-addr", public, "-internal-addr", internal,
		"-database-url", testsupport.NewDatabase(t),
		"-consul-addr", st.Consul.Addr, "-nomad-addr", st.Nomad.Addr,
		"-slice-driver", "farm", "-slice-memory-mb", "10", "-slice-memory-max-mb", "10",
		"-min-warm", strconv.Itoa(cfg.warm), "-max-slices", strconv.Itoa(cfg.users+cfg.warm),
		"-reconcile-interval", "5s", "-log-format", "json",
		// mock_driver reports made-up memory figures (terabytes), which
		// would fire the slice memory alert for every slice.
		"-alert-memory-percent", "0")

	// The warm pool first: that is how a host looks before its users come.
	t0 := time.Now()
	testsupport.Eventually(t, 5*time.Minute, fmt.Sprintf("%d warm slices passing in Consul", cfg.warm), func() (bool, error) {
		if err := gw.exited(); err != nil {
			return false, err
		}
		if err := farm.exited(); err != nil {
			return false, err
		}
		entries, _, err := consul.Health().Service(slicehub.ConsulService, "", false, nil)
		if err != nil {
			return false, err
		}
		entries = sliceconsul.RoutableOnly(entries) // the WhatsApp check may not have run yet
		return len(entries) >= cfg.warm, fmt.Errorf("%d passing", len(entries))
	})
	poolFill := time.Since(t0)
	t.Logf("warm pool of %d filled in %s", cfg.warm, poolFill.Round(time.Millisecond))

	pids := st.PIDs()
	watch := newSampler(map[string]int{"gateway+scheduler": gw.cmd.Process.Pid, "slice farm": farm.cmd.Process.Pid,
		"nomad": pids["nomad"], "consul": pids["consul"], "load generator": os.Getpid()}, st.Postgres.URL)
	watch.pgPID = pids["postgres"]
	sampleCtx, stopSampling := context.WithCancel(context.Background())
	samplerDone := make(chan struct{})
	go func() { defer close(samplerDone); watch.run(sampleCtx, time.Second) }()
	defer func() { stopSampling(); <-samplerDone }()

	// Users sign up cfg.inflight at a time, and each waits, as on the
	// workspace page, until their own slice answers; then they start using
	// it while the others still sign up.
	rec := &recorder{}
	users := make([]*user, cfg.users)
	for i := range users {
		users[i] = newUser(i, public, rec)
	}
	var measuring atomic.Bool
	loadCtx, stopLoad := context.WithCancel(context.Background())
	defer stopLoad()
	var loadWG sync.WaitGroup
	startUsing := func(u *user) {
		loadWG.Add(2)
		go func() {
			defer loadWG.Done()
			u.socket(loadCtx, cfg.ackEvery, measuring.Load)
		}()
		go func() {
			defer loadWG.Done()
			rng := rand.New(rand.NewPCG(uint64(u.n), 1))
			for {
				// Jitter keeps 500 users from stepping in lockstep.
				pause := cfg.think/2 + rand.N(cfg.think)
				select {
				case <-loadCtx.Done():
					return
				case <-time.After(pause):
				}
				if measuring.Load() {
					u.step(rng)
				} else {
					u.whoami(false) // keep the session warm, unmeasured
				}
			}
		}()
	}

	signupStart := time.Now()
	var signupErrs []string
	var errMu sync.Mutex
	sem := make(chan struct{}, cfg.inflight)
	var signWG sync.WaitGroup
	// Generous: a slice that loses the race for the bootstrap throttle is
	// replaced after the scheduler's 3-minute provision timeout, possibly
	// twice (see the report's findings); the user is still served.
	serveLimit := cfg.serveLimit
	for _, u := range users {
		sem <- struct{}{}
		signWG.Add(1)
		go func() {
			defer signWG.Done()
			defer func() { <-sem }()
			fail := func(err error) {
				errMu.Lock()
				signupErrs = append(signupErrs, err.Error())
				errMu.Unlock()
			}
			if err := u.signup(); err != nil {
				fail(err)
				return
			}
			deadline := time.Now().Add(serveLimit)
			poll := 100 * time.Millisecond
			for {
				ok, status := u.whoami(false)
				if ok {
					u.served = time.Now()
					startUsing(u)
					return
				}
				if time.Now().After(deadline) {
					fail(fmt.Errorf("%s: slice %s not serving after %s (last status %d)", u.email, u.sliceID, serveLimit, status))
					return
				}
				time.Sleep(poll) // a client's poll interval, not a synchronisation
				poll = min(poll*2, time.Second)
			}
		}()
	}
	signWG.Wait()
	allServed := time.Since(signupStart)
	// Users who never got in fail the test, but the others' run and its
	// report go on: the report is what says where the platform broke.
	if len(signupErrs) > 0 {
		t.Errorf("%d of %d users could not sign up and reach their slice; first: %s", len(signupErrs), cfg.users, signupErrs[0])
	}
	t.Logf("%d users signed up and served by their own slice in %s", cfg.users, allServed.Round(time.Millisecond))

	// The measured phase: everyone is in, for cfg.duration.
	watch.mark("load")
	measureStart := time.Now()
	measuring.Store(true)
	select {
	case <-time.After(cfg.duration):
	case <-gw.done:
		t.Fatalf("the gateway exited during the run: %v", gw.exited())
	}
	measuring.Store(false)
	measured := time.Since(measureStart)
	stopLoad()
	loadWG.Wait()
	stopSampling()
	<-samplerDone

	res := summarize(rec.all(), users, measureStart, measured)
	res.users, res.poolFill, res.allServed, res.cfg = cfg.users, poolFill, allServed, cfg
	res.notServed = len(signupErrs)
	res.watch = watch
	res.machine, res.pg, res.pgErr = machine, pgSettings, pgSettingsErr
	res.redispatched, res.bootstrapRetries = countLog(gw.log, `"why":"not healthy within the provision timeout`), countLog(farm.log, `"msg":"gateway not ready to hand out credentials; retrying"`)
	t.Log("\n" + res.text())
	if res.wrong > 0 {
		t.Errorf("%d answers came from another tenant's slice", res.wrong)
	}
	if res.pushes < res.writes*99/100 {
		t.Errorf("%d CRM pushes received over socket.io for %d writes: more than 1%% lost", res.pushes, res.writes)
	}
	if res.errorRate() > 0.01 {
		t.Errorf("error rate %.3f%% over 1%%", 100*res.errorRate())
	}
	// The full run's report is the published one; the short run under
	// make test writes its own to test-artifacts, so that the report's
	// code runs in CI too without touching docs/.
	dir := filepath.Join(repoRoot(), "test-artifacts")
	if cfg.full {
		dir = report.Dir(repoRoot())
	}
	path, err := res.writeReport(dir, time.Now())
	if err != nil {
		t.Fatalf("report: %v", err)
	}
	t.Logf("report: %s", path)
}

// pgConnections counts the server's client connections: all, and the
// slices' (their pools set application_name "slice-<id>").
func pgConnections(ctx context.Context, conn *pgx.Conn) (all, slices int, err error) {
	err = conn.QueryRow(ctx, `SELECT count(*), count(*) FILTER (WHERE application_name LIKE 'slice-%')
		FROM pg_stat_activity WHERE backend_type = 'client backend'`).Scan(&all, &slices)
	return all, slices, err
}

// readProc returns a process's resident set (bytes) and CPU time used so
// far, from /proc.
func readProc(pid int) (rss int64, cpu time.Duration, err error) {
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(string(status), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			rss = kb << 10
		}
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	// The command name, in parentheses, may hold spaces: fields start after it.
	i := bytes.LastIndexByte(stat, ')')
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 13 {
		return rss, 0, fmt.Errorf("/proc/%d/stat: short", pid)
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	// USER_HZ is 100 on every Linux this runs on.
	return rss, time.Duration(utime+stime) * 10 * time.Millisecond, nil
}

// countLog counts the lines of a log file that contain s.
func countLog(path, s string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return -1
	}
	return bytes.Count(b, []byte(s))
}

// statFields returns the fields of /proc/<pid>/stat after the command name
// (which may hold spaces): f[0] is the state, f[1] the parent's pid.
func statFields(pid int) ([]string, error) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil, err
	}
	i := bytes.LastIndexByte(stat, ')')
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 15 {
		return nil, fmt.Errorf("/proc/%d/stat: short", pid)
	}
	return f, nil
}

// treeCPU is the CPU time of PostgreSQL as a whole: the postmaster's own
// and that of its children that have exited (cutime, cstime: the
// postmaster reaps its backends), plus the live children's.
func treeCPU(root int) (time.Duration, error) {
	f, err := statFields(root)
	if err != nil {
		return 0, err
	}
	ticks := int64(0)
	for _, i := range []int{11, 12, 13, 14} {
		v, _ := strconv.ParseInt(f[i], 10, 64)
		ticks += v
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	parent := strconv.Itoa(root)
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == root {
			continue
		}
		cf, err := statFields(pid)
		if err != nil || cf[1] != parent {
			continue
		}
		u, _ := strconv.ParseInt(cf[11], 10, 64)
		s, _ := strconv.ParseInt(cf[12], 10, 64)
		ticks += u + s
	}
	return time.Duration(ticks) * 10 * time.Millisecond, nil
}
