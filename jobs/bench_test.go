package jobs_test

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	consulapi "github.com/hashicorp/consul/api"
	nomadapi "github.com/hashicorp/nomad/api"

	"github.com/slicehub/slicehub"
	"github.com/slicehub/slicehub/slice/standin"
	"github.com/slicehub/slicehub/testsupport"
)

// benchEnv is what the benchmarks share: the docker job registered with the
// stand-in page, once per test binary. It lives until the stack is torn
// down (which purges the jobs).
type benchEnv struct {
	nomad  *nomadapi.Client
	consul *consulapi.Client
	gw     *bootstrapGateway
	sv     *standin.Server
	err    error
}

var (
	benchOnce  sync.Once
	bench      benchEnv
	benchSlice atomic.Int64
)

func benchSetup(b *testing.B) *benchEnv {
	b.Helper()
	benchOnce.Do(func() {
		stack := testsupport.Stack(b)
		if bench.nomad, bench.err = stack.Nomad.Client(); bench.err != nil {
			return
		}
		if bench.consul, bench.err = stack.Consul.Client(); bench.err != nil {
			return
		}
		// Not tied to b: the servers must outlive this benchmark's run.
		bench.gw = &bootstrapGateway{creds: map[string]slicehub.SliceCredentials{}, claims: map[string]int{}}
		bench.gw.srv = httptest.NewServer(http.HandlerFunc(bench.gw.serve))
		bench.sv = standin.New(standin.Options{Codes: 3, Refresh: 2 * time.Second, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		wa := httptest.NewServer(bench.sv)
		registerSliceJob(b, bench.nomad, map[string]string{
			"image": testsupport.SliceImage(b), "bootstrap_url": bench.gw.srv.URL, "datacenters": "dc1",
			"seccomp_profile": seccompProfile(b), "wa_url": wa.URL + "/",
		})
		benchSlice.Store(1000)
	})
	if bench.err != nil {
		b.Fatal(bench.err)
	}
	return &bench
}

// newBenchSlice prepares the credentials and the profile directory of a new
// slice id; its database is dropped when the benchmark run ends.
func (e *benchEnv) newBenchSlice(b *testing.B) (id, token string) {
	id = strconv.FormatInt(benchSlice.Add(1), 10)
	token = "bench-token-" + id
	e.gw.add(id, slicehub.SliceCredentials{DatabaseURL: testsupport.NewDatabase(b), GatewayToken: token})
	profileDir(b, id)
	return id, token
}

// BenchmarkSliceDispatch measures the time from Dispatch to the slice's
// instance passing its check in Consul, docker driver, image present. Each
// iteration dispatches a new slice (its own database and profile), as the
// warm pool does. Reported as s/dispatch; the slices are purged after the
// run.
func BenchmarkSliceDispatch(b *testing.B) {
	e := benchSetup(b)
	var total time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		id, _ := e.newBenchSlice(b)
		b.StartTimer()
		t0 := time.Now()
		dispatchSlice(b, e.nomad, id)
		waitPassing(b, e.consul, id)
		total += time.Since(t0)
	}
	b.StopTimer()
	b.ReportMetric(total.Seconds()/float64(b.N), "s/dispatch")
	b.ReportMetric(0, "ns/op")
}

// idleFigures are measured once per test binary by BenchmarkSliceIdle.
type idleFigures struct {
	toQR, toConnected          time.Duration
	rssMB, usageMB, cacheMB    float64 // the first slice on the host
	nextRSSMB, nextUsageMB     float64 // a second one beside it
	logmonMB, loggerMB         float64 // PSS per allocation
	logmonAnonMB, loggerAnonMB float64 // the anonymous part of it
	logmons, loggers           int
	writerMB                   float64 // PSS of the slice's own log writer (its entrypoint), per allocation
	allocs                     int
	err                        error
}

var (
	idleOnce sync.Once
	idle     idleFigures
)

// BenchmarkSliceIdle reports what one idle slice costs, Chromium included:
// a slice is dispatched, linked on the stand-in page, left alone, and its
// memory read from Nomad's allocation stats (the task's cgroup):
//
//	MB-rss       anonymous memory (cgroup total_rss) of the first slice
//	MB-usage     its cgroup usage, page cache included: the first slice on a
//	             host is charged for the pages of the Chromium binary it reads
//	MB-cache     the page cache part of it
//	MB-next-rss, MB-next-usage   the same for a second slice started beside
//	             it, which finds those pages cached (the image layers are
//	             shared): what each further slice on the host costs
//
// and Nomad's own overhead per allocation, the PSS of the agent's logmon
// and docker_logger processes, and its anonymous part (from
// /proc/<pid>/smaps_rollup; with one allocation, the PSS still carries half
// of the nomad binary's pages, shared with the agent). The measurement is
// taken once; b.N does not apply.
func BenchmarkSliceIdle(b *testing.B) {
	e := benchSetup(b)
	idleOnce.Do(func() { idle = e.measureIdle(b) })
	if idle.err != nil {
		b.Fatal(idle.err)
	}
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(idle.toQR.Seconds(), "s-to-qr")
	b.ReportMetric(idle.toConnected.Seconds(), "s-scan-to-connected")
	b.ReportMetric(idle.rssMB, "MB-rss")
	b.ReportMetric(idle.usageMB, "MB-usage")
	b.ReportMetric(idle.cacheMB, "MB-cache")
	b.ReportMetric(idle.nextRSSMB, "MB-next-rss")
	b.ReportMetric(idle.nextUsageMB, "MB-next-usage")
	b.ReportMetric(idle.logmonMB, "MB-logmon-pss/alloc")
	b.ReportMetric(idle.loggerMB, "MB-docker_logger-pss/alloc")
	b.ReportMetric(idle.logmonAnonMB, "MB-logmon-anon/alloc")
	b.ReportMetric(idle.loggerAnonMB, "MB-docker_logger-anon/alloc")
	b.ReportMetric(idle.writerMB, "MB-log-writer-pss/alloc")
}

func (e *benchEnv) measureIdle(b *testing.B) (f idleFigures) {
	first, err := e.idleSlice(b, &f)
	if err != nil {
		f.err = err
		return f
	}
	f.rssMB, f.usageMB, f.cacheMB = first.rss, first.usage, first.cache
	second, err := e.idleSlice(b, nil)
	if err != nil {
		f.err = err
		return f
	}
	f.nextRSSMB, f.nextUsageMB = second.rss, second.usage

	// Nomad's helpers run as children of the agent: one logmon per task,
	// one docker_logger per docker task.
	allocs, _, err := e.nomad.Allocations().List(nil)
	if err != nil {
		f.err = err
		return f
	}
	for _, a := range allocs {
		if a.ClientStatus == nomadapi.AllocClientStatusRunning {
			f.allocs++
		}
	}
	h := nomadHelpers(testsupport.Stack().PIDs()["nomad"])
	f.logmons, f.loggers = h.logmons, h.loggers
	if f.allocs > 0 {
		n := float64(f.allocs)
		f.logmonMB, f.loggerMB = h.logmonPss/n, h.loggerPss/n
		f.logmonAnonMB, f.loggerAnonMB = h.logmonAnon/n, h.loggerAnon/n
	}
	writers, writerPss := logWriters()
	if writers > 0 {
		f.writerMB = writerPss / float64(writers)
	}
	b.Logf("the slices' own log writers (slice entrypoint): %d, %.1f MB PSS", writers, writerPss)
	b.Logf("idle slices: first rss %.0f MB, usage %.0f MB (cache %.0f MB); second rss %.0f MB, usage %.0f MB; "+
		"dispatch to QR %v, scan to connected %v; %d running allocations, %d logmon (%.1f MB PSS, %.1f MB anon), "+
		"%d docker_logger (%.1f MB PSS, %.1f MB anon)",
		f.rssMB, f.usageMB, f.cacheMB, f.nextRSSMB, f.nextUsageMB, f.toQR.Round(time.Millisecond), f.toConnected.Round(time.Millisecond),
		f.allocs, f.logmons, h.logmonPss, h.logmonAnon, f.loggers, h.loggerPss, h.loggerAnon)
	return f
}

type memReading struct{ rss, usage, cache float64 }

// idleSlice dispatches a slice, links it on the stand-in, lets it idle and
// returns the highest of ten readings of its allocation's memory, one a
// second. times, when not nil, receives the dispatch-to-QR and
// scan-to-connected durations.
func (e *benchEnv) idleSlice(b *testing.B, times *idleFigures) (memReading, error) {
	var m memReading
	id, token := e.newBenchSlice(b)
	t0 := time.Now()
	dispatchSlice(b, e.nomad, id)
	entry := waitPassing(b, e.consul, id)
	api := apiOf(b, entry, token)
	api.waitState(slicehub.WAQR, time.Minute)
	toQR := time.Since(t0)
	var q struct{ QR string }
	testsupport.Eventually(b, 15*time.Second, "a QR payload", func() (bool, error) {
		code, err := api.do("GET", "/api/status/qr?format=json", "", &q)
		return code == 200 && q.QR != "", err
	})
	session, _ := standin.SessionFromPayload(q.QR)
	t1 := time.Now()
	if err := e.sv.Scan(session); err != nil {
		return m, err
	}
	api.waitState(slicehub.WAConnected, 30*time.Second)
	if times != nil {
		times.toQR, times.toConnected = toQR, time.Since(t1)
	}
	alloc, _, err := e.nomad.Allocations().Info(entry.Service.Meta["alloc_id"], nil)
	if err != nil {
		return m, err
	}
	// Idle means after the login settled (Local Storage flushed, snapshot
	// saved): a fixed wait, not a synchronisation.
	settle := time.NewTimer(15 * time.Second)
	<-settle.C
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for i := 0; i < 10; i++ {
		<-tick.C
		st, err := e.nomad.Allocations().Stats(alloc, nil)
		if err != nil || st.ResourceUsage == nil || st.ResourceUsage.MemoryStats == nil {
			return m, fmt.Errorf("allocation stats: %v", err)
		}
		ms := st.ResourceUsage.MemoryStats
		m.rss = max(m.rss, float64(ms.RSS)/(1<<20))
		m.usage = max(m.usage, float64(ms.Usage)/(1<<20))
		m.cache = max(m.cache, float64(ms.Cache)/(1<<20))
	}
	return m, nil
}

// helperMem is the memory of the agent's helper processes, in MB.
type helperMem struct {
	logmons, loggers                             int
	logmonPss, logmonAnon, loggerPss, loggerAnon float64
}

// nomadHelpers sums the PSS of the agent's logmon and docker_logger
// children.
func nomadHelpers(agent int) (h helperMem) {
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || ppid(pid) != agent {
			continue
		}
		cmd, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		args := strings.Split(strings.TrimRight(string(cmd), "\x00"), "\x00")
		if len(args) < 2 {
			continue
		}
		pss, anon := smapsMB(pid)
		switch args[1] {
		case "logmon":
			h.logmons++
			h.logmonPss += pss
			h.logmonAnon += anon
		case "docker_logger":
			h.loggers++
			h.loggerPss += pss
			h.loggerAnon += anon
		}
	}
	return h
}

