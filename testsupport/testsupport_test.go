package testsupport

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	consulapi "github.com/hashicorp/consul/api"
	nomadapi "github.com/hashicorp/nomad/api"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

func TestMain(m *testing.M) { Main(m, Options{Docker: true}) }

func connect(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), url)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func TestPostgresPasswordAuth(t *testing.T) {
	pg := Stack(t).Postgres
	var user string
	if err := connect(t, pg.URL).QueryRow(t.Context(), "SELECT current_user").Scan(&user); err != nil || user != "slicehub" {
		t.Fatalf("SELECT current_user as the superuser: got %q, %v; want slicehub", user, err)
	}
	_, err := pgx.Connect(t.Context(), pgURLWithPassword(pg.URL, "wrong"))
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "28P01" {
		t.Fatalf("connect with a wrong password over TCP: got %v, want SQLSTATE 28P01 (invalid_password)", err)
	}
}

func pgURLWithPassword(url, password string) string {
	cfg := Stack().Postgres
	return strings.Replace(url, ":"+cfg.Password+"@", ":"+password+"@", 1)
}

// Per-slice roles are only isolated if no connection is trusted: every rule
// must ask for a SCRAM password, and a role without one cannot log in.
func TestPostgresNeverTrusts(t *testing.T) {
	pg := Stack(t).Postgres
	conn := connect(t, pg.URL)
	rows, err := conn.Query(t.Context(), "SELECT type, auth_method FROM pg_hba_file_rules")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for rows.Next() {
		var typ, method string
		if err := rows.Scan(&typ, &method); err != nil {
			t.Fatal(err)
		}
		n++
		if method != "scram-sha-256" {
			t.Errorf("pg_hba rule for %s uses %s, want scram-sha-256", typ, method)
		}
	}
	if rows.Err() != nil || n == 0 {
		t.Fatalf("pg_hba_file_rules: %d rules, %v", n, rows.Err())
	}
	role := "nopassword_" + strconv.Itoa(os.Getpid())
	if _, err := conn.Exec(t.Context(), "CREATE ROLE "+role+" LOGIN"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = conn.Exec(context.Background(), "DROP ROLE "+role) })
	url := fmt.Sprintf("postgres://%s@%s:%d/postgres?sslmode=disable", role, pg.Host, pg.Port)
	if c, err := pgx.Connect(t.Context(), url); err == nil {
		c.Close(t.Context())
		t.Fatalf("role %s without a password logged in over TCP", role)
	}
}

func TestPostgresSettings(t *testing.T) {
	conn := connect(t, Stack(t).Postgres.URL)
	for name, want := range map[string]string{
		"max_connections":         "1000",
		"listen_addresses":        "127.0.0.1",
		"unix_socket_directories": Stack(t).Postgres.SocketDir,
		"password_encryption":     "scram-sha-256",
		// Fast settings for tests, production ones when durable (bench,
		// SLICEHUB_PG_DURABLE=1).
		"fsync":              map[bool]string{true: "on", false: "off"}[durable(Options{Docker: true})],
		"synchronous_commit": map[bool]string{true: "on", false: "off"}[durable(Options{Docker: true})],
	} {
		var got string
		if err := conn.QueryRow(t.Context(), "SELECT current_setting($1)", name).Scan(&got); err != nil || got != want {
			t.Errorf("current_setting(%s): got %q, %v; want %q", name, got, err, want)
		}
	}
}

func TestConsulHasLeaderAndUI(t *testing.T) {
	c, err := Stack(t).Consul.Client()
	if err != nil {
		t.Fatal(err)
	}
	if leader, err := c.Status().Leader(); err != nil || leader == "" {
		t.Fatalf("consul leader: got %q, %v", leader, err)
	}
	resp, err := http.Get("http://" + Stack(t).Consul.Addr + "/ui/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("GET /ui/: %s, want 200", resp.Status)
	}
}

