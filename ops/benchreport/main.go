// Command benchreport is `make bench`'s last step: it turns what the
// benchmarks left in test-artifacts/bench (the `go test -bench` output in
// bench.txt, and proxy.json from gateway.BenchmarkProxyComparison through
// package benchresult) into docs/reports/bench-YYYY-MM-DD.md with SVG
// charts (package report).
//
//	go run ./ops/benchreport [-in test-artifacts/bench] [-out docs/reports]
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/slicehub/slicehub/internal/benchresult"
	"github.com/slicehub/slicehub/internal/report"
)

func main() {
	in := flag.String("in", filepath.Join("test-artifacts", "bench"), "directory with bench.txt and the benchmarks' JSON results")
	out := flag.String("out", report.Dir("."), "directory of the dated reports")
	flag.Parse()
	path, err := run(*in, *out, time.Now())
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchreport:", err)
		os.Exit(1)
	}
	fmt.Println("report:", path)
}

// benchmark is one line of `go test -bench` output.
type benchmark struct {
	pkg, name string
	n         int64
	metrics   []metric
}

type metric struct {
	value float64
	unit  string
}

// outcome is a benchmark that did not run to the end: skipped or failed.
type outcome struct {
	pkg, name, status, why string
}

// parseBench reads `go test -bench` output: "pkg:" lines name the package
// of the benchmark lines that follow; a benchmark line is its name, the
// iteration count, then value-unit pairs.
func parseBench(text string) ([]benchmark, []outcome) {
	var benches []benchmark
	var outs []outcome
	pkg := ""
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	var last *outcome
	for sc.Scan() {
		line := sc.Text()
		trimmed := strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(line, "pkg: "):
			pkg = strings.TrimSpace(strings.TrimPrefix(line, "pkg: "))
			last = nil
		case strings.HasPrefix(trimmed, "--- SKIP: "), strings.HasPrefix(trimmed, "--- FAIL: "):
			status := "skipped"
			if strings.HasPrefix(trimmed, "--- FAIL: ") {
				status = "FAILED"
			}
			f := strings.Fields(trimmed)
			outs = append(outs, outcome{pkg: pkg, name: f[2], status: status})
			last = &outs[len(outs)-1]
		case last != nil && last.why == "" && strings.Contains(line, ".go:"):
			// The first message under a SKIP or FAIL says why.
			if i := strings.Index(trimmed, ": "); i >= 0 {
				last.why = trimmed[i+2:]
			}
		case strings.HasPrefix(line, "Benchmark"):
			f := strings.Fields(line)
			if len(f) < 4 || len(f)%2 != 0 {
				continue
			}
			n, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				continue
			}
			b := benchmark{pkg: pkg, name: f[0], n: n}
			for i := 2; i+1 < len(f); i += 2 {
				v, err := strconv.ParseFloat(f[i], 64)
				if err != nil {
					continue
				}
				b.metrics = append(b.metrics, metric{value: v, unit: f[i+1]})
			}
			benches = append(benches, b)
			last = nil
		}
	}
	return benches, outs
}

func run(in, outDir string, now time.Time) (string, error) {
	raw, err := os.ReadFile(filepath.Join(in, "bench.txt"))
	if err != nil {
		return "", fmt.Errorf("no benchmark output (run `make bench`): %w", err)
	}
	benches, outs := parseBench(string(raw))
	var proxy *benchresult.Proxy
	var p benchresult.Proxy
	switch err := benchresult.Read(in, "proxy", &p); {
	case err == nil:
		proxy = &p
	case errors.Is(err, fs.ErrNotExist):
	default:
		return "", err
	}
	pgs, err := readPostgres(in)
	if err != nil {
		return "", err
	}
	r := report.New("bench", now)
	write(r, benches, outs, proxy, now)
	writeEnvironment(r, report.ReadMachine(), pgs)
	return r.Write(outDir)
}

