package ops

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/slicehub/slicehub"
	"github.com/slicehub/slicehub/admin/adminapi"
)

// The follow loop of slicectl drain against a stand-in admin API that
// fails the way a gateway does while it restarts or while Nomad is away
// for a moment (the drain itself, on real Nomad, is
// scheduler/scaletest/drain_test.go). The package's TestMain starts the
// test stack; these tests do not use it.

// drainStep is how the stand-in answers one call: a status with a body, or
// a connection it drops (reset: with a TCP RST).
type drainStep struct {
	status int
	body   string
	drop   bool
	reset  bool
}

// drainAPI answers POST /admin/api/nodes/node-1/drain with its steps in
// order, the last one from then on, and counts the calls.
type drainAPI struct {
	t     *testing.T
	mu    sync.Mutex
	steps []drainStep
	calls int
}

func (a *drainAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	s := a.steps[min(a.calls, len(a.steps)-1)]
	a.calls++
	a.mu.Unlock()
	var in adminapi.DrainRequest
	if r.Method != http.MethodPost || r.URL.Path != "/admin/api/nodes/node-1/drain" ||
		r.Header.Get("Authorization") != "Bearer shk_test" || json.NewDecoder(r.Body).Decode(&in) != nil || in.Confirm != "node-1" {
		a.t.Errorf("unexpected call: %s %s (confirm %q)", r.Method, r.URL.Path, in.Confirm)
	}
	if s.drop {
		conn, _, err := w.(http.Hijacker).Hijack()
		if err != nil {
			a.t.Error(err)
			return
		}
		if s.reset {
			_ = conn.(*net.TCPConn).SetLinger(0)
		}
		conn.Close()
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(s.status)
	_, _ = w.Write([]byte(s.body))
}

func (a *drainAPI) Calls() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.calls
}

func startDrainAPI(t *testing.T, steps ...drainStep) (*drainAPI, string) {
	a := &drainAPI{t: t, steps: steps}
	srv := httptest.NewServer(a)
	t.Cleanup(srv.Close)
	return a, srv.URL
}

func drainAnswer(t *testing.T, st slicehub.DrainStatus) drainStep {
	b, err := json.Marshal(adminapi.DrainJSON{Drain: st})
	if err != nil {
		t.Fatal(err)
	}
	return drainStep{status: http.StatusOK, body: string(b)}
}

func apiError(status int, code, msg string) drainStep {
	b, _ := json.Marshal(map[string]string{"code": code, "error": msg})
	return drainStep{status: status, body: string(b)}
}

func TestDrainRetriesTransientFailures(t *testing.T) {
	moving := slicehub.SliceMove{SliceID: 7, JobID: "slice/dispatch-7", FromAlloc: "aaaaaaaa-1", State: slicehub.MoveMoving}
	passing := moving
	passing.ToAlloc, passing.ToNode, passing.State = "bbbbbbbb-2", "node-2", slicehub.MovePassing
	api, base := startDrainAPI(t,
		apiError(http.StatusServiceUnavailable, "unavailable", "Nomad did not answer"), // Nomad away
		drainStep{status: http.StatusBadGateway, body: "<html>502 Bad Gateway</html>"}, // a proxy's page
		drainStep{drop: true},              // the gateway dying mid-call
		drainStep{drop: true, reset: true}, // ... or resetting
		drainAnswer(t, slicehub.DrainStatus{NodeID: "11111111-n", NodeName: "node-1", Draining: true,
			Moves: []slicehub.SliceMove{moving}, Started: true, MovedNow: []int64{7}}),
		drainStep{status: http.StatusGatewayTimeout},
		drainAnswer(t, slicehub.DrainStatus{NodeID: "11111111-n", NodeName: "node-1", Draining: true,
			Moves: []slicehub.SliceMove{passing}, Done: true}),
	)
	c, err := newClient(base, "shk_test")
	if err != nil {
		t.Fatal(err)
	}
	var stderr syncBuffer
	st, err := followDrain(t.Context(), c, "node-1", time.Minute, 2, 20*time.Millisecond, newProgress(&stderr))
	t.Logf("progress:\n%s", stderr.String())
	if err != nil || st == nil || !st.Done || len(st.Moves) != 1 || st.Moves[0].State != slicehub.MovePassing {
		t.Fatalf("drain through transient failures: %+v, %v; want done with slice 7 passing", st, err)
	}
	if n := api.Calls(); n != 7 {
		t.Errorf("%d calls; want 7 (5 failed, 2 answered)", n)
	}
	out := stderr.String()
	if n := strings.Count(out, "trying again"); n != 5 {
		t.Errorf("%d retries reported on stderr; want 5", n)
	}
	for _, want := range []string{"gateway call failed (1 in a row): Nomad did not answer (unavailable, 503)", "gateway call failed (2 in a row): gateway answered 502",
		"gateway answering again after 4 failed calls", "slice 7: aaaaaaaa -> bbbbbbbb on node-2 (passing)"} {
		if !strings.Contains(out, want) {
			t.Errorf("stderr lacks %q", want)
		}
	}

	// The whole command: a 503 on the way, exit 0.
	api, base = startDrainAPI(t, apiError(http.StatusServiceUnavailable, "not_ready", "the gateway is starting"),
		drainAnswer(t, slicehub.DrainStatus{NodeID: "11111111-n", NodeName: "node-1", Moves: []slicehub.SliceMove{passing}, Done: true}))
	code, stdout, errOut := runCLI(t, "drain", "node-1", "--yes", "--gateway", base, "--key", "shk_test")
	if code != ExitOK || !strings.Contains(stdout, "node node-1 (11111111) drained: 1 slices moved") ||
		!strings.Contains(errOut, "trying again") || api.Calls() != 2 {
		t.Errorf("slicectl drain through a 503: exit %d after %d calls; want %d after 2, a retry on stderr and the summary", code, api.Calls(), ExitOK)
	}
}