func nomadClient(t *testing.T) *nomadapi.Client {
	t.Helper()
	c, err := Stack(t).Nomad.Client()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestNomadNodeReadyWithDocker(t *testing.T) {
	c := nomadClient(t)
	nodes, _, err := c.Nodes().List(nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(nodes) != 1 || nodes[0].Name != Stack(t).NodeName || nodes[0].Status != nomadapi.NodeStatusReady {
		t.Fatalf("nodes: got %+v, want one ready node named %s", nodes, Stack(t).NodeName)
	}
	node, _, err := c.Nodes().Info(nodes[0].ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"docker", "raw_exec"} {
		if info := node.Drivers[d]; info == nil || !info.Detected || !info.Healthy {
			t.Errorf("driver %s: %+v, want detected and healthy", d, info)
		}
	}
	if hv := node.HostVolumes["slice-profiles"]; hv == nil || hv.Path != Stack(t).Nomad.ProfilesDir || hv.ReadOnly {
		t.Errorf("host volume slice-profiles: %+v, want read-write at %s", hv, Stack(t).Nomad.ProfilesDir)
	}
	cfg, _, err := c.Operator().SchedulerGetConfiguration(nil)
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.SchedulerConfig.MemoryOversubscriptionEnabled {
		t.Error("memory oversubscription is disabled; memory_max would be ignored")
	}
}

func serviceJob(id string) *nomadapi.Job {
	task := nomadapi.NewTask("main", "raw_exec").
		SetConfig("command", "/bin/sleep").SetConfig("args", []string{"3600"})
	task.Require(&nomadapi.Resources{CPU: new(20), MemoryMB: new(32)})
	task.KillTimeout = new(3 * time.Second)
	tg := nomadapi.NewTaskGroup("main", 1).AddTask(task)
	tg.Networks = []*nomadapi.NetworkResource{{DynamicPorts: []nomadapi.Port{{Label: "http"}}}}
	tg.Services = []*nomadapi.Service{{Name: id, PortLabel: "http", Provider: "consul", Meta: map[string]string{"slice_id": "7"}}}
	job := nomadapi.NewServiceJob(id, id, "global", 50)
	job.Datacenters = []string{"dc1"}
	return job.AddTaskGroup(tg)
}

// Nomad registers group services in Consul with the loopback address, which
// is what the gateway dials.
func TestNomadServiceRegistersInConsulOnLoopback(t *testing.T) {
	c := nomadClient(t)
	const id = "svc-loopback"
	if _, _, err := c.Jobs().Register(serviceJob(id), nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _, _ = c.Jobs().Deregister(id, true, nil) })
	cc, err := Stack(t).Consul.Client()
	if err != nil {
		t.Fatal(err)
	}
	var svcs []*consulapi.CatalogService
	Eventually(t, time.Minute, "service "+id+" in the Consul catalog", func() (bool, error) {
		svcs, _, err = cc.Catalog().Service(id, "", nil)
		return len(svcs) == 1, err
	})
	n := Stack(t).Nomad
	if s := svcs[0]; s.ServiceAddress != "127.0.0.1" || s.ServicePort < n.MinDynamicPort || s.ServicePort > n.MaxDynamicPort || s.ServiceMeta["slice_id"] != "7" {
		t.Errorf("service: address %q port %d meta %v; want 127.0.0.1, a port in the stack's range %d-%d, slice_id=7",
			s.ServiceAddress, s.ServicePort, s.ServiceMeta, n.MinDynamicPort, n.MaxDynamicPort)
	}
}

const sleeperImage = "slicehub-test-sleeper:1"

// buildSleeper builds a scratch image around a static binary that waits for
// SIGTERM: no registry is reachable here.
var buildSleeper = sync.OnceValue(func() error {
	dir, err := os.MkdirTemp("", "sleeper-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	src := "package main\n\nimport (\n\t\"os\"\n\t\"os/signal\"\n\t\"syscall\"\n)\n\nfunc main() {\n\tc := make(chan os.Signal, 1)\n\tsignal.Notify(c, syscall.SIGTERM, syscall.SIGINT)\n\t<-c\n}\n"
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(src), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte("FROM scratch\nCOPY sleeper /sleeper\nENTRYPOINT [\"/sleeper\"]\n"), 0o644); err != nil {
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

func dockerJob(id string) *nomadapi.Job {
	task := nomadapi.NewTask("main", "docker").SetConfig("image", sleeperImage)
	task.Require(&nomadapi.Resources{CPU: new(20), MemoryMB: new(32)})
	task.KillTimeout = new(3 * time.Second)
	job := nomadapi.NewServiceJob(id, id, "global", 50)
	job.Datacenters = []string{"dc1"}
	return job.AddTaskGroup(nomadapi.NewTaskGroup("main", 1).AddTask(task))
}

func containersOf(t *testing.T, node string) []string {
	t.Helper()
	out, err := exec.Command("docker", "ps", "-aq", "--filter", "label=com.hashicorp.nomad.node_name="+node).Output()
	if err != nil {
		t.Fatalf("docker ps: %v", err)
	}
	return strings.Fields(string(out))
}

// Stop and the next run find a node's containers by this label.
func TestDockerTaskCarriesNodeLabel(t *testing.T) {
	if err := buildSleeper(); err != nil {
		t.Fatal(err)
	}
	c := nomadClient(t)
	const id = "labelled"
	if _, _, err := c.Jobs().Register(dockerJob(id), nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _, _ = c.Jobs().Deregister(id, true, nil) })
	Eventually(t, time.Minute, "a container labelled with the node name", func() (bool, error) {
		return len(containersOf(t, Stack(t).NodeName)) == 1, nil
	})
}

func TestNewDatabase(t *testing.T) {
	var name string
	t.Run("use", func(t *testing.T) {
		url := NewDatabase(t)
		other := NewDatabase(t)
		if url == other {
			t.Fatalf("two NewDatabase calls returned the same URL %s", url)
		}
		conn := connect(t, url)
		if err := conn.QueryRow(t.Context(), "SELECT current_database()").Scan(&name); err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(name, "t_testnewdatabase_use_") {
			t.Errorf("database name %q does not name the test", name)
		}
		if _, err := conn.Exec(t.Context(), "CREATE TABLE x (id int); INSERT INTO x VALUES (1)"); err != nil {
			t.Fatal(err)
		}
		// The connection stays open: the drop must not wait for it.
	})
	var exists bool
	err := connect(t, Stack(t).Postgres.URL).QueryRow(t.Context(), "SELECT EXISTS (SELECT FROM pg_database WHERE datname = $1)", name).Scan(&exists)
	if err != nil || exists {
		t.Errorf("database %s after its test ended: exists=%v, %v; want dropped", name, exists, err)
	}
}

func TestDatabaseNameFitsPostgres(t *testing.T) {
	name := databaseName("TestSomething/with a very long subtest name that goes on and on and on " + strings.Repeat("x", 80))
	if len(name) > 63 || strings.Trim(name, "abcdefghijklmnopqrstuvwxyz0123456789_") != "" {
		t.Errorf("databaseName: %q (%d bytes); want at most 63 bytes of [a-z0-9_]", name, len(name))
	}
}

// fatalRecorder stands in for a test to observe Eventually's failure.
type fatalRecorder struct {
	testing.TB
	msg string
}

func (r *fatalRecorder) Fatalf(format string, args ...any) {
	r.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func TestEventually(t *testing.T) {
	n := 0
	Eventually(t, 5*time.Second, "third poll", func() (bool, error) {
		n++
		return n == 3, errors.New("not yet")
	})
	if n != 3 {
		t.Errorf("Eventually polled %d times, want 3", n)
	}

	rec := &fatalRecorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		Eventually(rec, 200*time.Millisecond, "the impossible", func() (bool, error) {
			return false, errors.New("still impossible")
		})
	}()
	<-done
	if !strings.Contains(rec.msg, "the impossible") || !strings.Contains(rec.msg, "still impossible") {
		t.Errorf("Eventually's failure %q does not say what was awaited and the last error", rec.msg)
	}
}

func deadPID(t *testing.T) int {
	t.Helper()
	cmd := exec.Command("/bin/true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	return cmd.Process.Pid
}

func TestLeftoversOfDeadRunsAreRemoved(t *testing.T) {
	SkipShort(t) // builds an image and creates a container
	if err := buildSleeper(); err != nil {
		t.Fatal(err)
	}
	dead := Prefix + strconv.Itoa(deadPID(t))
	deadDir, err := os.MkdirTemp("", dead+"-")
	if err != nil {
		t.Fatal(err)
	}
	// pid 1 is alive: its directory is not a leftover.
	liveDir, err := os.MkdirTemp("", Prefix+"1-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(liveDir)
	out, err := exec.Command("docker", "create", "--label", "com.hashicorp.nomad.node_name="+dead, sleeperImage).CombinedOutput()
	if err != nil {
		t.Fatalf("docker create: %v: %s", err, out)
	}
	id := strings.TrimSpace(string(out))
	defer exec.Command("docker", "rm", "-f", id).Run()

	removeLeftovers()
	if _, err := os.Stat(deadDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("directory of a dead run %s: still there (%v)", deadDir, err)
	}
	if _, err := os.Stat(liveDir); err != nil {
		t.Errorf("directory of a live process %s: %v", liveDir, err)
	}
	if got := containersOf(t, dead); len(got) != 0 {
		t.Errorf("containers of the dead run %s: %v", dead, got)
	}
}

const panicHelperEnv = "TESTSUPPORT_PANIC_HELPER"

// TestPanicHelper runs only inside TestWatchdogStopsStackAfterPanic's child:
// it starts work on the stack, says what runs, and panics in the test
// goroutine, which ends the process without running any deferred teardown.
func TestPanicHelper(t *testing.T) {
	if os.Getenv(panicHelperEnv) == "" {
		t.Skip("helper of TestWatchdogStopsStackAfterPanic")
	}
	if err := buildSleeper(); err != nil {
		t.Fatal(err)
	}
	c := nomadClient(t)
	for _, job := range []*nomadapi.Job{serviceJob("doomed-raw"), dockerJob("doomed-docker")} {
		if _, _, err := c.Jobs().Register(job, nil); err != nil {
			t.Fatal(err)
		}
	}
	Eventually(t, time.Minute, "both jobs running", func() (bool, error) {
		allocs, _, err := c.Allocations().List(nil)
		running := 0
		for _, a := range allocs {
			if a.ClientStatus == nomadapi.AllocClientStatusRunning {
				running++
			}
		}
		return running == 2, err
	})
	var procs [][2]uint64
	for _, pid := range Stack(t).PIDs() {
		procs = append(procs, procTree(pid)...)
	}
	b, _ := json.Marshal(map[string]any{"dir": Stack(t).Dir, "node": Stack(t).NodeName, "procs": procs})
	fmt.Printf("STACK %s\n", b)
	panic("testsupport: deliberate panic in a test goroutine")
}

// procTree lists pid and its descendants as (pid, start time).
func procTree(root int) [][2]uint64 {
	children := map[int][]int{}
	starts := map[int]uint64{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if s, ok := stat(pid); ok {
			children[s.ppid] = append(children[s.ppid], pid)
			starts[pid] = s.start
		}
	}
	var out [][2]uint64
	for queue := []int{root}; len(queue) > 0; queue = queue[1:] {
		p := queue[0]
		out = append(out, [2]uint64{uint64(p), starts[p]})
		queue = append(queue, children[p]...)
	}
	return out
}

type pstat struct {
	ppid  int
	start uint64
}

func stat(pid int) (pstat, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return pstat{}, false
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 20 || f[0] == "Z" {
		return pstat{}, false
	}
	ppid, _ := strconv.Atoi(f[1])
	start, _ := strconv.ParseUint(f[19], 10, 64)
	return pstat{ppid, start}, true
}

func TestWatchdogStopsStackAfterPanic(t *testing.T) {
	SkipShort(t) // the helper it runs starts a stack
	cmd := exec.Command(os.Args[0], "-test.run=^TestPanicHelper$", "-test.v")
	cmd.Env = append(os.Environ(), panicHelperEnv+"=1")
	// Stderr is a pipe that the watchdog inherits: Wait returns once the
	// watchdog is done too.
	cmd.Stderr = t.Output()
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var report struct {
		Dir   string      `json:"dir"`
		Node  string      `json:"node"`
		Procs [][2]uint64 `json:"procs"`
	}
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		if line, ok := strings.CutPrefix(sc.Text(), "STACK "); ok {
			if err := json.Unmarshal([]byte(line), &report); err != nil {
				t.Fatal(err)
			}
		}
	}
	err = cmd.Wait()
	if report.Dir == "" {
		t.Fatalf("the helper did not report its stack (exit: %v)", err)
	}
	if err == nil {
		t.Fatal("the helper did not fail; it should have panicked")
	}
	t.Logf("helper exited (%v) with %d processes in its stack", err, len(report.Procs))
	Eventually(t, time.Minute, "the helper's stack gone", func() (bool, error) {
		if _, err := os.Stat(report.Dir); err == nil {
			return false, fmt.Errorf("%s still exists", report.Dir)
		}
		for _, p := range report.Procs {
			if s, ok := stat(int(p[0])); ok && s.start == p[1] {
				return false, fmt.Errorf("process %d still runs", p[0])
			}
		}
		if ids := containersOf(t, report.Node); len(ids) > 0 {
			return false, fmt.Errorf("containers left: %v", ids)
		}
		return true, nil
	})
}

func TestLoggerOutlivesItsTest(t *testing.T) {
	var lg *slog.Logger
	t.Run("inner", func(t *testing.T) {
		lg = Logger(t)
		lg.Info("during the test")
	})
	// The test is over: this must not panic.
	lg.Info("after the test")
}
