package devenv

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	nomadapi "github.com/hashicorp/nomad/api"
	"github.com/jackc/pgx/v5"
)

// These tests start their own stacks (several side by side, since they run
// in parallel) because they are about starting and stopping. Other packages
// use testsupport, which cannot be imported here (it imports devenv).

const (
	childDirEnv  = "DEVENV_TEST_CHILD_DIR"
	childNodeEnv = "DEVENV_TEST_CHILD_NODE"
)

func TestMain(m *testing.M) {
	// The re-executed test binary plays a starter that dies without
	// stopping its stack (TestCleanupAfterStarterDied).
	if dir := os.Getenv(childDirEnv); dir != "" {
		os.Exit(starterChild(dir, os.Getenv(childNodeEnv)))
	}
	os.Exit(m.Run())
}

// newDir makes a state directory named like testsupport's, so that a run
// that dies is cleaned up by the next one, and removes it after the test.
func newDir(t *testing.T) string {
	t.Helper()
	skipShort(t)
	dir, err := os.MkdirTemp("", fmt.Sprintf("slicehub-test-%d-", os.Getpid()))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := RemoveDir(context.Background(), dir, nil); err != nil {
			t.Errorf("RemoveDir(%s): %v", dir, err)
		}
	})
	return dir
}

// skipShort skips a test that starts agents (or builds images) under
// -short: make test-short starts none.
func skipShort(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("SKIP: starts Nomad, Consul or PostgreSQL (or builds an image); -short (make test-short) starts none, make test runs this test")
	}
}

func nodeName(t *testing.T) string {
	return fmt.Sprintf("slicehub-test-%d-%s", os.Getpid(), strings.ToLower(strings.TrimPrefix(t.Name(), "Test")))
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))
}

func start(t *testing.T, o Options) *Stack {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	t0 := time.Now()
	s, err := Start(ctx, o)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Logf("stack started in %s", time.Since(t0).Round(time.Millisecond))
	t.Cleanup(func() { _ = s.Stop() })
	return s
}

// waitFor polls cond until it holds or timeout passes (testsupport.Eventually,
// which this package cannot import).
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() (bool, error)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	defer cancel()
	if err := pollCtx(ctx, 100*time.Millisecond, func() (bool, error) {
		ok, err := cond()
		return ok, err
	}); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func nomadClient(t *testing.T, s *Stack) *nomadapi.Client {
	t.Helper()
	c, err := s.Nomad.Client()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

const sleeperImage = "slicehub-test-sleeper:1"

var buildSleeper = sync.OnceValue(func() error {
	dir, err := os.MkdirTemp("", "sleeper-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	// A static binary in a scratch image: no registry needed, and it exits
	// on SIGTERM (PID 1 ignores signals it does not handle).
	src := `package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGTERM, syscall.SIGINT)
	<-c
}
`
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(src), 0o644); err != nil {
		return err
	}
	dockerfile := "FROM scratch\nCOPY sleeper /sleeper\nENTRYPOINT [\"/sleeper\"]\n"
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(dockerfile), 0o644); err != nil {
		return err
	}
	build := exec.Command("go", "build", "-o", "sleeper", "main.go")
	build.Dir = dir
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=")
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("go build: %w: %s", err, out)
	}
	if out, err := exec.Command("docker", "build", "-q", "-t", sleeperImage, dir).CombinedOutput(); err != nil {
		return fmt.Errorf("docker build: %w: %s", err, out)
	}
	return nil
})

func sleepJob(id, driver string) *nomadapi.Job {
	task := nomadapi.NewTask("main", driver)
	switch driver {
	case "raw_exec":
		task.SetConfig("command", "/bin/sleep").SetConfig("args", []string{"3600"})
	case "docker":
		task.SetConfig("image", sleeperImage)
	}
	task.Require(&nomadapi.Resources{CPU: new(20), MemoryMB: new(32)})
	task.KillTimeout = new(3 * time.Second)
	job := nomadapi.NewServiceJob(id, id, "global", 50)
	job.Datacenters = []string{"dc1"}
	job.AddTaskGroup(nomadapi.NewTaskGroup("main", 1).AddTask(task))
	return job
}