// Errors that asking again would not change end the drain at the first
// call, with their own exit code.
func TestDrainFailsAtOnceOnPermanentErrors(t *testing.T) {
	for _, c := range []struct {
		name string
		step drainStep
		want int
	}{
		{"unknown node", apiError(http.StatusNotFound, "node_not_found", `no Nomad node named "node-1"`), ExitUnhealthy},
		{"bad key", apiError(http.StatusUnauthorized, "unauthorized", "sign in first"), ExitError},
		{"not an admin", apiError(http.StatusForbidden, "forbidden", "not allowed"), ExitError},
		{"ambiguous node", apiError(http.StatusBadRequest, "node_ambiguous", "give more of it"), ExitUsage},
		{"no drain in this gateway", apiError(http.StatusServiceUnavailable, "drain_unsupported", "this gateway's scheduler cannot drain nodes"), ExitError},
		{"gateway bug", apiError(http.StatusInternalServerError, "internal", "something went wrong"), ExitError},
	} {
		t.Run(c.name, func(t *testing.T) {
			api, base := startDrainAPI(t, c.step)
			start := time.Now()
			code, _, stderr := runCLI(t, "drain", "node-1", "--yes", "--gateway", base, "--key", "shk_test")
			if code != c.want || api.Calls() != 1 || strings.Contains(stderr, "trying again") {
				t.Errorf("exit %d after %d calls in %s; want %d after one call, no retry", code, api.Calls(), time.Since(start), c.want)
			}
		})
	}
}

// A gateway that stays away fails the drain when the deadline passes, not
// before and not later than one wait after it, with the deadline's exit 1.
func TestDrainGivesUpAtTheDeadline(t *testing.T) {
	// A port nobody listens on: connection refused at every call.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + l.Addr().String()
	l.Close()
	c, err := newClient(base, "shk_test")
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	const deadline, interval = 300 * time.Millisecond, 20 * time.Millisecond
	start := time.Now()
	st, err := followDrain(t.Context(), c, "node-1", deadline, 2, interval, newProgress(&stderr))
	took := time.Since(start)
	t.Logf("after %s: %v\n%s", took, err, stderr.String())
	if st != nil || ExitCode(err) != ExitError || !strings.Contains(fmt.Sprint(err), "the deadline of 300ms passed with the gateway failing") ||
		!strings.Contains(fmt.Sprint(err), "connection refused") {
		t.Fatalf("drain with the gateway away: %+v, %v; want exit %d naming the deadline and the refusal", st, err, ExitError)
	}
	if took < deadline || took > deadline+5*interval+time.Second {
		t.Errorf("gave up after %s; want just after the deadline of %s", took, deadline)
	}
	if n := strings.Count(stderr.String(), "trying again"); n < 3 {
		t.Errorf("%d retries reported; want one per failed call before the deadline", n)
	}
	// The operator's ^C is not retried.
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := followDrain(ctx, c, "node-1", time.Minute, 2, interval, newProgress(&stderr)); !errors.Is(err, context.Canceled) {
		t.Errorf("drain with its context canceled: %v; want context.Canceled", err)
	}
}
