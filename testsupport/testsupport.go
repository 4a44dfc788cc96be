// Package testsupport gives integration tests the real dependencies: one
// devenv stack (PostgreSQL, Consul, Nomad) per test package, started in
// TestMain and always stopped, plus helpers that every such test needs
// (a fresh database, polling with a deadline).
//
// Use it as the first statement of TestMain:
//
//	func TestMain(m *testing.M) { testsupport.Main(m, testsupport.Options{Docker: true}) }
//
// "Always stopped" covers more than a deferred Stop could: a panic in a test
// goroutine or `go test -timeout` ends the process without running defers,
// and Nomad's tasks outlive a killed agent. So Main also starts a watchdog
// (the test binary itself, re-executed) that notices when the test process
// is gone, however it went, and stops the stack with devenv.Cleanup. A
// later run also removes what a vanished run left (directories and Docker
// containers named after a process id that no longer exists).
package testsupport

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/slicehub/slicehub/devenv"
	"github.com/slicehub/slicehub/internal/benchresult"
	"github.com/slicehub/slicehub/internal/report"
)

// Options for Main.
type Options struct {
	// Docker enables Nomad's docker driver and waits until it is healthy.
	Docker bool
	// DockerExtraCaps: see devenv.Options.
	DockerExtraCaps []string
	// StartTimeout bounds the start of the stack; default 3 minutes.
	StartTimeout time.Duration
	// NomadClients: 2 or more starts extra Nomad client nodes (each with
	// its own Consul client agent), named "<node>-2", ...; see
	// devenv.Options.NomadClients. 0 keeps the single, faster node.
	NomadClients int
	// NomadClientMemoryMB: see devenv.Options.NomadClientMemoryMB.
	NomadClientMemoryMB int
	// Durable runs PostgreSQL with production settings (fsync,
	// synchronous_commit and full_page_writes on), for the packages whose
	// figures are published (chaos, load). Without it, tests get the fast
	// settings (all three off: a crash can lose or corrupt data). Every
	// package is durable too when it runs benchmarks (-test.bench, make
	// bench) or when SLICEHUB_PG_DURABLE=1.
	Durable bool
	// SliceNetwork gives the stack a slice network (devenv.SliceNet): a
	// Docker bridge of its own behind the slice firewall, with PostgreSQL
	// reachable on its gateway address. Needs Docker.
	SliceNetwork bool
}

// durable says whether PostgreSQL gets production settings; see
// Options.Durable.
func durable(o Options) bool {
	if o.Durable || os.Getenv("SLICEHUB_PG_DURABLE") == "1" {
		return true
	}
	f := flag.Lookup("test.bench")
	return f != nil && f.Value.String() != ""
}

// Prefix of every test stack's node name and state directory, followed by
// the test process's pid: "slicehub-test-<pid>". A later run that finds a
// name whose pid is not alive knows it is a leftover.
const Prefix = "slicehub-test-"

const (
	watchdogDirEnv  = "SLICEHUB_TESTSUPPORT_WATCHDOG_DIR"
	watchdogNodeEnv = "SLICEHUB_TESTSUPPORT_WATCHDOG_NODE"
)

var (
	stack *devenv.Stack
	// base goes to devenv, which adds its own component; log is ours.
	base *slog.Logger
	log  *slog.Logger
)

// Main starts the stack, runs the tests, stops the stack and exits with the
// tests' code (or 1 when the stack could not start or stop cleanly). It
// stops the stack on SIGINT and SIGTERM too. A missing nomad, consul or
// PostgreSQL fails the package with the command that fixes it.
//
// Call it first in TestMain: Main also runs as the watchdog process, which
// must not run the rest of TestMain.
//
// Under -short (make test-short) Main starts nothing: the package's tests
// run without a stack, and every test that asks for one (Stack(t),
// NewDatabase) is skipped with the reason. Main then prints how many were
// skipped, so that a short run never reads as if it had tested them.
func Main(m *testing.M, o Options) {
	if dir := os.Getenv(watchdogDirEnv); dir != "" {
		os.Exit(watchdog(dir, os.Getenv(watchdogNodeEnv)))
	}
	os.Exit(run(m, o))
}

