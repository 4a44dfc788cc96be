package gateway

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/fasthttp/websocket"
	vegeta "github.com/tsenart/vegeta/v12/lib"
	"golang.org/x/sys/unix"

	"github.com/slicehub/slicehub"
	"github.com/slicehub/slicehub/gateway/accounts"
	"github.com/slicehub/slicehub/internal/benchresult"
)

// BenchmarkProxyComparison is `make bench`'s comparison, all on loopback
// and in one run: the same load
//   - direct to a slice (a Go net/http backend answering 17 bytes of JSON,
//     as in docs/architecture.md's baseline, and echoing WebSockets);
//   - through nginx proxy_pass (Debian's nginx, configured here as the
//     gateway runs: as many workers as gateway replicas, the port shared
//     with reuseport, upstream keep-alive);
//   - through the gateway (session cookie, route, token, header rewrite),
//     as deployed: a replica per CPU of the proxy's share, one P each;
//   - through one gateway process (gw-1proc) and one without its event
//     loops (gw-noloop), to show what those are worth.
//
// Closed loop (wrk -t1 -c32): requests per second and p50/p99, and
// WebSocket echo messages per second (32 connections, one message in
// flight each), every round of every target kept (the report shows min,
// median and max), the targets' order rotating from round to round.
// Open loop (vegeta, a fixed offered rate): p50/p99/p99.9 of direct, nginx
// and the gateway at 50% and 80% of nginx's median maximum, the same rate
// for each, so that "added latency" compares like with like. Then the
// gateway's memory with 10,000 idle WebSockets open (or as many as the
// descriptor limit allows, and the figure scaled to 10,000).
//
// CPUs are pinned with taskset when the machine has two or more: the proxy
// under test gets the upper half, the load generators and the backend the
// lower half (on two cores: one each). Every party runs in its own
// process: the backend, the gateways and the WebSocket and open-loop load
// are this test binary started again in a child mode (benchChild), nginx
// and wrk are themselves. It ignores b.N: one run takes minutes, which
// `go test -bench` counts as one iteration. It skips when wrk or nginx is
// missing (make tools installs both).
//
// Knobs for a short smoke run (never for published figures):
// SLICEHUB_BENCH_DURATION (3s), SLICEHUB_BENCH_ROUNDS (5),
// SLICEHUB_BENCH_IDLE_WS (10000).
func BenchmarkProxyComparison(b *testing.B) {
	wrk, err := exec.LookPath("wrk")
	if err != nil {
		b.Skip("wrk is not installed (apt install wrk)")
	}
	nginxBin := lookNginx()
	if nginxBin == "" {
		b.Skip("nginx is not installed (apt install nginx)")
	}
	idleWS := envInt("SLICEHUB_BENCH_IDLE_WS", 10_000)
	// Each idle WebSocket holds a descriptor in the client, two in the
	// gateway (browser side, slice side) and one in the backend; the limit
	// is per process.
	limit := raiseNoFile(b, 2*idleWS+100)
	dur := envDuration("SLICEHUB_BENCH_DURATION", 3*time.Second)
	rounds := envInt("SLICEHUB_BENCH_ROUNDS", 5)
	cpus := planCPUs()
	b.Logf("CPUs: %s", cpus.describe())
	ports := newPortMeter(b)

	backend := startChildOn(b, cpus.load, "backend", nil)
	nginxAddr, nginxPid := startNginx(b, nginxBin, backend.addr, cpus.proxyN, cpus.proxy)
	// Every gateway child accepts one session token, so one cookie serves all.
	token, _ := accounts.NewToken()
	cookie := slicehub.SessionCookie + "=" + token
	gwEnv := func(extra ...string) map[string]string {
		env := map[string]string{"SLICEHUB_BENCH_BACKEND": backend.addr, "SLICEHUB_BENCH_TOKEN": token}
		for i := 0; i+1 < len(extra); i += 2 {
			env[extra[i]] = extra[i+1]
		}
		return env
	}
	// "gateway" is the gateway deployed as nginx deploys itself, and as
	// jobs/gateway.nomad.hcl runs it: one replica per CPU, each with one
	// P (GOMAXPROCS=1) and so one event loop, whose only thread waits in
	// the poller itself. The edge spreads connections over replicas; here
	// the kernel does, the replicas sharing one port (SO_REUSEPORT), as
	// nginx's workers share theirs (reuseport above).
	shared := fmt.Sprintf("127.0.0.1:%d", freePort(b))
	var replicas []*child
	// The first replica can profile itself on demand: the last round's
	// WebSocket echo is profiled, and the report shows where it spends.
	wsProfile := filepath.Join(b.TempDir(), "ws.pprof")
	for i := 0; i < cpus.proxyN; i++ {
		env := gwEnv("SLICEHUB_BENCH_ADDR", shared, "GOMAXPROCS", "1")
		if i == 0 {
			env["SLICEHUB_BENCH_WSPROFILE"] = wsProfile
		}
		replicas = append(replicas, startChildOn(b, cpus.proxy, "gateway", env))
	}
	procs := strconv.Itoa(cpus.proxyN)
	// One process with every CPU of the proxy's share (a loop per CPU):
	// `make run`'s shape.
	gw := startChildOn(b, cpus.proxy, "gateway", gwEnv("GOMAXPROCS", procs))
	// The same process without its event loops: what they are worth.
	gwFast := startChildOn(b, cpus.proxy, "gateway", gwEnv("SLICEHUB_BENCH_NO_LOOP", "1", "GOMAXPROCS", procs))

	// gw-real: gw-1proc's shape with its real dependencies (sessions in
	// PostgreSQL, routes from Consul's catalog); SLICEHUB_BENCH_NO_REAL=1
	// leaves it out (no agents needed then).
	var gwReal *child
	if os.Getenv("SLICEHUB_BENCH_NO_REAL") != "1" {
		deps := startRealDeps(b, backend.addr)
		gwReal = startChildOn(b, cpus.proxy, "gateway-real", gwEnv("GOMAXPROCS", procs, "SLICEHUB_BENCH_DATABASE_URL", deps.dbURL,
			"SLICEHUB_BENCH_CONSUL", deps.consul, "SLICEHUB_BENCH_CONSUL_TOKEN", deps.consulToken,
			"SLICEHUB_BENCH_ALLOC_ID", deps.allocID, "SLICEHUB_BENCH_ALLOC_ADDR", deps.addr,
			"SLICEHUB_BENCH_SLICE_ID", strconv.FormatInt(deps.sliceID, 10)))
	}

	targets := []struct{ name, addr, cookie string }{{"direct", backend.addr, cookie}, {"nginx", nginxAddr, cookie},
		{"gateway", shared, cookie}, {"gw-1proc", gw.addr, cookie}, {"gw-noloop", gwFast.addr, cookie}}
	if gwReal != nil {
		targets = append(targets, struct{ name, addr, cookie string }{"gw-real", gwReal.addr, cookie})
	}
	// The proxy's own processes, whose CPU time per request the table
	// shows: the throughput ratio swings with whatever else runs, while
	// the CPU a proxy spends on each request is its own.
	proxyPids := map[string]func() []int{
		"nginx": func() []int { return childrenOf(nginxPid) }, // the workers
		"gateway": func() []int {
			var pids []int
			for _, r := range replicas {
				pids = append(pids, r.cmd.Process.Pid)
			}
			return pids
		},
		"gw-1proc":  func() []int { return []int{gw.cmd.Process.Pid} },
		"gw-noloop": func() []int { return []int{gwFast.cmd.Process.Pid} },
	}
	if gwReal != nil {
		proxyPids["gw-real"] = func() []int { return []int{gwReal.cmd.Process.Pid} }
	}
	rows := map[string][]benchresult.ProxyRound{}
	for _, tg := range targets {
		// A short warm-up fills the keep-alive pools and the caches; a
		// target that fails it is broken, not slow.
		ports.phase("warm-up "+tg.name, func() {
			res, err := runWrk(wrk, cpus.load, "http://"+tg.addr+"/api/status/state", tg.cookie, time.Second)
			if err == nil && res.failed() != "" {
				err = errors.New(res.failed())
			}
			if err != nil {
				b.Fatalf("wrk %s (warm-up): %v", tg.name, err)
			}
		})
	}
	// Every round runs every target, in an order rotated by one each
	// round, so that no target always follows the same one (a warm or
	// cold cache, the tail of the previous target's work); the report
	// keeps every round.
	for round := 0; round < rounds; round++ {
		order := rotate(len(targets), round)
		results := make([]benchresult.ProxyRound, len(targets))
		for pos, i := range order {
			tg := targets[i]
			var pids []int
			if f := proxyPids[tg.name]; f != nil {
				pids = f()
			}
			ports.phase(fmt.Sprintf("round %d wrk %s", round+1, tg.name), func() {
				cpu0 := cpuSeconds(pids)
				res, err := runWrk(wrk, cpus.load, "http://"+tg.addr+"/api/status/state", tg.cookie, dur)
				if err != nil {
					b.Fatalf("wrk %s: %v", tg.name, err)
				}
				results[i] = benchresult.ProxyRound{Position: pos, Requests: int64(res.requests), Non2xx: res.non2xx, SocketErrors: res.socketErrors}
				// A round with error answers has no figures: a closed loop
				// counts a fast 502 as a request served.
				if results[i].Failed = res.failed(); results[i].Failed != "" {
					b.Logf("wrk %s round %d: %s", tg.name, round+1, results[i].Failed)
					return
				}
				results[i].ReqPerSec, results[i].P50, results[i].P99 = res.rps, res.p50, res.p99
				if len(pids) > 0 && res.requests > 0 {
					results[i].CPUPerReq = (cpuSeconds(pids) - cpu0) / res.requests
				}
			})
		}
		for _, i := range order {
			tg := targets[i]
			profiled := tg.name == "gateway" && round == rounds-1
			if profiled {
				_ = replicas[0].cmd.Process.Signal(syscall.SIGUSR1)
				replicas[0].wait(b, "PROFILING")
			}
			var msgs float64
			ports.phase(fmt.Sprintf("round %d ws %s", round+1, tg.name), func() {
				load := startChildOn(b, cpus.load, "wsload", map[string]string{
					"SLICEHUB_BENCH_TARGET": "ws://" + tg.addr + "/socket.io/echo", "SLICEHUB_BENCH_COOKIE": tg.cookie,
					"SLICEHUB_BENCH_CONNS": "32", "SLICEHUB_BENCH_DURATION": dur.String(),
				})
				var err error
				if msgs, err = strconv.ParseFloat(load.wait(b, "MSGS"), 64); err != nil {
					b.Fatalf("ws load %s: %v", tg.name, err)
				}
				load.stop()
			})
			if profiled {
				_ = replicas[0].cmd.Process.Signal(syscall.SIGUSR2)
				replicas[0].wait(b, "PROFILED")
			}
			results[i].WSMsgsSec = msgs / dur.Seconds()
		}
		for i, tg := range targets {
			rows[tg.name] = append(rows[tg.name], results[i])
		}
	}
	med := map[string]benchresult.ProxyTarget{}
	for _, tg := range targets {
		med[tg.name] = medians(tg.name, rows[tg.name])
	}

	// Open loop: a fixed offered rate, the same for every target, at 50%
	// and 80% of nginx's median maximum. Latency at a rate a proxy cannot
	// sustain is queueing, not the proxy; at equal rates the difference
	// between targets is what each adds. nginx's maximum is the median of
	// its clean rounds only (medians leaves failed ones out): a failed
	// round's rate is error answers, several times too high.
	if med["nginx"].ReqPerSec == 0 {
		b.Fatalf("no clean nginx round (%d rounds, all with error answers or socket errors): the open-loop rates are fractions of nginx's maximum", rounds)
	}
	var lat []benchresult.ProxyLatency
	for _, frac := range []float64{0.5, 0.8} {
		rate := frac * med["nginx"].ReqPerSec
		open := []int{0, 1, 2} // direct, nginx, gateway
		if gwReal != nil {
			open = append(open, len(targets)-1) // gw-real
		}
		for _, i := range rotateSlice(open, int(frac*10)) {
			tg := targets[i]
			ports.phase(fmt.Sprintf("open loop %.0f%% %s", 100*frac, tg.name), func() {
				load := startChildOn(b, cpus.load, "openloop", map[string]string{
					"SLICEHUB_BENCH_TARGET": "http://" + tg.addr + "/api/status/state", "SLICEHUB_BENCH_COOKIE": tg.cookie,
					"SLICEHUB_BENCH_RATE": strconv.FormatFloat(rate, 'f', 0, 64), "SLICEHUB_BENCH_DURATION": dur.String(),
				})
				l, err := parseOpenLoop(load.wait(b, "LAT"))
				load.stop()
				if err != nil {
					b.Fatalf("open loop %s at %.0f/s: %v", tg.name, rate, err)
				}
				l.Target, l.Fraction, l.Rate = tg.name, frac, rate
				if l.Failed != "" {
					b.Logf("open loop %s at %.0f/s: %s", tg.name, rate, l.Failed)
				}
				lat = append(lat, l)
			})
		}
	}

	// Memory: one gateway process's resident set before and with idleWS
	// idle WebSockets, each tunnelled to the backend: one replica holding
	// all of them, the harder case (the replicas above would hold a share
	// each).
	idle := min(idleWS, (limit-100)/2) // the gateway holds two descriptors per WebSocket
	before := rssOf(b, gw.cmd.Process.Pid)
	heapBefore := gw.metric(b, "go_memstats_heap_inuse_bytes")
	var opened string
	var with, heapWith float64
	ports.phase("idle WebSockets", func() {
		idler := startChildOn(b, cpus.load, "wsidle", map[string]string{
			"SLICEHUB_BENCH_TARGET": "ws://" + gw.addr + "/socket.io/echo", "SLICEHUB_BENCH_COOKIE": cookie,
			"SLICEHUB_BENCH_CONNS": strconv.Itoa(idle),
		})
		opened = idler.wait(b, "OPEN")
		deadline := time.Now().Add(30 * time.Second)
		for gw.metric(b, "slicehub_gateway_websockets_open") < float64(idle) {
			if time.Now().After(deadline) {
				b.Fatalf("the gateway has %v WebSockets open; want %d", gw.metric(b, "slicehub_gateway_websockets_open"), idle)
			}
			time.Sleep(50 * time.Millisecond) // polling interval, not synchronisation
		}
		with = rssOf(b, gw.cmd.Process.Pid)
		heapWith = gw.metric(b, "go_memstats_heap_inuse_bytes")
		idler.stop()
	})

	var out strings.Builder
	load, _ := os.ReadFile("/proc/loadavg")
	loadAvg := strings.Join(strings.Fields(string(load))[:3], " ")
	fmt.Fprintf(&out, "\nProxy comparison on loopback, %d CPUs (load average before: %s), %d rounds, order rotating; %s\n",
		numCPU(), loadAvg, rounds, cpus.describe())
	fmt.Fprintf(&out, "HTTP: wrk -t1 -c32 -d%s, 17-byte JSON; WebSocket: echo, 32 connections, one message in flight each\n", dur)
	fmt.Fprintf(&out, "nginx: %d workers, reuseport, upstream keepalive; gateway: %d replicas of one P each (GOMAXPROCS=1, one port shared with SO_REUSEPORT); "+
		"gw-1proc: one process, GOMAXPROCS=%d; gw-noloop: the same without event loops; gw-real (when present): gw-1proc with sessions in PostgreSQL and routes from Consul (unpinned)\n", cpus.proxyN, len(replicas), cpus.proxyN)
	fmt.Fprintf(&out, "%-9s %26s %26s %26s %22s %22s\n", "target", "req/s min/med/max", "p50 min/med/max", "p99 min/med/max", "ws msgs/s min/med/max", "proxy CPU/req med")
	for _, tg := range targets {
		r := rows[tg.name]
		cpu := "-"
		if m := med[tg.name]; m.CPUPerReq > 0 {
			cpu = fmt.Sprintf("%.1fus", m.CPUPerReq*1e6)
		}
		fmt.Fprintf(&out, "%-9s %26s %26s %26s %22s %22s\n", tg.name,
			spread(r, func(x benchresult.ProxyRound) float64 { return x.ReqPerSec }, func(v float64) string { return strconv.FormatFloat(v, 'f', 0, 64) }),
			spread(r, func(x benchresult.ProxyRound) float64 { return x.P50 }, fmtSeconds),
			spread(r, func(x benchresult.ProxyRound) float64 { return x.P99 }, fmtSeconds),
			spread(r, func(x benchresult.ProxyRound) float64 { return x.WSMsgsSec }, func(v float64) string { return strconv.FormatFloat(v, 'f', 0, 64) }),
			cpu)
	}
	for _, tg := range targets {
		for r, x := range rows[tg.name] {
			if x.Failed != "" {
				fmt.Fprintf(&out, "%s round %d (left out of min/med/max above): %s\n", tg.name, r+1, x.Failed)
			}
		}
	}
	fmt.Fprintf(&out, "open loop (vegeta, fixed offered rate, %s each; rates from nginx's clean rounds):\n%-9s %6s %9s %9s %10s %10s %10s %8s\n", dur, "target", "of max", "offered", "achieved", "p50", "p99", "p99.9", "2xx")
	for _, l := range lat {
		if l.Failed != "" {
			fmt.Fprintf(&out, "%-9s %5.0f%% %9.0f %9.0f %s\n", l.Target, 100*l.Fraction, l.Rate, l.Achieved, l.Failed)
			continue
		}
		fmt.Fprintf(&out, "%-9s %5.0f%% %9.0f %9.0f %10s %10s %10s %7.2f%%\n", l.Target, 100*l.Fraction, l.Rate, l.Achieved, fmtSeconds(l.P50), fmtSeconds(l.P99), fmtSeconds(l.P999), 100*l.Success)
	}
	fmt.Fprintf(&out, "gateway memory: RSS %.0f MB idle, %.0f MB with %s idle WebSockets (%.1f KB each, so %.0f MB at 10,000; "+
		"Go heap in use %.0f -> %.0f MB)\n",
		before/1e6, with/1e6, opened, (with-before)/float64(idle)/1e3, (before+(with-before)*10_000/float64(idle))/1e6,
		heapBefore/1e6, heapWith/1e6)
	if idle < idleWS {
		fmt.Fprintf(&out, "(%d, not %d: the descriptor limit is %d and cannot be raised here; the gateway holds two per WebSocket)\n",
			idle, idleWS, limit)
	}
	tw := ports.rec
	worst := tw.Max()
	fmt.Fprintf(&out, "TIME-WAIT sockets: %d at the start; every phase waited for fewer than %d (%.0f%% of %d ephemeral ports); "+
		"the most one phase left: %d (%s)\n", tw.AtStart, tw.Limit, 100*portRoomFraction, tw.EphemeralPorts, worst.Left, worst.Phase)
	var left []string
	for _, p := range tw.Phases {
		left = append(left, fmt.Sprintf("%s %d", p.Phase, p.Left))
	}
	fmt.Fprintf(&out, "TIME-WAIT left by each phase (the network namespace's count: other programs add to it): %s\n", strings.Join(left, ", "))
	exe, _ := os.Executable() // every child is this test binary
	wsTop := topOfProfile(exe, wsProfile, 10)
	fmt.Fprintf(&out, "where the gateway's time goes in WebSocket echo (CPU profile of replica 1, last round; pprof -top, 10 lines):\n%s\n", strings.Join(wsTop, "\n"))
	fmt.Print(out.String())
	// The same figures for `make bench`'s dated report (ops/benchreport).
	rec := benchresult.Proxy{At: time.Now(), CPUs: numCPU(), LoadAvg: loadAvg, Pinning: cpus.describe(), Workers: cpus.proxyN,
		Rounds: rounds, Duration: dur.String(), Latency: lat, IdleWS: idle, RSSBeforeMB: before / 1e6, RSSWithMB: with / 1e6,
		RSSAt10kMB: (before + (with-before)*10_000/float64(idle)) / 1e6, HeapBefore: heapBefore / 1e6, HeapWith: heapWith / 1e6,
		WSProfile: wsTop, TimeWait: &tw, Text: out.String()}
	for _, tg := range targets {
		rec.Targets = append(rec.Targets, med[tg.name])
	}
	if err := benchresult.Write("proxy", rec); err != nil {
		b.Logf("the report will lack these figures: %v", err)
	}
	g, n, d := med["gateway"], med["nginx"], med["direct"]
	b.ReportMetric(g.ReqPerSec, "gw_req/s")
	b.ReportMetric(n.ReqPerSec, "nginx_req/s")
	b.ReportMetric(d.ReqPerSec, "direct_req/s")
	if g.CPUPerReq > 0 {
		b.ReportMetric(g.CPUPerReq*1e6, "gw_cpu_us/req")
		b.ReportMetric(n.CPUPerReq*1e6, "nginx_cpu_us/req")
	}
	b.ReportMetric(g.WSMsgsSec, "gw_ws_msgs/s")
	b.ReportMetric(with/1e6, "gw_MB_idle_ws")
}

