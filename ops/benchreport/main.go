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
	r := report.New("bench", now)
	write(r, benches, outs, proxy, now)
	return r.Write(outDir)
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
	r.Printf("All on loopback, %d CPUs (load average before: %s), median of %d interleaved rounds of %s each. "+
		"HTTP: wrk -t1 -c32, a 17-byte JSON answer; WebSocket: echo over 32 connections, one message in flight each.\n\n",
		p.CPUs, p.LoadAvg, p.Rounds, p.Duration)
	if f := strings.Fields(p.LoadAvg); len(f) > 0 {
		if l, err := strconv.ParseFloat(f[0], 64); err == nil && p.CPUs > 0 && l >= float64(p.CPUs) {
			r.Printf("**The machine was busy** (load average %.1f on %d CPUs just before the run: other work on the shared machine, or the tail of "+
				"what ran before): the absolute figures are lower and the tail latencies noisier than on an idle machine. The rounds interleave "+
				"the targets so that such noise spoils one round of each rather than every round of one.\n\n", l, p.CPUs)
		}
	}
	r.Printf("| target | req/s | p50 | p99 | WebSocket echo msgs/s | proxy CPU per request |\n| --- | ---: | ---: | ---: | ---: | ---: |\n")
	by := map[string]benchresult.ProxyTarget{}
	var rps, lat, ws, cpu []report.Bar
	for _, t := range p.Targets {
		by[t.Name] = t
		c := "–"
		if t.CPUPerReq > 0 {
			c = fmt.Sprintf("%.1f µs", t.CPUPerReq*1e6)
			cpu = append(cpu, report.Bar{Label: t.Name, Value: t.CPUPerReq * 1e6})
		}
		r.Printf("| %s | %.0f | %s | %s | %.0f | %s |\n", t.Name, t.ReqPerSec, ms(t.P50), ms(t.P99), t.WSMsgsSec, c)
	}
	n, g, d := by["nginx"], by["gateway"], by["direct"]
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
	r.Printf("\nTargets (issue 5): gateway throughput at least 100%% of nginx's: **%.0f%%**; added p99 over direct under 1 ms: **%+.2f ms**; "+
		"10,000 idle WebSockets in under 300 MB: **%.0f MB**.\n\n", pct(g.ReqPerSec, n.ReqPerSec), (g.P99-d.P99)*1e3, p.RSSAt10kMB)
	r.Chart("proxy-rps", "Requests per second: direct, nginx, gateway (line: nginx)", report.Bars("HTTP requests per second (wrk -t1 -c32)", "req/s", rps))
	r.Chart("proxy-latency", "p50 and p99 latency per target", report.Bars("HTTP latency", "ms", lat))
	if g.CPUPerReq > 0 && n.CPUPerReq > 0 {
		// On two cores shared by wrk, the backend and the proxy, throughput
		// follows whatever else runs; the CPU a proxy spends per request is
		// its own, and decides the throughput ratio on a loaded machine.
		r.Printf("CPU per proxied request (the proxy's own processes, user+system): the gateway needs **%.0f%%** of nginx's.\n\n",
			pct(g.CPUPerReq, n.CPUPerReq))
		r.Chart("proxy-cpu", "CPU time per proxied request: nginx and the gateway", report.Bars("Proxy CPU per request", "µs", cpu))
	}
	if _, ok := by["gw-1proc"]; ok {
		r.Printf("`gateway` is one replica per CPU, each with one P (`GOMAXPROCS=1`) and so one event loop, sharing the port as nginx's workers do " +
			"(jobs/gateway.nomad.hcl runs replicas so). `gw-1proc` is one process with a loop per CPU, as `make run` runs it.\n\n")
	}
	if _, ok := by["gw-noloop"]; ok {
		r.Printf("`gw-noloop` is one process with `-event-loop=false`: every connection on the fasthttp server, as before the event loops.\n\n")
	}
	r.Chart("proxy-ws", "WebSocket echo messages per second", report.Bars("WebSocket echo, 32 connections", "msgs/s", ws))
	r.Printf("Gateway memory: RSS %.0f MB idle, %.0f MB with %d idle WebSockets (Go heap in use %.0f -> %.0f MB); %.0f MB at 10,000.\n\n",
		p.RSSBeforeMB, p.RSSWithMB, p.IdleWS, p.HeapBefore, p.HeapWith, p.RSSAt10kMB)
	r.Chart("gateway-idle-ws", "Gateway RSS with 10,000 idle WebSockets against the 300 MB target", report.Bars("Gateway memory, 10,000 idle WebSockets", "MB", []report.Bar{
		{Label: "idle", Value: p.RSSBeforeMB},
		{Label: "10,000 WebSockets", Value: p.RSSAt10kMB, Mark: 300, Note: "target < 300 MB"},
	}))
	r.Printf("<details><summary>The benchmark's own output</summary>\n\n```\n%s```\n</details>\n\n", p.Text)
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