func runJob(t *testing.T, c *nomadapi.Client, job *nomadapi.Job) {
	t.Helper()
	if _, _, err := c.Jobs().Register(job, nil); err != nil {
		t.Fatalf("register %s: %v", *job.ID, err)
	}
	waitFor(t, 90*time.Second, "job "+*job.ID+" running", func() (bool, error) { return jobRunning(c, *job.ID) })
}

func jobRunning(c *nomadapi.Client, id string) (bool, error) {
	allocs, _, err := c.Jobs().Allocations(id, false, nil)
	if err != nil {
		return false, err
	}
	for _, a := range allocs {
		if a.ClientStatus == nomadapi.AllocClientStatusRunning {
			return true, nil
		}
	}
	states := []string{}
	for _, a := range allocs {
		states = append(states, a.ClientStatus+" "+a.ClientDescription)
	}
	return false, fmt.Errorf("allocations: %v", states)
}

func containers(t *testing.T, node string) []string {
	t.Helper()
	out, err := exec.Command("docker", "ps", "-aq", "--filter", "label="+nodeNameLabel+"="+node).Output()
	if err != nil {
		t.Fatalf("docker ps: %v", cmdErr(err))
	}
	return strings.Fields(string(out))
}

// sleepRuns reports whether a raw_exec "/bin/sleep 3600" task runs under
// the stack's Nomad: the process itself, not what Nomad's state says.
func sleepRuns(s *Stack) bool {
	for _, p := range descendants(s.Nomad.proc.pid) {
		cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", p.pid))
		if strings.HasPrefix(string(cmd), "/bin/sleep\x003600") {
			return true
		}
	}
	return false
}

// everything lists the agents and every process they started.
func everything(s *Stack) []procStat {
	var all []procStat
	for _, pid := range s.PIDs() {
		if st, err := readStat(pid); err == nil {
			all = append(all, st)
		}
		all = append(all, descendants(pid)...)
	}
	return all
}

func assertGone(t *testing.T, ps []procStat) {
	t.Helper()
	for _, p := range ps {
		if sameProcess(p.pid, p.start) {
			cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", p.pid))
			t.Errorf("process %d (%s) is still running", p.pid, strings.ReplaceAll(string(cmd), "\x00", " "))
		}
	}
}

// assertNothingMentions fails for any process whose command line contains
// dir: a check that does not depend on a list taken earlier.
func assertNothingMentions(t *testing.T, dir string) {
	t.Helper()
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmd, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err == nil && strings.Contains(string(cmd), dir) && sameProcess(pid, 0) {
			t.Errorf("process %d still runs with the state directory: %s", pid, strings.ReplaceAll(string(cmd), "\x00", " "))
		}
	}
}