// medians is a target's figures: the median of each over its rounds.
func medians(name string, rs []benchresult.ProxyRound) benchresult.ProxyTarget {
	pick := func(f func(benchresult.ProxyRound) float64) float64 {
		var v []float64
		for _, r := range rs {
			if x := f(r); x > 0 {
				v = append(v, x)
			}
		}
		if len(v) == 0 {
			return 0
		}
		return median(v)
	}
	return benchresult.ProxyTarget{Name: name, Rounds: rs,
		ReqPerSec: pick(func(r benchresult.ProxyRound) float64 { return r.ReqPerSec }),
		P50:       pick(func(r benchresult.ProxyRound) float64 { return r.P50 }),
		P99:       pick(func(r benchresult.ProxyRound) float64 { return r.P99 }),
		WSMsgsSec: pick(func(r benchresult.ProxyRound) float64 { return r.WSMsgsSec }),
		CPUPerReq: pick(func(r benchresult.ProxyRound) float64 { return r.CPUPerReq })}
}

// spread prints min/median/max of one figure over the rounds.
func spread(rs []benchresult.ProxyRound, f func(benchresult.ProxyRound) float64, format func(float64) string) string {
	var v []float64
	for _, r := range rs {
		if x := f(r); x > 0 { // 0: a failed round, listed below the table
			v = append(v, x)
		}
	}
	if len(v) == 0 {
		return "FAILED"
	}
	return format(slices.Min(v)) + "/" + format(median(v)) + "/" + format(slices.Max(v))
}