func run(m *testing.M, o Options) (code int) {
	// testing.Verbose needs the flags; m.Run does not parse them twice.
	flag.Parse()
	level := slog.LevelWarn
	if testing.Verbose() {
		level = slog.LevelInfo
	}
	base = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	log = base.With("component", "testsupport")
	if testing.Short() {
		code := m.Run()
		if n := shortSkips.Load(); n > 0 {
			fmt.Fprintf(os.Stderr, "testsupport: -short started no stack: %d test(s) of this package that need PostgreSQL, Consul and Nomad were SKIPPED (make test runs them)\n", n)
		}
		return code
	}
	fail := func(format string, args ...any) int {
		fmt.Fprintf(os.Stderr, "FAIL: testsupport: "+format+"\n", args...)
		return 1
	}

	if err := devenv.CheckBinaries(devenv.Options{}); err != nil {
		return fail("%v", err)
	}
	removeLeftovers()

	node := Prefix + strconv.Itoa(os.Getpid())
	dir, err := os.MkdirTemp("", node+"-")
	if err != nil {
		return fail("%v", err)
	}
	// PostgreSQL runs as the user postgres and must get into the directory.
	if err := os.Chmod(dir, 0o755); err != nil {
		return fail("%v", err)
	}
	// The watchdog must exist before anything it would have to clean up.
	release, err := startWatchdog(dir, node)
	if err != nil {
		os.RemoveAll(dir)
		return fail("starting the watchdog: %v", err)
	}

	var once sync.Once
	var teardownErr error
	teardown := func() error {
		once.Do(func() {
			errs := []error{stack.Stop()}
			errs = append(errs, devenv.RemoveDir(context.Background(), dir, base))
			errs = append(errs, release())
			teardownErr = errors.Join(errs...)
		})
		return teardownErr
	}
	defer func() {
		// Also runs when this goroutine panics (in TestMain's own code).
		if err := teardown(); err != nil {
			fmt.Fprintf(os.Stderr, "FAIL: testsupport: stopping the stack: %v\n", err)
			if code == 0 {
				code = 1
			}
		}
	}()

	timeout := o.StartTimeout
	if timeout == 0 {
		timeout = 3 * time.Minute
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	started := make(chan struct{})
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	go func() {
		sig, ok := <-sigs
		if !ok {
			return
		}
		// While starting, cancelling is enough: Start stops what it started
		// and run tears down. Once tests run, nobody else will.
		cancel()
		select {
		case <-started:
		default:
			return
		}
		fmt.Fprintf(os.Stderr, "testsupport: %s: stopping the stack\n", sig)
		if err := teardown(); err != nil {
			fmt.Fprintf(os.Stderr, "FAIL: testsupport: stopping the stack: %v\n", err)
		}
		os.Exit(1)
	}()

	t0 := time.Now()
	s, err := devenv.Start(ctx, devenv.Options{
		Dir:                 dir,
		Docker:              o.Docker,
		DockerExtraCaps:     o.DockerExtraCaps,
		NodeName:            node,
		NoFsync:             !durable(o),
		Throwaway:           true,
		Logger:              base,
		NomadClients:        o.NomadClients,
		NomadClientMemoryMB: o.NomadClientMemoryMB,
		SliceNetwork:        o.SliceNetwork,
	})
	if err != nil {
		return fail("starting the stack: %v", err)
	}
	stack = s
	// ACLs are on (devenv): the tests are operators and use the management
	// tokens, through the variables every Consul and Nomad client reads
	// (api.DefaultConfig). Subprocesses inherit them; the agents do not
	// (devenv strips CONSUL_* and NOMAD_* from their environment). A test
	// of least privilege passes Stack().ACL's gateway tokens explicitly.
	os.Setenv("CONSUL_HTTP_TOKEN", s.ACL.ConsulManagement)
	os.Setenv("NOMAD_TOKEN", s.ACL.NomadManagement)
	close(started)
	if f := flag.Lookup("test.bench"); f != nil && f.Value.String() != "" {
		recordPostgres(ctx, s)
	}
	log.Info("stack ready", "took", time.Since(t0).Round(time.Millisecond),
		"postgres", fmt.Sprintf("%s:%d", s.Postgres.Host, s.Postgres.Port), "consul", "http://"+s.Consul.Addr, "nomad", s.Nomad.Addr)
	return m.Run()
}

// Stack is the package's stack. Given the test, it skips it under -short,
// where Main starts no stack (see Main). It panics outside of Main, and
// under -short when called without the test.
func Stack(t ...testing.TB) *devenv.Stack {
	if stack == nil && testing.Short() && len(t) > 0 {
		t[0].Helper()
		skipShort(t[0])
	}
	if stack == nil {
		if testing.Short() {
			panic("testsupport: -short starts no stack; call testsupport.Stack(t) so that the test is skipped")
		}
		panic("testsupport: no stack; call testsupport.Main from TestMain")
	}
	return stack
}

// shortSkips counts the tests skipped because -short started no stack.
var shortSkips atomic.Int64

// SkipShort skips t under -short, where Main starts no stack, saying why.
// Tests that need the stack only through a helper that does not take t
// call it first.
func SkipShort(t testing.TB) {
	t.Helper()
	if testing.Short() && stack == nil {
		skipShort(t)
	}
}

func skipShort(t testing.TB) {
	t.Helper()
	shortSkips.Add(1)
	t.Skip("SKIP: needs PostgreSQL, Consul and Nomad; -short (make test-short) starts none, make test runs this test")
}

// FreeAddr is a free loopback address ("127.0.0.1:port") from the kernel,
// for a subprocess that must be told its address: given :0 it could not
// tell us which port it got.
func FreeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// Logger returns a logger that writes into the test's output (shown with -v
// or when the test fails). Components started by a test may still log while
// they shut down after it; those lines go to stderr instead of panicking.
func Logger(t testing.TB) *slog.Logger {
	w := &testWriter{out: t.Output()}
	t.Cleanup(w.finish)
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type testWriter struct {
	mu   sync.Mutex
	out  io.Writer
	done bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.done {
		return os.Stderr.Write(p)
	}
	return w.out.Write(p)
}

func (w *testWriter) finish() {
	w.mu.Lock()
	w.done = true
	w.mu.Unlock()
}

// NewDatabase creates an empty database owned by the superuser, named after
// the test, and returns its superuser URL. The database is dropped, even
// with connections still open, when the test ends.
func NewDatabase(t testing.TB) string {
	t.Helper()
	pg := Stack(t).Postgres
	name := databaseName(t.Name())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := adminExec(ctx, pg.URL, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()+" OWNER "+pgx.Identifier{pg.User}.Sanitize()); err != nil {
		t.Fatalf("testsupport: create database %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := adminExec(ctx, pg.URL, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
			t.Errorf("testsupport: drop database %s: %v", name, err)
		}
	})
	return pg.DatabaseURL(name)
}

func adminExec(ctx context.Context, url, sql string) error {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, sql)
	return err
}