func TestStopLeavesNothing(t *testing.T) {
	t.Parallel()
	skipShort(t)
	if err := buildSleeper(); err != nil {
		t.Fatal(err)
	}
	dir := newDir(t)
	node := nodeName(t)
	s := start(t, Options{Dir: dir, NodeName: node, Docker: true, Throwaway: true, NoFsync: true, Logger: testLogger(t)})
	c := nomadClient(t, s)
	runJob(t, c, sleepJob("raw", "raw_exec"))
	runJob(t, c, sleepJob("box", "docker"))
	if got := containers(t, node); len(got) != 1 {
		t.Fatalf("containers labelled %s: got %v, want one", node, got)
	}
	before := everything(s)
	// Nomad's helpers (executor, logmon, docker_logger) and the sleep task
	// must be among what Stop has to stop, or the test proves nothing.
	var sawSleep bool
	for _, p := range before {
		cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", p.pid))
		sawSleep = sawSleep || strings.HasPrefix(string(cmd), "/bin/sleep\x003600")
	}
	if !sawSleep {
		t.Fatalf("the raw_exec task is not among the %d processes of the stack", len(before))
	}

	// The directory is taken while the stack runs: neither a second Start
	// nor a Cleanup may touch it.
	if s2, err := Start(t.Context(), Options{Dir: dir, NodeName: node + "-2"}); !errors.Is(err, ErrInUse) {
		_ = s2.Stop()
		t.Errorf("second Start on a directory in use: got %v, want ErrInUse", err)
	}
	if err := Cleanup(t.Context(), dir, nil); !errors.Is(err, ErrInUse) {
		t.Errorf("Cleanup of a directory in use: got %v, want ErrInUse", err)
	}
	assertAlive := func() {
		for _, p := range before {
			if !sameProcess(p.pid, p.start) {
				t.Fatalf("process %d died before Stop", p.pid)
			}
		}
	}
	assertAlive()

	t0 := time.Now()
	if err := s.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	t.Logf("Stop took %s for %d processes", time.Since(t0).Round(time.Millisecond), len(before))
	if err := s.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}
	assertGone(t, before)
	assertNothingMentions(t, dir)
	if got := containers(t, node); len(got) != 0 {
		t.Errorf("containers left: %v", got)
	}
	if _, err := os.Stat(filepath.Join(dir, runningFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s still exists after Stop (err %v)", runningFile, err)
	}
	if m := mountsUnder(dir); len(m) != 0 {
		t.Errorf("mounts left under the state directory: %v", m)
	}
}

// `make run` twice: the second run finds the data, the ports, the password
// and the jobs of the first, and Nomad starts the jobs' tasks again.
func TestRestartKeepsState(t *testing.T) {
	t.Parallel()
	skipShort(t)
	if err := buildSleeper(); err != nil {
		t.Fatal(err)
	}
	dir := newDir(t)
	o := Options{Dir: dir, NodeName: nodeName(t), Docker: true, Logger: testLogger(t)}
	s := start(t, o)
	ctx := t.Context()
	conn, err := pgx.Connect(ctx, s.Postgres.URL)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "CREATE TABLE kept (v text); INSERT INTO kept VALUES ('hello')"); err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)
	runJob(t, nomadClient(t, s), sleepJob("kept", "raw_exec"))
	runJob(t, nomadClient(t, s), sleepJob("box", "docker"))
	before := everything(s)
	// Each task has a tmpfs on secrets/ and private/: what Ctrl-C on make
	// run used to leave mounted, two per allocation. Unless they are there
	// now, the checks below prove nothing.
	secretDirs := taskSecretDirs(dir)
	if len(secretDirs) < 4 {
		t.Fatalf("task secrets/private directories: got %v, want those of both tasks", secretDirs)
	}
	assertMounted(t, dir, secretDirs)
	pg1 := *s.Postgres
	consul1, nomad1 := s.Consul.Addr, s.Nomad.Addr
	if err := s.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	// Not throwaway: the jobs stay registered, but what they ran is stopped,
	// and nothing stays mounted.
	assertGone(t, before)
	assertNothingMentions(t, dir)
	if got := containers(t, o.NodeName); len(got) != 0 {
		t.Errorf("containers left: %v", got)
	}
	if m := mountsUnder(dir); len(m) != 0 {
		t.Errorf("mounts left under the state directory after Stop: %v", m)
	}

	s = start(t, o)
	if s.Postgres.Port != pg1.Port || s.Postgres.Password != pg1.Password || s.Consul.Addr != consul1 || s.Nomad.Addr != nomad1 {
		t.Errorf("second start: postgres %d, consul %s, nomad %s; want the first run's %d, %s, %s and the same password",
			s.Postgres.Port, s.Consul.Addr, s.Nomad.Addr, pg1.Port, consul1, nomad1)
	}
	conn, err = pgx.Connect(ctx, s.Postgres.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var v string
	if err := conn.QueryRow(ctx, "SELECT v FROM kept").Scan(&v); err != nil || v != "hello" {
		t.Errorf("SELECT v FROM kept: got %q, %v; want hello", v, err)
	}
	// Nomad's state says "running" from before the stop until the client
	// catches up, so look at what really runs.
	waitFor(t, 90*time.Second, "the raw_exec task running again", func() (bool, error) { return sleepRuns(s), nil })
	waitFor(t, 90*time.Second, "the docker task running again", func() (bool, error) {
		return len(containers(t, o.NodeName)) == 1, nil
	})
	// The restored tasks keep their secrets on tmpfs, not on disk.
	assertMounted(t, dir, secretDirs)
	if err := s.Stop(); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	assertNothingMentions(t, dir)
	if m := mountsUnder(dir); len(m) != 0 {
		t.Errorf("mounts left under the state directory after the second Stop: %v", m)
	}
}