// readPostgres loads every postgres-<package>.json testsupport left.
func readPostgres(in string) ([]benchresult.Postgres, error) {
	paths, _ := filepath.Glob(filepath.Join(in, "postgres-*.json"))
	sort.Strings(paths)
	var out []benchresult.Postgres
	for _, path := range paths {
		var pg benchresult.Postgres
		if err := benchresult.Read(in, strings.TrimSuffix(filepath.Base(path), ".json"), &pg); err != nil {
			return nil, err
		}
		out = append(out, pg)
	}
	return out, nil
}

// writeEnvironment: the machine, read when the report is written (right
// after the run), and each benchmark package's PostgreSQL settings, read
// from its server during the run.
func writeEnvironment(r *report.Report, m report.Machine, pgs []benchresult.Postgres) {
	if len(pgs) == 0 {
		r.Environment(m, nil, errors.New("no benchmark of this run recorded a PostgreSQL server (none ran with one)"))
		return
	}
	for i, pg := range pgs {
		var err error
		if pg.Error != "" {
			err = errors.New(pg.Error)
		}
		if i == 0 {
			r.Environment(m, pg.Settings, err)
			r.Printf("(PostgreSQL above: package %s's.)\n\n", pg.Package)
			continue
		}
		if err != nil {
			r.Printf("- PostgreSQL of package %s: its settings could not be read (%v).\n", pg.Package, err)
			continue
		}
		var parts []string
		for _, name := range report.DurabilitySettings {
			parts = append(parts, name+"="+pg.Settings[name])
		}
		r.Printf("- PostgreSQL of package %s: %s%s.\n", pg.Package, strings.Join(parts, ", "), map[bool]string{true: " (production settings)", false: " — **not production settings**"}[report.Durable(pg.Settings)])
	}
	r.Printf("\n")
}

func ms(seconds float64) string { return strconv.FormatFloat(seconds*1e3, 'f', 2, 64) + " ms" }

func write(r *report.Report, benches []benchmark, outs []outcome, proxy *benchresult.Proxy, now time.Time) {
	host, _ := os.Hostname()
	r.Printf("# Benchmarks, %s\n\n", now.UTC().Format("2006-01-02"))
	var pkgs []string
	seen := map[string]bool{}
	for _, b := range benches {
		if p := strings.TrimPrefix(b.pkg, "github.com/slicehub/slicehub/"); !seen[p] {
			seen[p] = true
			pkgs = append(pkgs, "`"+p+"`")
		}
	}
	r.Printf("Written on %s (%s UTC) by `ops/benchreport`, the last step of `make bench` "+
		"(`go test -run '^$' -bench . -benchtime 3s ./...` into test-artifacts/bench), from the benchmark output it found there: the benchmarks of %s. "+
		"Each comparison's baseline is measured in the same run.\n\n",
		host, now.UTC().Format("15:04"), strings.Join(pkgs, ", "))
	if proxy != nil {
		writeProxy(r, proxy)
	} else {
		r.Printf("## Proxy comparison\n\nNot measured in this run (gateway.BenchmarkProxyComparison recorded no test-artifacts/bench/proxy.json; see the skipped benchmarks below).\n\n")
	}
	writeScheduler(r, benches)
	r.Printf("## Every benchmark of the run\n\n| package | benchmark | iterations | figures |\n| --- | --- | ---: | --- |\n")
	for _, b := range benches {
		var fig []string
		for _, m := range b.metrics {
			fig = append(fig, report.Number(m.value)+" "+m.unit)
		}
		r.Printf("| %s | %s | %d | %s |\n", strings.TrimPrefix(b.pkg, "github.com/slicehub/slicehub/"), b.name, b.n, strings.Join(fig, ", "))
	}
	if len(outs) > 0 {
		r.Printf("\n**Not run to the end:**\n\n")
		for _, o := range outs {
			r.Printf("- %s `%s` %s: %s\n", strings.TrimPrefix(o.pkg, "github.com/slicehub/slicehub/"), o.name, o.status, o.why)
		}
	}
	r.Printf("\n")
}