var unsafeChars = regexp.MustCompile(`[^a-z0-9]+`)

// databaseName makes "t_<test name>_<random>" within PostgreSQL's 63 bytes.
// The random part keeps names unique across -count=N and parallel subtests.
func databaseName(testName string) string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	base := strings.Trim(unsafeChars.ReplaceAllString(strings.ToLower(testName), "_"), "_")
	if len(base) > 45 {
		base = base[:45]
	}
	return "t_" + base + "_" + hex.EncodeToString(b)
}

// Eventually polls cond until it returns true, and fails the test with what
// and cond's last error if that does not happen within timeout. cond
// returns (false, err) to say why not yet. Use it instead of sleeping. It
// must be called from the test's goroutine (it calls t.Fatalf).
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() (bool, error)) {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	// Short first intervals catch fast conditions quickly; the cap keeps a
	// slow one from hammering an agent.
	interval := 10 * time.Millisecond
	tick := time.NewTimer(0)
	defer tick.Stop()
	var last error
	polls := 0
	for {
		select {
		case <-deadline.C:
			if last != nil {
				t.Fatalf("%s: not true after %s (%d polls); last error: %v", what, timeout, polls, last)
			}
			t.Fatalf("%s: not true after %s (%d polls)", what, timeout, polls)
			return
		case <-t.Context().Done():
			t.Fatalf("%s: the test ended while waiting", what)
			return
		case <-tick.C:
		}
		polls++
		ok, err := cond()
		if ok {
			return
		}
		if err != nil {
			last = err
		}
		tick.Reset(interval)
		if interval < 250*time.Millisecond {
			interval *= 2
		}
	}
}