// assertMounted fails unless every one of dirs is a mount point.
func assertMounted(t *testing.T, root string, dirs []string) {
	t.Helper()
	mounted := map[string]bool{}
	for _, mp := range mountsUnder(root) {
		mounted[mp] = true
	}
	for _, d := range dirs {
		if !mounted[d] {
			t.Errorf("%s is not a mount point (Nomad keeps task secrets on tmpfs)", d)
		}
	}
}

// starterChild starts a stack, reports what runs, and waits to be killed.
func starterChild(dir, node string) int {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	s, err := Start(ctx, Options{Dir: dir, NodeName: node, Throwaway: true, NoFsync: true, Logger: log})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	c, err := s.Nomad.Client()
	if err == nil {
		_, _, err = c.Jobs().Register(sleepJob("orphan", "raw_exec"), nil)
	}
	if err == nil {
		err = pollCtx(ctx, 100*time.Millisecond, func() (bool, error) { return jobRunning(c, "orphan") })
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	var pids [][2]uint64
	for _, p := range everything(s) {
		pids = append(pids, [2]uint64{uint64(p.pid), p.start})
	}
	b, _ := json.Marshal(pids)
	fmt.Printf("RUNNING %s\n", b)
	select {} // until SIGKILL
}

func TestCleanupAfterStarterDied(t *testing.T) {
	t.Parallel()
	dir := newDir(t)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childDirEnv+"="+dir, childNodeEnv+"="+nodeName(t))
	cmd.Stderr = t.Output()
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "RUNNING ") {
				lines <- strings.TrimPrefix(sc.Text(), "RUNNING ")
				return
			}
		}
		close(lines)
	}()
	var line string
	select {
	case l, ok := <-lines:
		if !ok {
			_ = cmd.Wait()
			t.Fatal("the child exited before its stack ran")
		}
		line = l
	case <-time.After(3 * time.Minute):
		_ = cmd.Process.Kill()
		t.Fatal("the child did not report a running stack")
	}
	var pids [][2]uint64
	if err := json.Unmarshal([]byte(line), &pids); err != nil {
		t.Fatal(err)
	}
	var procs []procStat
	for _, p := range pids {
		procs = append(procs, procStat{pid: int(p[0]), start: p[1]})
	}

	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	alive := 0
	for _, p := range procs {
		if sameProcess(p.pid, p.start) {
			alive++
		}
	}
	// The agents must have outlived their starter, or Cleanup could not
	// stop Nomad's tasks through Nomad.
	if alive != len(procs) {
		t.Fatalf("%d of %d processes outlived the starter; want all", alive, len(procs))
	}
	if err := Cleanup(t.Context(), dir, testLogger(t)); err != nil {
		t.Fatalf("Cleanup: %v", err)
	}
	assertGone(t, procs)
	assertNothingMentions(t, dir)
	if _, err := os.Stat(filepath.Join(dir, runningFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s still exists after Cleanup (err %v)", runningFile, err)
	}
}