// rotate is the order of n targets in round r: 0..n-1 shifted left by r.
func rotate(n, r int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = (i + r) % n
	}
	return out
}

func rotateSlice(v []int, r int) []int {
	out := make([]int, len(v))
	for i, j := range rotate(len(v), r) {
		out[i] = v[j]
	}
	return out
}

// cpuPlan is where each party runs: the proxy under test on one share of
// the CPUs, the load generators and the backend on the other, so that the
// proxy's throughput is not decided by how the kernel happens to schedule
// wrk beside it.
type cpuPlan struct {
	proxy, load string // taskset CPU lists; empty: not pinned
	proxyN      int    // CPUs the proxy may use: nginx's workers, the gateway's replicas
	why         string // when not pinned
}

func planCPUs() cpuPlan {
	n := numCPU()
	if _, err := exec.LookPath("taskset"); err != nil {
		return cpuPlan{proxyN: n, why: "taskset is not installed (util-linux)"}
	}
	if n < 2 {
		return cpuPlan{proxyN: n, why: "one CPU: nothing to split"}
	}
	lo := n / 2 // the load's share: CPUs 0..lo-1; the proxy's: lo..n-1
	list := func(from, to int) string {
		if from == to {
			return strconv.Itoa(from)
		}
		return fmt.Sprintf("%d-%d", from, to)
	}
	return cpuPlan{proxy: list(lo, n-1), load: list(0, lo-1), proxyN: n - lo}
}

