// Package benchresult carries benchmark figures from a benchmark to the
// report: a benchmark that prints a table records the same figures as JSON
// in test-artifacts/bench/<name>.json, and `make bench`'s last step
// (ops/benchreport) reads them back to write docs/reports/bench-YYYY-MM-DD.md.
// The benchmarks' own measurement logic stays where it is; this is only
// where their results go.
package benchresult

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// Proxy is what gateway.BenchmarkProxyComparison measured: every round of
// every target, so that the report shows the distribution, not a pick.
type Proxy struct {
	At       time.Time     `json:"at"`
	CPUs     int           `json:"cpus"`
	LoadAvg  string        `json:"load_avg"` // before the run
	Rounds   int           `json:"rounds"`
	Duration string        `json:"duration"` // of each wrk and WebSocket round
	Targets  []ProxyTarget `json:"targets"`  // direct, nginx, gateway, ...
	// Pinning says which CPUs the proxy under test and the load generator
	// and backend ran on (taskset), or why they were not pinned.
	Pinning string `json:"pinning"`
	// Workers is nginx's worker_processes and the gateway's replica count.
	Workers int `json:"workers"`
	// Latency: open-loop runs at fixed offered rates (fractions of nginx's
	// median maximum), the same rate for every target.
	Latency []ProxyLatency `json:"latency,omitempty"`

	// Idle WebSockets held open through the gateway (10,000 unless the
	// descriptor limit forbids) and the gateway's memory before and with
	// them, in MB (10^6 bytes).
	IdleWS      int     `json:"idle_ws"`
	RSSBeforeMB float64 `json:"rss_before_mb"`
	RSSWithMB   float64 `json:"rss_with_mb"`
	RSSAt10kMB  float64 `json:"rss_at_10k_mb"` // scaled to 10,000 when IdleWS is less
	HeapBefore  float64 `json:"heap_before_mb"`
	HeapWith    float64 `json:"heap_with_mb"`

	// TimeWait is how the run used loopback's ports: each measured phase
	// waited until TIME-WAIT sockets were under Limit, and Phases says how
	// many each phase left behind (a keep-alive setup leaves a few dozen).
	TimeWait *ProxyTimeWait `json:"time_wait,omitempty"`

	// WSProfile is where one gateway replica spent its CPU during the last
	// round's WebSocket echo: `go tool pprof -top` of its CPU profile, the
	// header and the ten heaviest functions by own time.
	WSProfile []string `json:"ws_profile,omitempty"`

	// Text is the table the benchmark printed.
	Text string `json:"text"`
}

// ProxyTarget is one target: its medians over the rounds, and every round.
type ProxyTarget struct {
	Name      string  `json:"name"`
	ReqPerSec float64 `json:"req_per_sec"`
	P50       float64 `json:"p50_seconds"`
	P99       float64 `json:"p99_seconds"`
	WSMsgsSec float64 `json:"ws_msgs_per_sec"`
	// CPUPerReq is the proxy's own CPU time (user+system) per request, in
	// seconds: 0 for direct, which has no proxy.
	CPUPerReq float64      `json:"cpu_seconds_per_request,omitempty"`
	Rounds    []ProxyRound `json:"rounds"`
}

// ProxyRound is one round of one target, in the order the rounds ran.
type ProxyRound struct {
	Position  int     `json:"position"` // the target's place in this round's order (0: first)
	ReqPerSec float64 `json:"req_per_sec"`
	P50       float64 `json:"p50_seconds"`
	P99       float64 `json:"p99_seconds"`
	WSMsgsSec float64 `json:"ws_msgs_per_sec"`
	CPUPerReq float64 `json:"cpu_seconds_per_request,omitempty"`
	// Failed, when set, says why this round's HTTP figures are void (the
	// figures above are then 0): wrk saw answers other than 2xx/3xx or
	// socket errors, which a closed loop counts as fast requests.
	Failed       string `json:"failed,omitempty"`
	Requests     int64  `json:"requests,omitempty"`
	Non2xx       int64  `json:"non_2xx,omitempty"`
	SocketErrors int64  `json:"socket_errors,omitempty"`
}

// ProxyTimeWait is the TIME-WAIT accounting of a run (see Proxy.TimeWait).
type ProxyTimeWait struct {
	EphemeralPorts int `json:"ephemeral_ports"` // size of ip_local_port_range
	Limit          int `json:"limit"`           // a phase starts below this many
	AtStart        int `json:"at_start"`
	// Phases: how many sockets each phase left in TIME-WAIT, in order.
	Phases []ProxyPhaseTW `json:"phases"`
}

// ProxyPhaseTW is one measured phase's TIME-WAIT: at its start and how
// many more at its end.
type ProxyPhaseTW struct {
	Phase  string `json:"phase"`
	Before int    `json:"before"`
	Left   int    `json:"left"`
}

// Max is the phase that left the most sockets in TIME-WAIT.
func (t *ProxyTimeWait) Max() ProxyPhaseTW {
	var m ProxyPhaseTW
	for _, p := range t.Phases {
		if p.Left > m.Left || m.Phase == "" {
			m = p
		}
	}
	return m
}

// ProxyLatency is one open-loop run: a target at a fixed offered rate.
type ProxyLatency struct {
	Target   string  `json:"target"`
	Fraction float64 `json:"fraction"` // of nginx's median maximum req/s
	Rate     float64 `json:"rate"`     // offered requests per second
	Achieved float64 `json:"achieved"` // requests per second the generator sent: below Rate, it could not keep up
	Requests int     `json:"requests"`
	Success  float64 `json:"success"` // share of 2xx answers
	P50      float64 `json:"p50_seconds"`
	P99      float64 `json:"p99_seconds"`
	P999     float64 `json:"p999_seconds"`
	// Failed, when set, says why this run's latencies are void (they are
	// then 0): answers other than 2xx, or requests that got no answer
	// (Errors), whose latencies are not the proxy's.
	Failed      string         `json:"failed,omitempty"`
	StatusCodes map[string]int `json:"status_codes,omitempty"`
	Errors      int            `json:"errors,omitempty"`
}

// Dir is test-artifacts/bench in the repository that holds the working
// directory (go test runs a package's tests in its own folder).
func Dir() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return filepath.Join(dir, "test-artifacts", "bench"), nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("benchresult: no go.mod above the working directory")
		}
		dir = parent
	}
}

// Write records v as test-artifacts/bench/<name>.json.
func Write(name string, v any) error {
	dir, err := Dir()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(dir, "."+name+".json.tmp")
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, name+".json"))
}

// Read loads dir/<name>.json into v.
func Read(dir, name string, v any) error {
	b, err := os.ReadFile(filepath.Join(dir, name+".json"))
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s.json: %w", name, err)
	}
	return nil
}

// Postgres is the PostgreSQL settings a benchmark package's stack ran
// with, read from the server (SHOW) when its stack started: recorded by
// testsupport as postgres-<package>.json whenever benchmarks run.
type Postgres struct {
	Package  string            `json:"package"`
	Settings map[string]string `json:"settings"`
	Error    string            `json:"error,omitempty"` // when they could not be read
}