func TestStartFailureReportsLogAndStopsTheRest(t *testing.T) {
	t.Parallel()
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	port := busy.Addr().(*net.TCPAddr).Port
	dir := newDir(t)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	_, err = Start(ctx, Options{Dir: dir, NodeName: nodeName(t), NomadHTTPPort: port, SkipPostgres: true, Logger: testLogger(t)})
	if err == nil {
		t.Fatal("Start succeeded with Nomad's HTTP port taken")
	}
	if !strings.Contains(err.Error(), "nomad.log") || !strings.Contains(err.Error(), "address already in use") {
		t.Errorf("Start error does not carry the tail of nomad.log with the cause:\n%v", err)
	}
	assertNothingMentions(t, dir)
	if _, err := os.Stat(filepath.Join(dir, runningFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s still exists after a failed Start (err %v)", runningFile, err)
	}
}

func TestMissingBinarySaysHowToFix(t *testing.T) {
	err := CheckBinaries(Options{BinDir: t.TempDir()})
	var missing *MissingBinaryError
	if !errors.As(err, &missing) || missing.Name != "nomad" {
		t.Fatalf("CheckBinaries with an empty BinDir: got %v, want a MissingBinaryError for nomad", err)
	}
	if !strings.Contains(err.Error(), "make tools") {
		t.Errorf("error does not say how to fix it: %v", err)
	}
	err = CheckBinaries(Options{PostgresBinDir: t.TempDir()})
	if !errors.As(err, &missing) || missing.Name != "initdb" {
		t.Errorf("CheckBinaries with an empty PostgresBinDir: got %v, want a MissingBinaryError for initdb", err)
	}
}

func TestChoosePortsReusesFreePorts(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ports.json")
	first, err := choosePorts(path, portSet{})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int]bool{}
	for _, p := range first.fields() {
		if *p == 0 || seen[*p] {
			t.Fatalf("choosePorts: port %d is zero or chosen twice in %+v", *p, first)
		}
		seen[*p] = true
	}
	// Take one of them: it must be replaced, the others kept.
	busy, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(first.NomadRPC))
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	second, err := choosePorts(path, portSet{Postgres: 1234})
	if err != nil {
		t.Fatal(err)
	}
	want := first
	want.Postgres = 1234
	if second.NomadRPC == first.NomadRPC {
		t.Errorf("choosePorts kept the taken port %d", first.NomadRPC)
	}
	second.NomadRPC = first.NomadRPC
	if second != want {
		t.Errorf("choosePorts: got %+v, want %+v (apart from the taken port)", second, want)
	}
}

func TestParseStat(t *testing.T) {
	st, err := parseStat(42, []byte("42 (a) b) c) S 7 9 9 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 12345 0 0"))
	if err != nil {
		t.Fatal(err)
	}
	if st.ppid != 7 || st.pgid != 9 || st.state != 'S' || st.start != 12345 {
		t.Errorf("parseStat: got %+v, want ppid 7, pgid 9, state S, start 12345", st)
	}
}

func TestUnescapeMount(t *testing.T) {
	if got := unescapeMount(`/tmp/a\040b/secrets`); got != "/tmp/a b/secrets" {
		t.Errorf("unescapeMount: got %q", got)
	}
}

func TestNomadConfig(t *testing.T) {
	n := &Nomad{NodeName: "n1", DataDir: "/d/nomad/data", ProfilesDir: "/d/profiles"}
	cfg := nomadConfig(n, portSet{ConsulHTTP: 8500, NomadHTTP: 1, NomadRPC: 2, NomadSerf: 3}, "consul-tok", Options{Docker: true, DockerExtraCaps: []string{"CAP_SYS_ADMIN"}})
	for _, want := range []string{
		"acl {\n  enabled = true\n}",
		`token   = "consul-tok"`,
		`name                 = "n1"`,
		`host_volume "slice-profiles"`,
		`path      = "/d/profiles"`,
		`address = "127.0.0.1:8500"`,
		`memory_oversubscription_enabled = true`,
		`extra_labels = ["job_name", "node_name"]`,
		`"sys_chroot", "sys_admin"]`,
		`"driver.allowlist" = "raw_exec,mock_driver,docker"`,
	} {
		if !strings.Contains(cfg, want) {
			t.Errorf("nomad config lacks %s:\n%s", want, cfg)
		}
	}
	cfg = nomadConfig(n, portSet{}, "", Options{})
	if strings.Contains(cfg, `plugin "docker"`) || strings.Contains(cfg, "sys_admin") {
		t.Errorf("nomad config without Docker configures docker:\n%s", cfg)
	}
}