func (c cpuPlan) describe() string {
	if c.proxy == "" {
		return fmt.Sprintf("CPUs not pinned (%s): the proxy, the load generators and the backend share all %d", c.why, numCPU())
	}
	return fmt.Sprintf("CPUs pinned with taskset: the proxy under test on CPU %s, the load generators (wrk, vegeta, WebSocket load) and the backend on CPU %s", c.proxy, c.load)
}

func envInt(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil && n > 0 {
		return n
	}
	return def
}

// openLoopConns caps the open-loop generator's connections to a target.
// Uncapped (vegeta's default), every request that finds no idle
// connection dials a new one: a hiccup of a few milliseconds at 10,000/s
// opened thousands to the target, and the proxies as many to the backend:
// closed on the generator's exit, or by a proxy beyond its idle pool
// (nginx keeps 64 idle upstream connections), each into TIME-WAIT: up to
// 15,600 sockets from one 3-second phase, until dials failed.
// 64, as nginx's upstream keepalive, is several times what the rates here
// keep in flight (rate x latency: about 10); a request that waits for a
// connection counts the wait in its latency (vegeta times from before the
// client's Do), so a saturated target still shows as queueing.
const openLoopConns = 64

// openLoopClient is the open-loop generator's HTTP client: keep-alive, at
// most openLoopConns connections, all of which may stay idle (net/http's
// default idle pool of 2 would close all but two after each burst), and a
// dialer without a local address. vegeta's own dialer binds 0.0.0.0:0
// explicitly: bind() must then find a port free of every socket,
// TIME-WAIT ones included, and fails with "address already in use" when
// loopback's TIME-WAIT sockets fill the range, where a plain connect() may
// reuse a TIME-WAIT port (tcp_tw_reuse).
func openLoopClient() *http.Client {
	d := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	return &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			DialContext:         d.DialContext,
			MaxConnsPerHost:     openLoopConns,
			MaxIdleConnsPerHost: openLoopConns,
			DisableCompression:  true,
		},
		// vegeta's default client follows no redirects either: a 3xx is
		// the proxy's answer, to be counted as such.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// parseOpenLoop reads the openloop child's "LAT" line: requests, 2xx