// startWatchdog re-executes the test binary as a watchdog that holds the
// read end of a pipe. The kernel closes the write end when this process
// exits, for whatever reason, so the watchdog's read returning is the signal
// that the test process is gone. release closes it on purpose after a clean
// teardown and waits for the watchdog to exit.
func startWatchdog(dir, node string) (release func() error, err error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer r.Close()
	// -test.run=^$: should the binary not route to Main, it runs no test.
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), watchdogDirEnv+"="+dir, watchdogNodeEnv+"="+node)
	cmd.Stdin = r
	cmd.Stderr = os.Stderr
	// Its own process group: a Ctrl-C in the terminal must not kill it
	// before it has done its job.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		w.Close()
		return nil, err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	return func() error {
		w.Close()
		select {
		case err := <-done:
			return err
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			return errors.New("watchdog did not exit")
		}
	}, nil
}

// watchdog runs in the re-executed test binary. It waits until the test
// process is gone; if the state directory still exists then, the test
// process did not tear down, and the watchdog does.
func watchdog(dir, node string) int {
	signal.Ignore(syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	_, _ = io.Copy(io.Discard, os.Stdin)
	if _, err := os.Stat(dir); err != nil {
		return 0 // a clean teardown, or nothing was ever started
	}
	base := slog.New(slog.NewTextHandler(os.Stderr, nil))
	lg := base.With("component", "testsupport-watchdog")
	lg.Warn("the test process ended without stopping its stack; stopping it", "dir", dir)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	code := 0
	// The test process is gone (its end of our stdin is closed), but the
	// kernel closes a dying process's descriptors one by one: the pipe can
	// close before the lock on dir is released, and then the directory
	// still reads as in use for a moment. CI saw it once.
	inUseUntil := time.Now().Add(10 * time.Second)
	err := devenv.RemoveDir(ctx, dir, base)
	for errors.Is(err, devenv.ErrInUse) && time.Now().Before(inUseUntil) {
		time.Sleep(100 * time.Millisecond) // polling interval: the lock has no notification
		err = devenv.RemoveDir(ctx, dir, base)
	}
	if err != nil {
		lg.Error("cleanup", "err", err)
		code = 1
	}
	// Cleanup found the containers through running.json; these are the ones
	// a half-written record could not name.
	if node != "" {
		if _, err := devenv.RemoveContainers(ctx, func(n string) bool { return n == node }); err != nil {
			lg.Warn("removing containers", "err", err)
		}
	}
	return code
}

var leftoverName = regexp.MustCompile(`^` + regexp.QuoteMeta(Prefix) + `(\d+)(?:-.*)?$`)

// deadOwner reports whether name is a test stack's name (directory or node)
// whose process is gone.
func deadOwner(name string) bool {
	m := leftoverName.FindStringSubmatch(name)
	if m == nil {
		return false
	}
	pid, err := strconv.Atoi(m[1])
	if err != nil || pid <= 0 || pid == os.Getpid() {
		return false
	}
	return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH)
}