// The tree walk must find grandchildren that left the process group, like
// Nomad's executors and the tasks under them.
func TestDescendantsCrossSessions(t *testing.T) {
	cmd := exec.Command("/bin/sh", "-c", "setsid /bin/sleep 300 & wait")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Wait() }()
	p := &proc{name: "sh", pid: cmd.Process.Pid, stopSig: syscall.SIGTERM, group: true}
	p.start, _ = procStart(p.pid)
	var tree []procStat
	waitFor(t, 10*time.Second, "the setsid'd grandchild", func() (bool, error) {
		tree = descendants(p.pid)
		for _, d := range tree {
			if d.pgid == d.pid && d.pid != p.pid {
				cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", d.pid))
				if strings.HasPrefix(string(cmd), "/bin/sleep") {
					return true, nil
				}
			}
		}
		return false, fmt.Errorf("tree: %+v", tree)
	})
	if err := p.stop(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	assertGone(t, tree)
}

func TestPortSlotsAreDisjoint(t *testing.T) {
	a := &Nomad{}
	a.MinDynamicPort, a.MaxDynamicPort, a.slotLock = claimPortSlot()
	defer a.releaseSlot()
	b := &Nomad{}
	b.MinDynamicPort, b.MaxDynamicPort, b.slotLock = claimPortSlot()
	defer b.releaseSlot()
	if a.slotLock == nil || b.slotLock == nil {
		t.Skip("no two free slots: other stacks hold them") // not a failure of the code under test
	}
	if a.MaxDynamicPort >= b.MinDynamicPort && b.MaxDynamicPort >= a.MinDynamicPort {
		t.Errorf("slots overlap: %d-%d and %d-%d", a.MinDynamicPort, a.MaxDynamicPort, b.MinDynamicPort, b.MaxDynamicPort)
	}
	if a.MinDynamicPort < dynamicPortsMin || b.MaxDynamicPort > dynamicPortsMax {
		t.Errorf("slots outside Nomad's default range: %d-%d, %d-%d", a.MinDynamicPort, a.MaxDynamicPort, b.MinDynamicPort, b.MaxDynamicPort)
	}
}