// share, p50, p99, p99.9, achieved rate, requests without an answer, and
// the status codes ("200=n,...,end"). A run with anything but 2xx is
// marked failed, its latencies void: an error answer's latency is not the
// proxy's.
func parseOpenLoop(line string) (benchresult.ProxyLatency, error) {
	var l benchresult.ProxyLatency
	var codes, first string
	if _, err := fmt.Sscanf(line, "%d %g %g %g %g %g %d %s %q", &l.Requests, &l.Success, &l.P50, &l.P99, &l.P999, &l.Achieved, &l.Errors, &codes, &first); err != nil {
		return l, fmt.Errorf("LAT %q: %w", line, err)
	}
	l.StatusCodes = map[string]int{}
	for _, c := range strings.Split(codes, ",") {
		if k, v, ok := strings.Cut(c, "="); ok {
			n, err := strconv.Atoi(v)
			if err != nil {
				return l, fmt.Errorf("LAT %q: %w", line, err)
			}
			l.StatusCodes[k] = n
		}
	}
	if bad := l.Requests - l.StatusCodes["200"]; l.Success < 1 || l.Errors > 0 || bad > 0 {
		var other []string
		for k, n := range l.StatusCodes {
			if k != "200" && k != "0" { // 0: no answer, counted in Errors
				other = append(other, fmt.Sprintf("%d answered %s", n, k))
			}
		}
		slices.Sort(other)
		l.Failed = fmt.Sprintf("FAILED: %d of %d requests not 200 (%s; %d without an answer; the first: %s)", bad, l.Requests, strings.Join(other, ", "), l.Errors, first)
		l.P50, l.P99, l.P999 = 0, 0, 0
	}
	return l, nil
}

// median of v; the mean of the middle two when len(v) is even.
func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 0 {
		return (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return s[len(s)/2]
}

func numCPU() int { return runtime.NumCPU() }

func lookNginx() string {
	if p, err := exec.LookPath("nginx"); err == nil {
		return p
	}
	for _, p := range []string{"/usr/sbin/nginx", "/usr/local/sbin/nginx"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return ""
}

func envDuration(name string, def time.Duration) time.Duration {
	if d, err := time.ParseDuration(os.Getenv(name)); err == nil && d > 0 {
		return d
	}
	return def
}

// raiseNoFile lifts the descriptor limit of this process (and so of its
// children) to want if it can, and returns the limit in force.
func raiseNoFile(tb testing.TB, want int) int {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		tb.Fatal(err)
	}
	if rl.Cur >= uint64(want) {
		return int(rl.Cur)
	}
	next := rl
	next.Cur = uint64(want)
	if next.Max < next.Cur {
		next.Max = next.Cur // root only: CAP_SYS_RESOURCE
	}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &next); err != nil {
		next = rl
		next.Cur = rl.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &next)
		tb.Logf("descriptor limit: %v; using %d", err, next.Cur)
	}
	_ = syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl)
	return int(rl.Cur)
}

type wrkResult struct {
	rps, p50, p99, requests float64
	non2xx, socketErrors    int64
}

// failed says why a wrk run's figures are not throughput, or "".
func (r wrkResult) failed() string {
	if r.non2xx == 0 && r.socketErrors == 0 {
		return ""
	}
	return fmt.Sprintf("FAILED: %d non-2xx/3xx answers and %d socket errors in %.0f requests", r.non2xx, r.socketErrors, r.requests)
}

var (
	wrkRPS = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
	wrkP50 = regexp.MustCompile(`\s50%\s+([0-9.]+)(us|ms|s)`)
	wrkP99 = regexp.MustCompile(`\s99%\s+([0-9.]+)(us|ms|s)`)
	wrkN   = regexp.MustCompile(`([0-9]+) requests in`)
	// wrk prints these two lines only when there was something to count.
	wrkNon2xx  = regexp.MustCompile(`Non-2xx or 3xx responses:\s+([0-9]+)`)
	wrkSockErr = regexp.MustCompile(`Socket errors: connect ([0-9]+), read ([0-9]+), write ([0-9]+), timeout ([0-9]+)`)
)

// runWrk runs wrk -t1 -c32 on cpus. An error is a run that gave no figures
// at all; a run that got error answers or socket errors returns them
// counted (wrkResult.failed), since wrk's requests per second count a
// fast 502 as a request.

func runWrk(wrk, cpus, url, cookie string, d time.Duration) (wrkResult, error) {
	secs := max(1, int(d.Seconds()))
	out, err := pinned(cpus, wrk, "-t1", "-c32", "-d"+strconv.Itoa(secs)+"s", "--latency",
		"-H", "Cookie: "+cookie, url).CombinedOutput()
	if err != nil {
		return wrkResult{}, fmt.Errorf("%v\n%s", err, out)
	}
	return parseWrk(out)
}

func parseWrk(out []byte) (wrkResult, error) {
	r, p50, p99 := wrkRPS.FindSubmatch(out), wrkP50.FindSubmatch(out), wrkP99.FindSubmatch(out)
	if r == nil || p50 == nil || p99 == nil {
		return wrkResult{}, fmt.Errorf("unexpected output:\n%s", out)
	}
	rps, _ := strconv.ParseFloat(string(r[1]), 64)
	res := wrkResult{rps: rps, p50: seconds(p50), p99: seconds(p99)}
	if m := wrkN.FindSubmatch(out); m != nil {
		res.requests, _ = strconv.ParseFloat(string(m[1]), 64)
	}
	if m := wrkNon2xx.FindSubmatch(out); m != nil {
		res.non2xx, _ = strconv.ParseInt(string(m[1]), 10, 64)
	}
	if m := wrkSockErr.FindSubmatch(out); m != nil {
		for _, n := range m[1:] {
			v, _ := strconv.ParseInt(string(n), 10, 64)
			res.socketErrors += v
		}
	} else if bytes.Contains(out, []byte("Socket errors")) {
		return res, fmt.Errorf("unexpected socket error line:\n%s", out)
	}
	if bytes.Contains(out, []byte("Non-2xx")) && res.non2xx == 0 {
		return res, fmt.Errorf("unexpected non-2xx line:\n%s", out)
	}
	return res, nil
}

