package gateway

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/slicehub/slicehub/internal/benchresult"
)

// The proxy comparison runs on loopback, where every connection closed
// leaves a socket in TIME-WAIT for 60 s, holding its port. When those
// fill the ephemeral range, dials fail ("bind: address already in use",
// "cannot assign requested address"), proxies answer 502/503 fast, and a
// closed-loop load generator counts those answers as throughput. So each
// measured phase starts only when the ports are there (waitPortRoom), and
// the report says how many sockets each phase left in TIME-WAIT.

// timeWait is the number of TCP sockets in TIME-WAIT in this network
// namespace: /proc/net/sockstat's "tw" (IPv4 and IPv6 together).
func timeWait() (int, error) {
	b, err := os.ReadFile("/proc/net/sockstat")
	if err != nil {
		return 0, err
	}
	return parseSockstatTW(string(b))
}

func parseSockstatTW(s string) (int, error) {
	for _, line := range strings.Split(s, "\n") {
		rest, ok := strings.CutPrefix(line, "TCP:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		for i := 0; i+1 < len(f); i += 2 {
			if f[i] == "tw" {
				return strconv.Atoi(f[i+1])
			}
		}
	}
	return 0, fmt.Errorf("sockstat: no TCP tw count in %q", s)
}

// ephemeralPorts is the size of the local port range connect() and
// bind(port 0) pick from (/proc/sys/net/ipv4/ip_local_port_range).
func ephemeralPorts() (int, error) {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 0, err
	}
	return parsePortRange(string(b))
}

func parsePortRange(s string) (int, error) {
	f := strings.Fields(s)
	if len(f) != 2 {
		return 0, fmt.Errorf("ip_local_port_range: %q", s)
	}
	lo, err1 := strconv.Atoi(f[0])
	hi, err2 := strconv.Atoi(f[1])
	if err1 != nil || err2 != nil || hi < lo {
		return 0, fmt.Errorf("ip_local_port_range: %q", s)
	}
	return hi - lo + 1, nil
}

// portRoomFraction: a phase starts only with fewer sockets in TIME-WAIT
// than this share of the ephemeral range. A clean phase leaves a few
// dozen; a quarter of the range (about 7,000 of 28,232) is far above that
// and far below exhaustion.
const portRoomFraction = 0.25

// portRoomWait is how long a phase waits for TIME-WAIT sockets to expire:
// longer than TIME-WAIT itself (60 s on Linux, fixed), so that whatever
// an earlier run or phase left has gone by then unless something is
// still churning.
const portRoomWait = 90 * time.Second

// portMeter watches TIME-WAIT over a run: before each phase it waits for
// room, and it records how many sockets each phase left behind.
type portMeter struct {
	tb  testing.TB
	rec benchresult.ProxyTimeWait
}

func newPortMeter(tb testing.TB) *portMeter {
	ports, err := ephemeralPorts()
	if err != nil {
		tb.Fatal(err)
	}
	tw, err := timeWait()
	if err != nil {
		tb.Fatal(err)
	}
	return &portMeter{tb: tb, rec: benchresult.ProxyTimeWait{EphemeralPorts: ports,
		Limit: int(portRoomFraction * float64(ports)), AtStart: tw}}
}