func writeProxy(r *report.Report, p *benchresult.Proxy) {
	r.Printf("## Proxy: direct vs nginx vs the gateway\n\n")
	r.Printf("All on loopback, %d CPUs (load average before: %s), %d rounds of %s each, the targets' order rotated by one each round; every round is kept and shown as min / median / max. "+
		"HTTP: wrk -t1 -c32, a 17-byte JSON answer; WebSocket: echo over 32 connections, one message in flight each. %s. "+
		"nginx runs %d workers with `reuseport` and upstream keep-alive; the gateway runs %d replicas of one P each on one shared port (SO_REUSEPORT).\n\n",
		p.CPUs, p.LoadAvg, p.Rounds, p.Duration, orUnknown(p.Pinning, "CPU pinning not recorded"), p.Workers, p.Workers)
	if f := strings.Fields(p.LoadAvg); len(f) > 0 {
		if l, err := strconv.ParseFloat(f[0], 64); err == nil && p.CPUs > 0 && l >= float64(p.CPUs) {
			r.Printf("**The machine was busy**: its 1-minute load average, %.1f, was at or above its %d CPUs (the threshold for this note) just before the run; "+
				"the absolute figures are lower and the tails noisier than on an idle machine.\n\n", l, p.CPUs)
		}
	}
	r.Printf("| target | req/s min / median / max | p50 min / median / max | p99 min / median / max | WebSocket echo msgs/s min / median / max | proxy CPU per request (median) |\n| --- | ---: | ---: | ---: | ---: | ---: |\n")
	by := map[string]benchresult.ProxyTarget{}
	var rps, lat, ws, cpu []report.Bar
	num := func(v float64) string { return strconv.FormatFloat(v, 'f', 0, 64) }
	for _, t := range p.Targets {
		by[t.Name] = t
		c := "–"
		if t.CPUPerReq > 0 {
			c = fmt.Sprintf("%.1f µs", t.CPUPerReq*1e6)
			cpu = append(cpu, report.Bar{Label: t.Name, Value: t.CPUPerReq * 1e6})
		}
		r.Printf("| %s | %s | %s | %s | %s | %s |\n", t.Name,
			spread(t.Rounds, func(x benchresult.ProxyRound) float64 { return x.ReqPerSec }, num, t.ReqPerSec),
			spread(t.Rounds, func(x benchresult.ProxyRound) float64 { return x.P50 }, ms, t.P50),
			spread(t.Rounds, func(x benchresult.ProxyRound) float64 { return x.P99 }, ms, t.P99),
			spread(t.Rounds, func(x benchresult.ProxyRound) float64 { return x.WSMsgsSec }, num, t.WSMsgsSec), c)
	}
	writeFailedRounds(r, p.Targets)
	n, g := by["nginx"], by["gateway"]
	for _, t := range p.Targets {
		note := ""
		if n.ReqPerSec > 0 && t.Name != "nginx" {
			note = fmt.Sprintf("%.0f%% of nginx", 100*t.ReqPerSec/n.ReqPerSec)
		}
		rps = append(rps, report.Bar{Label: t.Name, Value: t.ReqPerSec, Note: note, Mark: n.ReqPerSec})
		lat = append(lat, report.Bar{Label: t.Name + " p50", Value: t.P50 * 1e3}, report.Bar{Label: t.Name + " p99", Value: t.P99 * 1e3})
		wsNote := ""
		if n.WSMsgsSec > 0 && t.Name != "nginx" {
			wsNote = fmt.Sprintf("%.0f%% of nginx", 100*t.WSMsgsSec/n.WSMsgsSec)
		}
		ws = append(ws, report.Bar{Label: t.Name, Value: t.WSMsgsSec, Note: wsNote})
	}
	// The ratio per round, not of medians: each round measured both in
	// the same minute.
	if ratios := roundRatios(g.Rounds, n.Rounds); len(ratios) > 0 {
		lo, mid, hi := minMedMax(ratios)
		r.Printf("Gateway throughput as a share of nginx's, round by round (target: at least 100%%): min **%.0f%%**, median **%.0f%%**, max **%.0f%%** over %d rounds; the median met the target: **%s**.\n\n",
			lo, mid, hi, len(ratios), yesNo(mid >= 100))
	}
	r.Chart("proxy-rps", "Requests per second, median of the rounds: direct, nginx, gateway (line: nginx)", report.Bars("HTTP requests per second (wrk -t1 -c32), median", "req/s", rps))
	r.Chart("proxy-latency", "p50 and p99 latency per target, closed loop (median of the rounds)", report.Bars("HTTP latency, closed loop", "ms", lat))
	writeOpenLoop(r, p.Latency)
	writeTimeWait(r, p.TimeWait)
	if g.CPUPerReq > 0 && n.CPUPerReq > 0 {
		r.Printf("CPU per proxied request (the proxy's own processes, user+system, median of the rounds): the gateway needs **%.0f%%** of nginx's.\n\n",
			pct(g.CPUPerReq, n.CPUPerReq))
		r.Chart("proxy-cpu", "CPU time per proxied request: nginx and the gateway", report.Bars("Proxy CPU per request", "µs", cpu))
	}
	if _, ok := by["gw-1proc"]; ok {
		r.Printf("`gateway` is one replica per CPU of the proxy's share, each with one P (`GOMAXPROCS=1`) and so one event loop, sharing the port as nginx's workers do " +
			"(jobs/gateway.nomad.hcl runs replicas so). `gw-1proc` is one process with a loop per CPU, as `make run` runs it. " +
			"These gateways run on in-memory fakes for sessions and routes (no PostgreSQL, no Consul): they measure the proxy path alone.\n\n")
	}
	if real, ok := by["gw-real"]; ok {
		r.Printf("`gw-real` is `gw-1proc` with its real dependencies: sessions and slices in PostgreSQL (the benchmark's own, production settings), routes from Consul's catalog through the route table (consul.Routes); PostgreSQL and Consul themselves are not pinned. ")
		if one, ok := by["gw-1proc"]; ok && one.ReqPerSec > 0 {
			r.Printf("Its median throughput is **%.0f%%** of `gw-1proc`'s on fakes, and %.0f%% of nginx's.", pct(real.ReqPerSec, one.ReqPerSec), pct(real.ReqPerSec, n.ReqPerSec))
		}
		r.Printf("\n\n")
	}
	if _, ok := by["gw-noloop"]; ok {
		r.Printf("`gw-noloop` is one process with `-event-loop=false`: every connection on the fasthttp server, as before the event loops.\n\n")
	}
	r.Chart("proxy-ws", "WebSocket echo messages per second", report.Bars("WebSocket echo, 32 connections, median", "msgs/s", ws))
	if n.WSMsgsSec > 0 {
		r.Printf("Gateway WebSocket echo: **%.0f%%** of nginx's (medians; target: at least 100%%).\n\n", pct(g.WSMsgsSec, n.WSMsgsSec))
	}
	if len(p.WSProfile) > 0 {
		r.Printf("Where the gateway's CPU goes during WebSocket echo: a CPU profile of one replica over the last round's echo, "+
			"`go tool pprof -top`, the ten heaviest functions by own time (syscalls are the kernel's work on the proxy's behalf: "+
			"the reads and writes of each frame, and the loopback delivery that a write does):\n\n```\n%s\n```\n\n", strings.Join(p.WSProfile, "\n"))
	}
	r.Printf("Gateway memory: RSS %.0f MB idle, %.0f MB with %d idle WebSockets (Go heap in use %.0f -> %.0f MB); %.0f MB at 10,000 (target: under 300 MB: **%s**).\n\n",
		p.RSSBeforeMB, p.RSSWithMB, p.IdleWS, p.HeapBefore, p.HeapWith, p.RSSAt10kMB, yesNo(p.RSSAt10kMB < 300))
	r.Chart("gateway-idle-ws", "Gateway RSS with 10,000 idle WebSockets against the 300 MB target", report.Bars("Gateway memory, 10,000 idle WebSockets", "MB", []report.Bar{
		{Label: "idle", Value: p.RSSBeforeMB},
		{Label: "10,000 WebSockets", Value: p.RSSAt10kMB, Mark: 300, Note: "target < 300 MB"},
	}))
	r.Printf("<details><summary>The benchmark's own output</summary>\n\n```\n%s```\n</details>\n\n", p.Text)
}