func seconds(m [][]byte) float64 {
	v, _ := strconv.ParseFloat(string(m[1]), 64)
	switch string(m[2]) {
	case "us":
		return v / 1e6
	case "ms":
		return v / 1e3
	}
	return v
}

func fmtSeconds(s float64) string {
	switch {
	case s < 0:
		return "-" + fmtSeconds(-s)
	case s < 1e-3:
		return fmt.Sprintf("%.0fus", s*1e6)
	case s < 1:
		return fmt.Sprintf("%.2fms", s*1e3)
	}
	return fmt.Sprintf("%.2fs", s)
}

// rssOf is a process's resident set in bytes.
func rssOf(tb testing.TB, pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		tb.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb * 1024
		}
	}
	tb.Fatal("no VmRSS")
	return 0
}

// startNginx runs nginx as a reverse proxy to backend, configured the way
// one would for a slice: HTTP/1.1 with upstream keep-alive, WebSocket
// upgrade, no access log, the port shared by the workers (reuseport) as
// the gateway's replicas share theirs.
// workers is worker_processes (the gateway's replica count); cpus, when
// set, pins it with taskset.
func startNginx(tb testing.TB, bin, backend string, workers int, cpus string) (addr string, pid int) {
	dir := tb.TempDir()
	port := freePort(tb)
	conf := fmt.Sprintf(`user root;
worker_processes %[4]d;
daemon off;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
events { worker_connections 16384; }
http {
  access_log off;
  client_body_temp_path %[1]s/body;
  proxy_temp_path %[1]s/proxy;
  fastcgi_temp_path %[1]s/fastcgi;
  uwsgi_temp_path %[1]s/uwsgi;
  scgi_temp_path %[1]s/scgi;
  keepalive_requests 1000000;
  map $http_upgrade $connection_upgrade { default upgrade; '' ''; }
  upstream slice {
    server %[2]s;
    keepalive 64;
    keepalive_requests 1000000;
  }
  server {
    listen 127.0.0.1:%[3]d reuseport;
    location / {
      proxy_pass http://slice;
      proxy_http_version 1.1;
      proxy_set_header Host $host;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection $connection_upgrade;
      proxy_set_header X-Forwarded-For $remote_addr;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_read_timeout 300s;
    }
  }
}
`, dir, backend, port, workers)
	path := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		tb.Fatal(err)
	}
	cmd := pinned(cpus, bin, "-c", path, "-p", dir, "-e", filepath.Join(dir, "error.log"))
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGQUIT) // graceful: the master stops its workers
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	addr = fmt.Sprintf("127.0.0.1:%d", port)
	waitDial(tb, addr)
	return addr, cmd.Process.Pid
}

// childrenOf lists pid's child processes (nginx's workers).
func childrenOf(pid int) []int {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	var out []int
	for _, f := range strings.Fields(string(b)) {
		if n, err := strconv.Atoi(f); err == nil {
			out = append(out, n)
		}
	}
	return out
}

// cpuSeconds is the user+system CPU time the processes have used so far,
// from /proc/PID/stat (clock ticks of 1/100 s: USER_HZ is 100 on Linux).
func cpuSeconds(pids []int) float64 {
	total := 0.0
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		// The command name may hold spaces; the fields after it do not.
		i := strings.LastIndexByte(string(b), ')')
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 13 {
			continue
		}
		utime, _ := strconv.ParseFloat(f[11], 64)
		stime, _ := strconv.ParseFloat(f[12], 64)
		total += (utime + stime) / 100
	}
	return total
}

func freePort(tb testing.TB) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func waitDial(tb testing.TB, addr string) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("%s never listened: %v", addr, err)
		}
		time.Sleep(20 * time.Millisecond) // polling interval, not synchronisation
	}
}

// child is this test binary running in a bench child mode. It reports on
// stdout, one "KEY value" line at a time, and stops when its stdin closes.
type child struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	lines  chan string
	addr   string
	cookie string
	once   sync.Once
}

const benchChildEnv = "SLICEHUB_BENCH_CHILD"

// pinned is exec.Command(name, args...) on the CPUs listed (taskset -c),
// or anywhere when cpus is empty. taskset execs the program, so the
// command's pid is the program's.
func pinned(cpus, name string, args ...string) *exec.Cmd {
	if cpus == "" {
		return exec.Command(name, args...)
	}
	return exec.Command("taskset", append([]string{"-c", cpus, name}, args...)...)
}

func startChild(tb testing.TB, mode string, env map[string]string) *child {
	return startChildOn(tb, "", mode, env)
}

// startChildOn starts a child pinned to cpus (see pinned).
func startChildOn(tb testing.TB, cpus, mode string, env map[string]string) *child {
	exe, err := os.Executable()
	if err != nil {
		tb.Fatal(err)
	}
	cmd := pinned(cpus, exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), benchChildEnv+"="+mode)
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.Stderr = os.Stderr
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	c := &child{cmd: cmd, stdin: stdin, lines: make(chan string, 16)}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			c.lines <- sc.Text()
		}
		close(c.lines)
	}()
	tb.Cleanup(c.stop)
	if mode == "backend" || mode == "gateway" || mode == "gateway-real" {
		c.addr = c.wait(tb, "ADDR")
	}
	if mode == "gateway" || mode == "gateway-real" {
		c.cookie = c.wait(tb, "COOKIE")
	}
	return c
}

// wait returns the value of the child's next line starting with key.
func (c *child) wait(tb testing.TB, key string) string {
	timeout := time.After(2 * time.Minute)
	for {
		select {
		case line, ok := <-c.lines:
			if !ok {
				tb.Fatalf("bench child exited before reporting %s", key)
			}
			if v, found := strings.CutPrefix(line, key+" "); found {
				return v
			}
		case <-timeout:
			tb.Fatalf("bench child did not report %s", key)
		}
	}
}

func (c *child) stop() {
	c.once.Do(func() {
		c.stdin.Close()
		done := make(chan struct{})
		go func() { _ = c.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = c.cmd.Process.Kill()
			<-done
		}
	})
}