// removeLeftovers removes what earlier runs that vanished without teardown
// (and without their watchdog finishing) left: state directories with their
// agents, and Docker containers of their Nomad nodes.
func removeLeftovers() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), Prefix+"*"))
	for _, d := range dirs {
		if !deadOwner(filepath.Base(d)) {
			continue
		}
		log.Warn("removing the leftover of an earlier test run", "dir", d)
		if err := devenv.RemoveDir(ctx, d, base); err != nil {
			log.Warn("removing leftover", "dir", d, "err", err)
		}
	}
	if _, err := exec.LookPath("docker"); err != nil {
		return
	}
	n, err := devenv.RemoveContainers(ctx, deadOwner)
	if err != nil {
		log.Warn("removing leftover containers", "err", err)
	} else if n > 0 {
		log.Warn("removed leftover containers of earlier test runs", "count", n)
	}
	// Slice networks and their firewall chains, after the containers.
	nodes, err := devenv.SliceNetNodes(ctx)
	if err != nil {
		log.Warn("listing slice networks", "err", err)
	}
	for _, node := range nodes {
		if !deadOwner(node) {
			continue
		}
		if err := devenv.RemoveSliceNet(ctx, node); err != nil {
			log.Warn("removing a leftover slice network", "node", node, "err", err)
		}
	}
}

// SliceListener listens where the stack's slices can reach it (the slice
// network's gateway address, devenv.SliceNet), with the firewall open for
// its port, and closes it when the test ends: for a bootstrap endpoint or a
// stand-in that a test serves to slices. It fails the test without a slice
// network (Options.SliceNetwork).
func SliceListener(t testing.TB) net.Listener {
	t.Helper()
	sn := Stack().SliceNet
	if sn == nil {
		t.Fatal("testsupport: no slice network; set Options.SliceNetwork in TestMain")
	}
	ln, err := sn.ListenForSlices(t.Context())
	if err != nil {
		t.Fatalf("testsupport: %v", err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	t.Cleanup(func() {
		ln.Close()
		if err := sn.DisallowHostPort(context.Background(), port); err != nil {
			t.Errorf("testsupport: %v", err)
		}
	})
	return ln
}

// RepoRoot is the checkout the test runs in: the nearest parent of the
// working directory (the package's) that holds go.mod.
func RepoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d
		}
		if filepath.Dir(d) == d {
			t.Fatalf("testsupport: no go.mod above %s", dir)
		}
	}
}

// SliceImage runs ops/image.sh, which builds the slice image when the
// binary, the Dockerfile or the base changed (a second or two otherwise),
// and returns its reference (slicehub/slice:<hash>).
func SliceImage(t testing.TB) string {
	t.Helper()
	root := RepoRoot(t)
	cmd := exec.Command("bash", filepath.Join(root, "ops", "image.sh"))
	cmd.Dir = root
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("ops/image.sh: %v\n%s", err, stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	ref := lines[len(lines)-1]
	if !strings.HasPrefix(ref, "slicehub/slice:") || strings.HasSuffix(ref, ":latest") {
		t.Fatalf("ops/image.sh printed %q, want slicehub/slice:<hash>", ref)
	}
	return ref
}

// recordPostgres leaves the settings this package's PostgreSQL runs with
// in test-artifacts/bench/postgres-<package>.json, for make bench's report
// (ops/benchreport), which has no server left to ask.
func recordPostgres(ctx context.Context, s *devenv.Stack) {
	pkg, _ := os.Getwd()
	rec := benchresult.Postgres{Package: filepath.Base(pkg)}
	if s.Postgres == nil {
		rec.Error = "no PostgreSQL in this stack"
	} else if settings, err := report.ReadPostgres(ctx, s.Postgres.URL); err != nil {
		rec.Error = err.Error()
	} else {
		rec.Settings = settings
	}
	if err := benchresult.Write("postgres-"+rec.Package, rec); err != nil {
		log.Warn("recording PostgreSQL's settings for the bench report", "err", err)
	}
}