// phase runs f as one measured phase: it waits until fewer than the limit
// of sockets are in TIME-WAIT, polling for up to portRoomWait, and fails
// the benchmark with the numbers if they are not; then it runs f and
// records how many sockets went into TIME-WAIT meanwhile (a lower bound:
// some may have expired, none in a phase shorter than 60 s).
func (m *portMeter) phase(name string, f func()) {
	m.tb.Helper()
	deadline := time.Now().Add(portRoomWait)
	waited := false
	var before int
	for {
		tw, err := timeWait()
		if err != nil {
			m.tb.Fatal(err)
		}
		if tw < m.rec.Limit {
			if waited {
				m.tb.Logf("%s: waited for TIME-WAIT sockets to expire (%d now, limit %d)", name, tw, m.rec.Limit)
			}
			before = tw
			break
		}
		if time.Now().After(deadline) {
			m.tb.Fatalf("%s cannot start: %d TCP sockets in TIME-WAIT after waiting %s, limit %d (%.0f%% of the %d ephemeral ports); "+
				"loopback dials would fail and the figures would be error answers, not throughput",
				name, tw, portRoomWait, m.rec.Limit, 100*portRoomFraction, m.rec.EphemeralPorts)
		}
		waited = true
		time.Sleep(time.Second) // polling interval: TIME-WAIT expires on the kernel's clock
	}
	f()
	tw, err := timeWait()
	if err != nil {
		m.tb.Fatal(err)
	}
	p := benchresult.ProxyPhaseTW{Phase: name, Before: before, Left: max(0, tw-before)}
	m.rec.Phases = append(m.rec.Phases, p)
	m.tb.Logf("%s: %d sockets in TIME-WAIT before, %d more after", name, p.Before, p.Left)
}

func TestParseSockstatTW(t *testing.T) {
	const s = "sockets: used 31\nTCP: inuse 10704 orphan 163 tw 9816 alloc 10704 mem 296\nUDP: inuse 0 mem 0\n"
	if n, err := parseSockstatTW(s); err != nil || n != 9816 {
		t.Errorf("parseSockstatTW: %d, %v; want 9816", n, err)
	}
	if _, err := parseSockstatTW("UDP: inuse 0\n"); err == nil {
		t.Error("parseSockstatTW without a TCP line: want an error")
	}
	if n, err := parsePortRange("32768\t60999\n"); err != nil || n != 28232 {
		t.Errorf("parsePortRange: %d, %v; want 28232", n, err)
	}
	if _, err := parsePortRange("60999 32768"); err == nil {
		t.Error("parsePortRange of an inverted range: want an error")
	}
}

// A wrk run with error answers is counted as failed with its counts,
// never as throughput.
func TestParseWrkCountsErrors(t *testing.T) {
	const clean = `Running 3s test @ http://127.0.0.1:1/api/status/state
  1 threads and 32 connections
  Latency Distribution
     50%  610.00us
     99%    2.10ms
  60000 requests in 3.00s, 9.00MB read
Requests/sec:  20000.00
`
	res, err := parseWrk([]byte(clean))
	if err != nil || res.failed() != "" || res.rps != 20000 || res.requests != 60000 || res.p50 != 610e-6 {
		t.Fatalf("clean run: %+v, %v, failed %q", res, err, res.failed())
	}
	dirty := strings.Replace(clean, "Requests/sec", "  Socket errors: connect 3, read 2, write 0, timeout 1\n  Non-2xx or 3xx responses: 41234\nRequests/sec", 1)
	res, err = parseWrk([]byte(dirty))
	if err != nil || res.non2xx != 41234 || res.socketErrors != 6 {
		t.Fatalf("run with errors: %+v, %v", res, err)
	}
	if want := "FAILED: 41234 non-2xx/3xx answers and 6 socket errors in 60000 requests"; res.failed() != want {
		t.Errorf("failed() = %q, want %q", res.failed(), want)
	}
}

func TestParseOpenLoop(t *testing.T) {
	l, err := parseOpenLoop(`15000 1 0.0004 0.002 0.005 4999.9 0 200=15000,end "-"`)
	if err != nil || l.Failed != "" || l.P99 != 0.002 || l.StatusCodes["200"] != 15000 {
		t.Fatalf("clean run: %+v, %v", l, err)
	}
	l, err = parseOpenLoop(`14398 0.652 0.0001 0.9 1.2 4799 2 0=2,200=9390,503=5006,end "503  {\"error\":\"x y\"}"`)
	if err != nil {
		t.Fatal(err)
	}
	if want := `FAILED: 5008 of 14398 requests not 200 (5006 answered 503; 2 without an answer; the first: 503  {"error":"x y"})`; l.Failed != want || l.P99 != 0 {
		t.Errorf("run with errors: failed %q (want %q), p99 %v (want 0: void)", l.Failed, want, l.P99)
	}
}