// metric reads one unlabelled sample from the gateway child's /metrics.
func (c *child) metric(tb testing.TB, name string) float64 {
	resp, err := http.Get("http://" + c.addr + "/metrics")
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, _ := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return f
		}
	}
	tb.Fatalf("no metric %s", name)
	return 0
}

// The child modes run before the tests of the binary, and exit.
func init() {
	mode := os.Getenv(benchChildEnv)
	if mode == "" {
		return
	}
	var err error
	switch mode {
	case "backend":
		err = benchBackend()
	case "gateway":
		err = benchGateway()
	case "wsload":
		err = benchWSLoad()
	case "wsidle":
		err = benchWSIdle()
	case "openloop":
		err = benchOpenLoop()
	case "gateway-real":
		err = benchGatewayReal()
	default:
		err = fmt.Errorf("unknown bench child mode %q", mode)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench child:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// untilStdinCloses blocks until the parent closes our stdin.
func untilStdinCloses() { _, _ = io.Copy(io.Discard, os.Stdin) }

// benchBackend is the slice: 17 bytes of JSON for any request, and a
// WebSocket echo.
func benchBackend() error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	up := websocket.Upgrader{ReadBufferSize: 4096, WriteBufferSize: 4096, CheckOrigin: func(*http.Request) bool { return true }}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if websocket.IsWebSocketUpgrade(r) {
			conn, err := up.Upgrade(w, r, nil)
			if err != nil {
				return
			}
			defer conn.Close()
			// The backend closes last of the three, answering the gateway's
			// close: after the idle phase's 10,000 WebSockets that left
			// 10,000 sockets in TIME-WAIT here for a minute, which the next
			// run's first phase waited out. An abortive close leaves none.
			if tc, ok := conn.NetConn().(*net.TCPConn); ok {
				_ = tc.SetLinger(0)
			}
			for {
				mt, msg, err := conn.ReadMessage()
				if err != nil {
					return
				}
				if err := conn.WriteMessage(mt, msg); err != nil {
					return
				}
			}
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"status":"ok"}` + "\n "))
	})}
	go srv.Serve(ln)
	fmt.Println("ADDR", ln.Addr().String())
	untilStdinCloses()
	return srv.Close()
}

// benchGateway is a gateway on fakes with one user whose slice is the
// backend.
func benchGateway() error {
	backend := os.Getenv("SLICEHUB_BENCH_BACKEND")
	accts := newFakeAccounts(time.Now)
	slices, routes := newFakeSlices(), newFakeRoutes()
	ctx := context.Background()
	u, err := accts.CreateUser(ctx, "bench@example.com", "unused")
	if err != nil {
		return err
	}
	tok, h := accounts.NewToken()
	if t := os.Getenv("SLICEHUB_BENCH_TOKEN"); t != "" { // shared by every gateway child
		var ok bool
		if h, ok = accounts.ParseToken(t); !ok {
			return fmt.Errorf("SLICEHUB_BENCH_TOKEN is not a session token")
		}
		tok = t
	}
	if err := accts.CreateSession(ctx, u.ID, h[:], time.Now().Add(24*time.Hour)); err != nil {
		return err
	}
	slices.set(u.ID, slicehub.Slice{ID: 1, State: slicehub.StateAssigned, UserID: u.ID})
	routes.set(1, backend)
	srv := New(Config{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Argon2: cheapArgon2,
		NoEventLoop: os.Getenv("SLICEHUB_BENCH_NO_LOOP") != ""},
		Deps{Accounts: accts, Slices: slices, Routes: routes})
	addr := "127.0.0.1:0"
	if a := os.Getenv("SLICEHUB_BENCH_ADDR"); a != "" {
		addr = a
	}
	// Replicas share SLICEHUB_BENCH_ADDR, as nginx's workers share a port.
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, unix.SO_REUSEPORT, 1)
		}); err != nil {
			return err
		}
		return serr
	}}
	ln, err := lc.Listen(context.Background(), "tcp", addr)
	if err != nil {
		return err
	}
	// SLICEHUB_BENCH_CPUPROFILE=file profiles the gateway for the whole
	// comparison: where the proxy's CPU goes is what decides its ratio to
	// nginx on a machine whose two cores are shared with wrk and the backend.
	if path := os.Getenv("SLICEHUB_BENCH_CPUPROFILE"); path != "" {
		f, err := os.Create(path)
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer f.Close()
		defer pprof.StopCPUProfile()
	}
	if path := os.Getenv("SLICEHUB_BENCH_WSPROFILE"); path != "" {
		profileOnSignal(path)
	}
	return serveChild(srv, ln, tok)
}

// profileOnSignal profiles the process's CPU into path between a SIGUSR1
// and the next SIGUSR2, and says so on stdout (PROFILING, PROFILED), so
// that the parent profiles one phase of the comparison only.
func profileOnSignal(path string) {
	sig := make(chan os.Signal, 2)
	signal.Notify(sig, syscall.SIGUSR1, syscall.SIGUSR2)
	go func() {
		var f *os.File
		for s := range sig {
			switch {
			case s == syscall.SIGUSR1 && f == nil:
				var err error
				if f, err = os.Create(path); err == nil {
					err = pprof.StartCPUProfile(f)
				}
				fmt.Println("PROFILING", err)
			case s == syscall.SIGUSR2 && f != nil:
				pprof.StopCPUProfile()
				f.Close()
				f = nil
				fmt.Println("PROFILED", path)
			}
		}
	}()
}

// topOfProfile is `go tool pprof -top` of a profile, its n heaviest
// functions by own (flat) time after the header lines, or one line saying
// why there is none.
func topOfProfile(exe, profile string, n int) []string {
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	out, err := exec.Command(goBin, "tool", "pprof", "-top", "-nodecount="+strconv.Itoa(n), exe, profile).Output()
	if err != nil {
		return []string{fmt.Sprintf("(no profile summary: go tool pprof: %v)", err)}
	}
	var lines []string
	for _, l := range strings.Split(strings.TrimRight(string(out), "\n"), "\n") {
		if strings.HasPrefix(l, "Duration:") || strings.Contains(l, "flat%") || len(lines) > 0 {
			lines = append(lines, l)
		}
	}
	return lines
}

// serveChild serves a gateway child on ln, reports its address and
// cookie to the parent, and shuts it down when the parent closes stdin.
func serveChild(srv *Server, ln net.Listener, tok string) error {
	go srv.Serve(ln)
	fmt.Println("ADDR", ln.Addr().String())
	fmt.Println("COOKIE", tok)
	untilStdinCloses()
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return srv.Shutdown(sctx)
}

func benchDial(target, cookie string) (*websocket.Conn, error) {
	u := strings.TrimPrefix(target, "ws://")
	host, _, _ := strings.Cut(u, "/")
	hdr := http.Header{"Cookie": {cookie}, "Origin": {"http://" + host}}
	d := websocket.Dialer{HandshakeTimeout: 30 * time.Second, ReadBufferSize: 1024, WriteBufferSize: 1024}
	c, resp, err := d.Dial(target, hdr)
	if err != nil && resp != nil {
		// Say what the proxy answered instead of the handshake: the status
		// and the JSON error are what tell a broken row from a slow one.
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		resp.Body.Close()
		return nil, fmt.Errorf("%s %s: %w: %d %s", target, host, err, resp.StatusCode, bytes.TrimSpace(body))
	}
	return c, err
}

// benchWSLoad keeps one message in flight on each of N connections for a
// while and reports how many came back.
func benchWSLoad() error {
	target, cookie := os.Getenv("SLICEHUB_BENCH_TARGET"), os.Getenv("SLICEHUB_BENCH_COOKIE")
	n, _ := strconv.Atoi(os.Getenv("SLICEHUB_BENCH_CONNS"))
	d, _ := time.ParseDuration(os.Getenv("SLICEHUB_BENCH_DURATION"))
	conns := make([]*websocket.Conn, n)
	for i := range conns {
		c, err := benchDial(target, cookie)
		if err != nil {
			return err
		}
		conns[i] = c
	}
	msg := []byte(`42["message",{"text":"hello"}]`)
	var total atomic.Int64
	var wg sync.WaitGroup
	end := time.Now().Add(d)
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(end) {
				if c.WriteMessage(websocket.TextMessage, msg) != nil {
					return
				}
				if _, _, err := c.ReadMessage(); err != nil {
					return
				}
				total.Add(1)
			}
		}()
	}
	wg.Wait()
	for _, c := range conns {
		c.Close()
	}
	fmt.Println("MSGS", total.Load())
	untilStdinCloses()
	return nil
}

// benchWSIdle opens N WebSockets, reports, and holds them until stdin closes.
func benchWSIdle() error {
	target, cookie := os.Getenv("SLICEHUB_BENCH_TARGET"), os.Getenv("SLICEHUB_BENCH_COOKIE")
	n, _ := strconv.Atoi(os.Getenv("SLICEHUB_BENCH_CONNS"))
	conns := make([]*websocket.Conn, n)
	// The first dial error; an atomic.Value would panic on errors of two
	// types (a bare handshake error, one that says the answer).
	var (
		errOnce  sync.Once
		firstErr error
	)
	sem := make(chan struct{}, 64)
	var wg sync.WaitGroup
	for i := range conns {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c, err := benchDial(target, cookie)
			if err != nil {
				errOnce.Do(func() { firstErr = err })
				return
			}
			conns[i] = c
			// Closing 10,000 connections would leave 10,000 sockets in
			// TIME-WAIT here (and as many in the gateway, whose slice side
			// closes after): for 60 s, most of loopback's ports. An abortive
			// close (RST) leaves none on this side.
			if tc, ok := c.NetConn().(*net.TCPConn); ok {
				_ = tc.SetLinger(0)
			}
			// Answer the gateway's pings, as a browser does.
			go func() {
				for {
					if _, _, err := c.ReadMessage(); err != nil {
						return
					}
				}
			}()
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	fmt.Println("OPEN", n)
	untilStdinCloses()
	for _, c := range conns {
		c.Close()
	}
	return nil
}

// benchOpenLoop offers SLICEHUB_BENCH_RATE requests a second to the target
// for SLICEHUB_BENCH_DURATION, whatever the answers take (open loop:
// vegeta sends on schedule, with as many connections as that needs), and
// reports "LAT requests success p50 p99 p99.9" (seconds).
func benchOpenLoop() error {
	target, cookie := os.Getenv("SLICEHUB_BENCH_TARGET"), os.Getenv("SLICEHUB_BENCH_COOKIE")
	rate, _ := strconv.Atoi(os.Getenv("SLICEHUB_BENCH_RATE"))
	d, _ := time.ParseDuration(os.Getenv("SLICEHUB_BENCH_DURATION"))
	if rate <= 0 || d <= 0 {
		return fmt.Errorf("openloop: rate %d, duration %s", rate, d)
	}
	tr := vegeta.NewStaticTargeter(vegeta.Target{Method: "GET", URL: target, Header: http.Header{"Cookie": {cookie}}})
	atk := vegeta.NewAttacker(vegeta.Client(openLoopClient()))
	var m vegeta.Metrics
	errs := 0
	firstBad := "-" // the first answer other than 2xx: what the proxy said
	for res := range atk.Attack(tr, vegeta.Rate{Freq: rate, Per: time.Second}, d, "bench") {
		if res.Error != "" && res.Code == 0 {
			errs++ // no answer at all: a dial, a reset, a timeout
		}
		if (res.Code < 200 || res.Code > 299) && firstBad == "-" {
			firstBad = fmt.Sprintf("%d %s %s", res.Code, res.Error, bytes.TrimSpace(res.Body[:min(200, len(res.Body))]))
		}
		m.Add(res)
	}
	m.Close()
	if m.Success < 1 {
		// The table shows only the 2xx share: say what the rest were.
		fmt.Fprintf(os.Stderr, "openloop %s at %d/s: status codes %v, errors %q\n", target, rate, m.StatusCodes, m.Errors[:min(3, len(m.Errors))])
	}
	codes := make([]string, 0, len(m.StatusCodes))
	for c, n := range m.StatusCodes {
		codes = append(codes, fmt.Sprintf("%s=%d", c, n))
	}
	slices.Sort(codes)
	// m.Rate is the rate vegeta achieved: below the offered rate, the
	// generator itself could not keep up and the latencies understate.
	fmt.Println("LAT", m.Requests, m.Success, m.Latencies.P50.Seconds(), m.Latencies.P99.Seconds(), m.Latencies.Quantile(0.999).Seconds(), m.Rate,
		errs, strings.Join(append(codes, "end"), ","), strconv.Quote(firstBad))
	untilStdinCloses()
	return nil
}