// logWriters counts the slices' entrypoints that stayed to write their
// slice's logs (slice.RunWithLogs), what replaced logmon and docker_logger,
// and sums their PSS.
func logWriters() (n int, pss float64) {
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmd, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		args := strings.Split(strings.TrimRight(string(cmd), "\x00"), "\x00")
		if len(args) >= 2 && args[0] == "/usr/local/bin/slice" && args[1] == "entrypoint" {
			p, _ := smapsMB(pid)
			n++
			pss += p
		}
	}
	return n, pss
}

// allocHelpers names the agent's logmon and docker_logger children that
// serve allocation allocID: those with a file open under its directory
// (logmon's FIFOs and log files, docker_logger's FIFOs, in alloc/logs).
func allocHelpers(agent int, allocID string) []string {
	var found []string
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || ppid(pid) != agent {
			continue
		}
		cmd, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		args := strings.Split(strings.TrimRight(string(cmd), "\x00"), "\x00")
		if len(args) < 2 || (args[1] != "logmon" && args[1] != "docker_logger") {
			continue
		}
		fds, _ := os.ReadDir(filepath.Join("/proc", e.Name(), "fd"))
		for _, fd := range fds {
			target, _ := os.Readlink(filepath.Join("/proc", e.Name(), "fd", fd.Name()))
			if strings.Contains(target, allocID) {
				found = append(found, args[1])
				break
			}
		}
	}
	return found
}

func ppid(pid int) int {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	fields := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
	if len(fields) < 2 {
		return 0
	}
	p, _ := strconv.Atoi(fields[1])
	return p
}

// smapsMB reads a process's Pss and Pss_Anon.
func smapsMB(pid int) (pss, anon float64) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return 0, 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	kb := func(v string) float64 {
		n, _ := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 64)
		return n / 1024
	}
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "Pss:"); ok {
			pss = kb(v)
		} else if v, ok := strings.CutPrefix(sc.Text(), "Pss_Anon:"); ok {
			anon = kb(v)
		}
	}
	return pss, anon
}