// writeOpenLoop: latency at fixed offered rates, and what each proxy adds
// to direct at the same rate.
func writeOpenLoop(r *report.Report, lat []benchresult.ProxyLatency) {
	if len(lat) == 0 {
		r.Printf("Open-loop latency: not measured in this run.\n\n")
		return
	}
	r.Printf("### Latency at a fixed offered rate (open loop, vegeta)\n\nEach target is offered the same rate, a fraction of nginx's median maximum, whatever its answers take; \"added\" is the target's percentile minus direct's at that rate.\n\n")
	r.Printf("| rate | target | requests | achieved rate | 2xx | p50 | p99 | p99.9 | added p50 | added p99 | added p99.9 |\n| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	direct := map[float64]benchresult.ProxyLatency{}
	for _, l := range lat {
		if l.Target == "direct" {
			direct[l.Fraction] = l
		}
	}
	for _, l := range lat {
		d, ok := direct[l.Fraction]
		if l.Failed != "" {
			// Error answers are fast: their latencies are not the proxy's.
			r.Printf("| %.0f%% of nginx's max (%.0f/s) | %s | %d | %.0f/s | %.2f%% | %s | | | | | |\n", 100*l.Fraction, l.Rate, l.Target, l.Requests, l.Achieved, 100*l.Success, l.Failed)
			continue
		}
		add := func(a, b float64) string {
			if !ok || l.Target == "direct" || d.Failed != "" {
				return "–"
			}
			return fmt.Sprintf("%+.2f ms", (a-b)*1e3)
		}
		achieved := fmt.Sprintf("%.0f/s", l.Achieved)
		// The threshold for the warning is printed with it.
		if l.Achieved < 0.95*l.Rate {
			achieved += " (**under 95% of the offered rate: the generator could not keep up, so these latencies understate**)"
		}
		r.Printf("| %.0f%% of nginx's max (%.0f/s) | %s | %d | %s | %.2f%% | %s | %s | %s | %s | %s | %s |\n", 100*l.Fraction, l.Rate, l.Target, l.Requests, achieved, 100*l.Success,
			ms(l.P50), ms(l.P99), ms(l.P999), add(l.P50, d.P50), add(l.P99, d.P99), add(l.P999, d.P999))
	}
	r.Printf("\n")
}

// writeFailedRounds lists the rounds whose HTTP figures are void (error
// answers or socket errors), which the table's min / median / max leave out.
func writeFailedRounds(r *report.Report, ts []benchresult.ProxyTarget) {
	var lines []string
	for _, t := range ts {
		for i, x := range t.Rounds {
			if x.Failed != "" {
				lines = append(lines, fmt.Sprintf("- %s, round %d: %s", t.Name, i+1, x.Failed))
			}
		}
	}
	if len(lines) == 0 {
		return
	}
	r.Printf("\n**Failed rounds**, left out of the figures above (a closed loop counts a fast error answer as a request served):\n\n%s\n", strings.Join(lines, "\n"))
}

// writeTimeWait says how the run used loopback's ports: each phase waited
// for TIME-WAIT sockets to fall under a limit, and how many it left.
func writeTimeWait(r *report.Report, tw *benchresult.ProxyTimeWait) {
	if tw == nil {
		return
	}
	worst := tw.Max()
	total := 0
	for _, p := range tw.Phases {
		total += p.Left
	}
	r.Printf("\nLoopback's ports: every measured phase started only with fewer than %d sockets in TIME-WAIT (%.0f%% of the %d ephemeral ports; "+
		"beyond that, dials fail and proxies answer errors fast). %d at the start of the run; the %d phases left %d in TIME-WAIT in all, the most %d (%s). These are the network namespace's counts (/proc/net/sockstat): whatever else ran on the machine adds to them.\n\n",
		tw.Limit, 100*float64(tw.Limit)/float64(max(1, tw.EphemeralPorts)), tw.EphemeralPorts, tw.AtStart, len(tw.Phases), total, worst.Left, worst.Phase)
}

// roundRatios is a/b in percent for each round both have.
func roundRatios(a, b []benchresult.ProxyRound) []float64 {
	var out []float64
	for i := 0; i < len(a) && i < len(b); i++ {
		if a[i].ReqPerSec > 0 && b[i].ReqPerSec > 0 { // 0: a failed round
			out = append(out, 100*a[i].ReqPerSec/b[i].ReqPerSec)
		}
	}
	return out
}

// minMedMax: the median of an even count is the mean of the middle two.
func minMedMax(v []float64) (lo, mid, hi float64) {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	mid = s[len(s)/2]
	if len(s)%2 == 0 {
		mid = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return s[0], mid, s[len(s)-1]
}

// spread prints min / median / max over the rounds; a report from before
// rounds were kept has only the median.
func spread(rs []benchresult.ProxyRound, f func(benchresult.ProxyRound) float64, format func(float64) string, med float64) string {
	var v []float64
	for _, r := range rs {
		if x := f(r); x > 0 {
			v = append(v, x)
		}
	}
	if len(v) == 0 && len(rs) > 0 {
		return "FAILED (every round)"
	}
	if len(v) == 0 {
		return format(med) + " (median only)"
	}
	lo, mid, hi := minMedMax(v)
	return format(lo) + " / " + format(mid) + " / " + format(hi)
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func orUnknown(s, otherwise string) string {
	if s == "" {
		return otherwise
	}
	return s
}

func pct(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return 100 * a / b
}

// writeScheduler charts the scheduler package's benchmarks: each metric
// gets a bar, grouped by unit so that one chart never mixes scales.
func writeScheduler(r *report.Report, benches []benchmark) {
	var sched []benchmark
	for _, b := range benches {
		if strings.HasSuffix(b.pkg, "/scheduler") {
			sched = append(sched, b)
		}
	}
	r.Printf("## Scheduler (scheduler/bench_test.go, real Nomad, Consul and PostgreSQL)\n\n")
	if len(sched) == 0 {
		r.Printf("No scheduler benchmark ran.\n\n")
		return
	}
	r.Printf("| benchmark | figures |\n| --- | --- |\n")
	byUnit := map[string][]report.Bar{}
	var units []string
	for _, b := range sched {
		var fig []string
		for _, m := range b.metrics {
			fig = append(fig, report.Number(m.value)+" "+m.unit)
			if m.unit == "ns/op" || m.unit == "B/op" || m.unit == "allocs/op" {
				continue
			}
			if _, ok := byUnit[m.unit]; !ok {
				units = append(units, m.unit)
			}
			byUnit[m.unit] = append(byUnit[m.unit], report.Bar{Label: strings.TrimPrefix(strings.SplitN(b.name, "-", 2)[0], "Benchmark"), Value: m.value})
		}
		r.Printf("| %s | %s |\n", b.name, strings.Join(fig, ", "))
	}
	r.Printf("\n")
	// One chart per family of units: latencies in ms, rates per second,
	// the rest alone.
	groups := map[string][]report.Bar{}
	var order []string
	for _, u := range units {
		family := u
		switch {
		case strings.HasSuffix(u, "-ms") || strings.Contains(u, "-ms/"):
			family = "ms"
		case strings.HasSuffix(u, "-s") || strings.Contains(u, "-s/"):
			family = "seconds"
		case strings.HasSuffix(u, "/s"):
			family = "per second"
		}
		if _, ok := groups[family]; !ok {
			order = append(order, family)
		}
		for _, b := range byUnit[u] {
			b.Label += " " + u
			groups[family] = append(groups[family], b)
		}
	}
	for _, f := range order {
		if len(groups[f]) < 2 {
			continue // a single figure reads better in the table than as a chart
		}
		name := "scheduler-" + strings.NewReplacer("/", "-", " ", "-").Replace(f)
		r.Chart(name, "Scheduler benchmarks, "+f, report.Bars("Scheduler benchmarks ("+f+")", f, groups[f]))
	}
}
