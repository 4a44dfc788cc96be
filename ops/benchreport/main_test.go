package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/slicehub/slicehub/internal/benchresult"
)

const sample = `goos: linux
goarch: amd64
pkg: github.com/slicehub/slicehub/gateway
cpu: Intel(R) Xeon(R)
BenchmarkProxyComparison-2   	       1	61234567890 ns/op	     41000 direct_req/s	     43000 gw_req/s
pkg: github.com/slicehub/slicehub/scheduler
BenchmarkClaimFromWarmPool-2   	     100	   1234567 ns/op	         1.20 p50-ms	         4.50 p99-ms
BenchmarkDispatchThroughput-2   	       1	9000000000 ns/op	        25.0 dispatches/s	        22.0 healthy/s
--- SKIP: BenchmarkDispatchToHealthyRawExec
    bench_test.go:210: no raw_exec here
PASS
`

func TestParseBench(t *testing.T) {
	benches, outs := parseBench(sample)
	if len(benches) != 3 {
		t.Fatalf("parsed %d benchmarks, want 3: %+v", len(benches), benches)
	}
	if b := benches[1]; b.pkg != "github.com/slicehub/slicehub/scheduler" || b.name != "BenchmarkClaimFromWarmPool-2" || b.n != 100 ||
		len(b.metrics) != 3 || b.metrics[2] != (metric{4.5, "p99-ms"}) {
		t.Errorf("second benchmark: got %+v", b)
	}
	if len(outs) != 1 || outs[0].status != "skipped" || outs[0].why != "no raw_exec here" {
		t.Errorf("outcomes: got %+v, want the skipped raw_exec benchmark with its reason", outs)
	}
}

func TestRunWritesReport(t *testing.T) {
	in, out := t.TempDir(), t.TempDir()
	if err := os.WriteFile(filepath.Join(in, "bench.txt"), []byte(sample), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Chdir(in) // benchresult.Write finds the repository through go.mod
	if err := os.WriteFile("go.mod", []byte("module x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	p := benchresult.Proxy{CPUs: 2, Rounds: 3, Duration: "3s", IdleWS: 10000, RSSBeforeMB: 30, RSSWithMB: 250, RSSAt10kMB: 250, Text: "table\n",
		WSProfile: []string{"      flat  flat%   sum%        cum   cum%", "     4.83s 77.16% 77.16%      4.83s 77.16%  internal/runtime/syscall/linux.Syscall6"},
		Pinning:   "CPUs pinned with taskset: the proxy under test on CPU 1", Workers: 1,
		Targets: []benchresult.ProxyTarget{
			{Name: "direct", ReqPerSec: 90000, P50: 0.0003, P99: 0.001, WSMsgsSec: 50000},
			{Name: "nginx", ReqPerSec: 44000, P50: 0.0007, P99: 0.002, WSMsgsSec: 30000, Rounds: []benchresult.ProxyRound{
				{ReqPerSec: 44000, P50: 0.0007}, {ReqPerSec: 40000, P50: 0.0008}, {ReqPerSec: 50000, P50: 0.0006}}},
			{Name: "gateway", ReqPerSec: 46000, P50: 0.0006, P99: 0.0018, WSMsgsSec: 32000, Rounds: []benchresult.ProxyRound{
				{ReqPerSec: 46000, P50: 0.0006}, {ReqPerSec: 44000, P50: 0.0007}, {ReqPerSec: 45000, P50: 0.0005},
				{Failed: "FAILED: 90000 non-2xx/3xx answers and 12 socket errors in 400000 requests", Requests: 400000, Non2xx: 90000, SocketErrors: 12}}},
		},
		Latency: []benchresult.ProxyLatency{
			{Target: "direct", Fraction: 0.5, Rate: 22000, Requests: 66000, Success: 1, P50: 0.0002, P99: 0.0010, P999: 0.003},
			{Target: "gateway", Fraction: 0.5, Rate: 22000, Achieved: 21990, Requests: 66000, Success: 1, P50: 0.0004, P99: 0.0015, P999: 0.004},
			{Target: "nginx", Fraction: 0.8, Rate: 35000, Achieved: 35000, Requests: 105000, Success: 0.5, Errors: 2,
				StatusCodes: map[string]int{"200": 52500, "502": 52498, "0": 2}, Failed: "FAILED: 52500 of 105000 requests not 200 (52498 answered 502; 2 without an answer)"},
		},
		TimeWait: &benchresult.ProxyTimeWait{EphemeralPorts: 28232, Limit: 7058, AtStart: 3, Phases: []benchresult.ProxyPhaseTW{
			{Phase: "round 1 wrk nginx", Left: 40}, {Phase: "idle WebSockets", Before: 40, Left: 95}}},
	}
	if err := benchresult.Write("postgres-scheduler", benchresult.Postgres{Package: "scheduler", Settings: map[string]string{
		"server_version": "15", "fsync": "on", "synchronous_commit": "on", "full_page_writes": "on"}}); err != nil {
		t.Fatal(err)
	}
	if err := benchresult.Write("proxy", p); err != nil {
		t.Fatal(err)
	}
	_, err := run(filepath.Join(in, "test-artifacts", "bench"), out, time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC))
	if err == nil {
		t.Fatal("run without bench.txt next to proxy.json: want an error")
	}
	if err := os.Rename(filepath.Join(in, "bench.txt"), filepath.Join(in, "test-artifacts", "bench", "bench.txt")); err != nil {
		t.Fatal(err)
	}
	path, err := run(filepath.Join(in, "test-artifacts", "bench"), out, time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC))
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Base(path) != "bench-2026-11-25.md" {
		t.Errorf("report path %s, want bench-2026-11-25.md", path)
	}
	md, _ := os.ReadFile(path)
	for _, want := range []string{
		"| gateway | 44000 / 45000 / 46000 |", // every round: min / median / max; the failed one left out
		"- gateway, round 4: FAILED: 90000 non-2xx/3xx answers and 12 socket errors in 400000 requests",
		"| 80% of nginx's max (35000/s) | nginx | 105000 | 35000/s | 50.00% | FAILED: 52500 of 105000 requests not 200 (52498 answered 502; 2 without an answer) |",
		"fewer than 7058 sockets in TIME-WAIT (25% of the 28232 ephemeral ports", "the 2 phases left 135 in TIME-WAIT in all, the most 95 (idle WebSockets)",
		"min **90%**, median **105%**, max **110%** over 3 rounds", // per-round ratios, not a ratio of medians
		"| direct | 90000 (median only) |",
		"| 50% of nginx's max (22000/s) | gateway | 66000 | 21990/s | 100.00% | 0.40 ms | 1.50 ms | 4.00 ms | +0.20 ms | +0.50 ms | +1.00 ms |",
		"(**under 95% of the offered rate", // direct's generator fell behind (Achieved 0)
		"CPUs pinned with taskset", "nginx runs 1 workers with `reuseport`",
		"fsync=on, synchronous_commit=on, full_page_writes=on (production settings",
		"BenchmarkClaimFromWarmPool-2", "no raw_exec here", "proxy-rps",
		"Where the gateway's CPU goes during WebSocket echo", "77.16%  internal/runtime/syscall/linux.Syscall6"} {
		if !strings.Contains(string(md), want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
	svgs, _ := filepath.Glob(filepath.Join(out, "*.svg"))
	if len(svgs) < 4 {
		t.Errorf("%d charts written, want at least 4 (three proxy, one memory, scheduler): %v", len(svgs), svgs)
	}
}
