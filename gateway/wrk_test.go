package gateway

import (
	"net"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"testing"
	"time"

	"github.com/slicehub/slicehub"
)

// TestThroughputWithWrk compares the proxy with a direct connection, the way
// docs/architecture.md measured its baselines: wrk -t1 -c32, a 17-byte JSON
// answer from a Go net/http backend, all on loopback. It runs only when
// SLICEHUB_WRK=1 and wrk is installed (make bench); every run is bounded by
// wrk's duration and talks only to 127.0.0.1.
func TestThroughputWithWrk(t *testing.T) {
	if os.Getenv("SLICEHUB_WRK") == "" {
		t.Skip("set SLICEHUB_WRK=1 to run (needs wrk)")
	}
	wrk, err := exec.LookPath("wrk")
	if err != nil {
		t.Skip("wrk is not installed")
	}
	// SLICEHUB_WRK_BACKEND names a backend run elsewhere, so that the same
	// backend can be measured behind nginx too, out of this process.
	backendAddr := os.Getenv("SLICEHUB_WRK_BACKEND")
	if backendAddr == "" {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		backend := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.Write([]byte(`{"status":"ok"}` + "\n "))
		})}
		go backend.Serve(ln)
		t.Cleanup(func() { backend.Close() })
		backendAddr = ln.Addr().String()
	}

	e := newEnv(t)
	u := e.signup("wrk@example.com")
	e.slices.set(u.id, slicehub.Slice{ID: 98, State: slicehub.StateAssigned, UserID: u.id})
	e.routes.set(98, backendAddr)
	e.srv.Invalidate(u.id)
	cookie := "Cookie: " + slicehub.SessionCookie + "=" + e.sessionToken(u)

	duration := os.Getenv("SLICEHUB_WRK_DURATION")
	if duration == "" {
		duration = "5s"
	}
	rps := regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
	p99 := regexp.MustCompile(`99%\s+(\S+)`)
	for _, target := range []struct{ name, url, header string }{
		{"direct", "http://" + backendAddr + "/api/status/state", "X-Nothing: 1"},
		{"gateway", e.url + "/api/status/state", cookie},
	} {
		out, err := exec.Command(wrk, "-t1", "-c32", "-d"+duration, "--latency", "-H", target.header, target.url).CombinedOutput()
		if err != nil {
			t.Fatalf("wrk %s: %v\n%s", target.name, err, out)
		}
		if regexp.MustCompile(`Non-2xx`).Match(out) {
			t.Fatalf("wrk %s saw errors:\n%s", target.name, out)
		}
		r, l := rps.FindSubmatch(out), p99.FindSubmatch(out)
		if r == nil || l == nil {
			t.Fatalf("wrk %s: unexpected output\n%s", target.name, out)
		}
		t.Logf("%-8s %10s req/s   p99 %s", target.name, r[1], l[1])
	}
	t.Logf("gateway's own time before dispatch (session, route, token, headers): p99 <= %s",
		overheadQuantile(t, e.srv, 0.99))
}

// overheadQuantile is the upper bound of the histogram bucket that holds
// quantile q of proxy_overhead_seconds.
func overheadQuantile(t testing.TB, s *Server, q float64) string {
	mfs, err := s.metrics.registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "slicehub_gateway_proxy_overhead_seconds" {
			continue
		}
		h := mf.GetMetric()[0].GetHistogram()
		want := q * float64(h.GetSampleCount())
		for _, b := range h.GetBucket() {
			if float64(b.GetCumulativeCount()) >= want {
				return time.Duration(b.GetUpperBound() * float64(time.Second)).String()
			}
		}
		return "above the last bucket"
	}
	return "unknown"
}