// A second Nomad client on this machine: its node is ready with the same
// drivers, tasks placed on it register in Consul through its own agent,
// both nodes see the same profiles directory, and Stop stops everything
// both started.
func TestSecondNomadClient(t *testing.T) {
	t.Parallel()
	dir := newDir(t)
	node := nodeName(t)
	s := start(t, Options{Dir: dir, NodeName: node, Throwaway: true, NoFsync: true, SkipPostgres: true,
		NomadClients: 2, Logger: testLogger(t)})
	if got, want := s.NodeNames(), []string{node, node + "-2"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("NodeNames() = %v, want %v", got, want)
	}
	if len(s.Nodes) != 1 || s.Nodes[0].Nomad.ProfilesDir != s.Nomad.ProfilesDir {
		t.Fatalf("the extra node must share the profiles host volume: %+v", s.Nodes)
	}
	if s.Nodes[0].Nomad.MinDynamicPort == s.Nomad.MinDynamicPort {
		t.Errorf("both clients hand out the same dynamic ports from %d", s.Nomad.MinDynamicPort)
	}
	c := nomadClient(t, s)
	nodes, _, err := c.Nodes().List(nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(nodes) != 2 {
		t.Fatalf("nomad nodes: got %d, want 2", len(nodes))
	}
	for _, n := range nodes {
		if n.Drivers["mock_driver"] == nil || !n.Drivers["mock_driver"].Healthy || !n.Drivers["raw_exec"].Healthy {
			t.Errorf("node %s lacks a healthy mock_driver or raw_exec", n.Name)
		}
	}
	// One task pinned on each node, each with a service.
	for _, n := range s.NodeNames() {
		job := sleepJob("on-"+n[len(n)-1:], "raw_exec")
		job.Constrain(nomadapi.NewConstraint("${node.unique.name}", "=", n))
		job.TaskGroups[0].Services = []*nomadapi.Service{{Name: *job.ID, Provider: "consul"}}
		runJob(t, c, job)
	}
	cc, err := s.Consul.Client()
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range s.NodeNames() {
		id := "on-" + n[len(n)-1:]
		waitFor(t, 30*time.Second, id+" in the catalog on "+n, func() (bool, error) {
			svcs, _, err := cc.Catalog().Service(id, "", nil)
			if err != nil {
				return false, err
			}
			for _, sv := range svcs {
				if sv.Node == n {
					return true, nil
				}
			}
			return false, fmt.Errorf("instances: %d", len(svcs))
		})
	}
	before := everything(s)
	if _, ok := s.PIDs()["nomad-2"]; !ok {
		t.Fatalf("PIDs() lacks nomad-2: %v", s.PIDs())
	}
	if err := s.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	assertGone(t, before)
	assertNothingMentions(t, dir)
	if _, err := os.Stat(filepath.Join(dir, runningFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s still exists after Stop (err %v)", runningFile, err)
	}
}

func TestNomadConfigExtraClient(t *testing.T) {
	n := &Nomad{NodeName: "n2", DataDir: "/d/nomad-2/data", ProfilesDir: "/d/profiles"}
	cfg := renderNomadConfig(n, nomadRole{http: 1, rpc: 2, serf: 3, consulAddr: "127.0.0.1:9", servers: []string{"127.0.0.1:4647"}}, Options{Docker: true})
	for _, want := range []string{`servers = ["127.0.0.1:4647"]`, `address = "127.0.0.1:9"`, `path      = "/d/profiles"`, "dangling_containers"} {
		if !strings.Contains(cfg, want) {
			t.Errorf("client config lacks %s:\n%s", want, cfg)
		}
	}
	if strings.Contains(cfg, "bootstrap_expect") {
		t.Errorf("a client-only agent must not run a server:\n%s", cfg)
	}
}

func TestNomadConfigClientMemory(t *testing.T) {
	n := &Nomad{NodeName: "n1", DataDir: "/d", ProfilesDir: "/p"}
	if cfg := nomadConfig(n, portSet{}, "", Options{}); strings.Contains(cfg, "memory_total_mb") {
		t.Errorf("memory_total_mb without NomadClientMemoryMB:\n%s", cfg)
	}
	if cfg := nomadConfig(n, portSet{}, "", Options{NomadClientMemoryMB: 65536}); !strings.Contains(cfg, "memory_total_mb = 65536") {
		t.Errorf("NomadClientMemoryMB not in the config:\n%s", cfg)
	}
}

// After a restart of the Consul server (in -dev mode, it comes back empty),
// the extra node's Consul agent must join it again, or that node's slices
// never return to the catalog.
func TestRestartConsulRejoinsExtraNodes(t *testing.T) {
	t.Parallel()
	dir := newDir(t)
	node := nodeName(t)
	s := start(t, Options{Dir: dir, NodeName: node, Throwaway: true, SkipPostgres: true, NomadClients: 2, Logger: testLogger(t)})
	c := nomadClient(t, s)
	job := sleepJob("on2", "raw_exec")
	job.Constrain(nomadapi.NewConstraint("${node.unique.name}", "=", node+"-2"))
	job.TaskGroups[0].Services = []*nomadapi.Service{{Name: "on2", Provider: "consul"}}
	runJob(t, c, job)
	cc, err := s.Consul.Client()
	if err != nil {
		t.Fatal(err)
	}
	inCatalog := func() (bool, error) {
		svcs, _, err := cc.Catalog().Service("on2", "", nil)
		if err != nil {
			return false, err
		}
		// pollCtx stops at an error: "not yet" is (false, nil).
		return len(svcs) == 1 && svcs[0].Node == node+"-2", nil
	}
	waitFor(t, 30*time.Second, "on2 in the catalog", inCatalog)
	t0 := time.Now()
	if err := s.RestartConsul(t.Context()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Minute, "on2 back in the catalog after the restart", inCatalog)
	t.Logf("back in the catalog %s after the restart began", time.Since(t0).Round(100*time.Millisecond))
}

// KillPostgres: every PostgreSQL process dies at once (backends included,
// each its own process group), the server comes back on the same port
// through crash recovery, and with production settings (no NoFsync) a
// commit acknowledged before the kill is there after it.
func TestKillPostgresKeepsCommits(t *testing.T) {
	t.Parallel()
	dir := newDir(t)
	s := start(t, Options{Dir: dir, NodeName: nodeName(t), Throwaway: true, Logger: testLogger(t)})
	ctx := t.Context()
	conn, err := pgx.Connect(ctx, s.Postgres.URL)
	if err != nil {
		t.Fatal(err)
	}
	// An open connection is a backend that must die with the postmaster.
	if _, err := conn.Exec(ctx, "CREATE TABLE acked (v int); INSERT INTO acked VALUES (42)"); err != nil {
		t.Fatal(err)
	}
	var sc string
	if err := conn.QueryRow(ctx, "SHOW synchronous_commit").Scan(&sc); err != nil || sc != "on" {
		t.Fatalf("synchronous_commit: %q, %v; want on (the stack was started without NoFsync)", sc, err)
	}
	backends := descendants(s.Postgres.proc.pid)
	if len(backends) == 0 {
		t.Fatal("postgres has no child processes to kill")
	}
	if err := s.KillPostgres(ctx); err != nil {
		t.Fatalf("KillPostgres: %v", err)
	}
	for _, b := range backends {
		if st, err := readStat(b.pid); err == nil && sameProcess(b.pid, b.start) && st.state != 'Z' {
			t.Errorf("postgres process %d survived KillPostgres", b.pid)
		}
	}
	if _, err := conn.Exec(ctx, "SELECT 1"); err == nil {
		t.Error("the connection opened before the kill still works: PostgreSQL was not killed")
	}
	conn.Close(ctx)
	conn, err = pgx.Connect(ctx, s.Postgres.URL)
	if err != nil {
		t.Fatalf("connecting after the restart: %v", err)
	}
	defer conn.Close(ctx)
	var v int
	if err := conn.QueryRow(ctx, "SELECT v FROM acked").Scan(&v); err != nil || v != 42 {
		t.Errorf("SELECT v FROM acked after the kill: %d, %v; want 42", v, err)
	}
}

// NoFsync's settings live in postgresql.auto.conf (so that ALTER SYSTEM
// can lift them), beside whatever else the file holds, and leave it when
// the stack starts without NoFsync.
func TestWriteFastSettings(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "postgresql.auto.conf")
	if err := os.WriteFile(path, []byte("# Do not edit this file manually!\nwork_mem = '8MB'\nfsync = 'on'\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	me := osUser{uid: uint32(os.Getuid()), gid: uint32(os.Getgid())}
	if err := writeFastSettings(dir, true, me); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path)
	want := "# Do not edit this file manually!\nwork_mem = '8MB'\nfsync = 'off'\nsynchronous_commit = 'off'\nfull_page_writes = 'off'\n"
	if string(b) != want {
		t.Errorf("with NoFsync:\n%s\nwant:\n%s", b, want)
	}
	if err := writeFastSettings(dir, false, me); err != nil {
		t.Fatal(err)
	}
	b, _ = os.ReadFile(path)
	if want := "# Do not edit this file manually!\nwork_mem = '8MB'\n"; string(b) != want {
		t.Errorf("without NoFsync:\n%s\nwant:\n%s", b, want)
	}
}

// TestFreePortAvoidsTheEphemeralRange: a port chosen for an agent is never in
// the range outgoing connections draw from, where a client could take it
// before the agent binds.
func TestFreePortAvoidsTheEphemeralRange(t *testing.T) {
	for range 50 {
		p, release, err := freePort()
		if err != nil {
			t.Fatal(err)
		}
		release()
		if p < 10000 || p >= dynamicPortsMin {
			t.Fatalf("freePort() = %d, want 10000 <= port < %d (below Nomad's dynamic ports and the kernel's ephemeral range)", p, dynamicPortsMin)
		}
	}
}
