package scaletest_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/slicehub/slicehub"
	"github.com/slicehub/slicehub/admin"
	"github.com/slicehub/slicehub/ops"
	"github.com/slicehub/slicehub/scheduler"
	"github.com/slicehub/slicehub/testsupport"
)

// adminServer serves the admin API on loopback without the gateway's
// admin guard (which has its own tests), with the gateway's mapping of
// error kinds to statuses.
func adminServer(t *testing.T, e *env, s *scheduler.Scheduler) string {
	t.Helper()
	app := fiber.New(fiber.Config{DisableStartupMessage: true, ErrorHandler: func(c *fiber.Ctx, err error) error {
		status := map[slicehub.Kind]int{
			slicehub.KindInvalid: 400, slicehub.KindNotFound: 404, slicehub.KindConflict: 409,
			slicehub.KindForbidden: 403, slicehub.KindTooLarge: 413, slicehub.KindUnavailable: 503,
		}[slicehub.KindOf(err)]
		var fe *fiber.Error
		if status == 0 && errors.As(err, &fe) {
			status = fe.Code
		}
		if status == 0 {
			status = 500
		}
		return c.Status(status).JSON(fiber.Map{"error": slicehub.MessageOf(err), "code": slicehub.CodeOf(err)})
	}})
	group := app.Group("/admin", func(c *fiber.Ctx) error {
		c.Locals("uid", int64(1))
		return c.Next()
	})
	admin.Register(group, admin.Deps{Store: e.db, Pool: s, Routes: e.routes, UserKey: "uid", KeyKey: "kid",
		Logger: testsupport.Logger(t)})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = app.Listener(ln) }()
	t.Cleanup(func() { _ = app.Shutdown() })
	return "http://" + ln.Addr().String()
}

// The drain of issue 7 on two real Nomad clients: slicectl drain moves
// every slice of the node to the other one, following each until it is
// passing in Consul, and the slices keep their jobs (moved, not
// re-dispatched).
func TestDrainMovesSlicesToTheOtherNode(t *testing.T) {
	const warm = 4
	e := newEnv(t, nil)
	s := scheduler.New(e.db, e.nomad, e.routes, scheduler.Config{
		MinWarm: warm, MaxSlices: 50, Interval: 2 * time.Second,
		Logger: testsupport.Logger(t), Metrics: scheduler.NewMetrics(nil),
	})
	e.run(t, s)
	ctx := t.Context()
	testsupport.Eventually(t, 2*time.Minute, fmt.Sprintf("%d warm slices", warm), func() (bool, error) {
		n, err := e.db.CountSlices(ctx)
		return n[slicehub.StateWarm] == warm, err
	})
	before, err := e.db.Slices(ctx, slicehub.StateWarm)
	if err != nil {
		t.Fatal(err)
	}
	jobOf := map[int64]string{}
	for _, sl := range before {
		jobOf[sl.ID] = sl.JobID
	}

	// Drain the node that holds the most of them.
	nodes, err := e.nomad.Nodes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(nodes) != 2 {
		t.Fatalf("want two Nomad nodes, got %d", len(nodes))
	}
	// Warm means passing in Consul; Nomad may report the allocation
	// running a moment later.
	onNode := map[string]int{}
	testsupport.Eventually(t, time.Minute, "every slice's allocation running", func() (bool, error) {
		allocs, err := e.nomad.Allocations(ctx)
		if err != nil {
			return false, err
		}
		clear(onNode)
		running := 0
		for _, a := range allocs {
			for _, job := range jobOf {
				if a.JobID == job && a.Running() {
					onNode[a.NodeID]++
					running++
				}
			}
		}
		return running == warm, fmt.Errorf("%d of %d running", running, warm)
	})
	target := nodes[0]
	if onNode[nodes[1].ID] > onNode[nodes[0].ID] {
		target = nodes[1]
	}
	other := nodes[0]
	if other.ID == target.ID {
		other = nodes[1]
	}
	t.Logf("draining %s, which runs %d of the %d slices", target.Name, onNode[target.ID], warm)
	if onNode[target.ID] == 0 {
		t.Fatal("no slice on either node")
	}
	t.Cleanup(func() {
		// Later tests of the package get both nodes back.
		if _, err := e.api.Nodes().UpdateDrain(target.ID, nil, true, nil); err != nil {
			t.Errorf("undrain %s: %v", target.Name, err)
		}
	})

	base := adminServer(t, e, s)
	slicectl := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		code := ops.Execute(ctx, append(args, "--gateway", base, "--key", "test"), &out, &errb)
		return code, out.String(), errb.String()
	}

	// Bad input: an unknown node is a 404 with a JSON body, exit 3; a drain
	// without --yes is refused before anything is asked, exit 2.
	resp, err := http.Get(base + "/admin/api/nodes/no-such-node/drain")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var apiErr struct{ Error, Code string }
	if resp.StatusCode != http.StatusNotFound || json.Unmarshal(body, &apiErr) != nil || apiErr.Code != "node_not_found" {
		t.Errorf("unknown node: got %d %s, want 404 node_not_found", resp.StatusCode, body)
	}
	if code, _, stderr := slicectl("drain", "no-such-node", "--yes"); code != ops.ExitUnhealthy {
		t.Errorf("slicectl drain of an unknown node: exit %d, want %d; stderr %s", code, ops.ExitUnhealthy, stderr)
	}
	if code, _, stderr := slicectl("drain", target.Name); code != ops.ExitUsage {
		t.Errorf("slicectl drain without --yes: exit %d, want %d; stderr %s", code, ops.ExitUsage, stderr)
	}
	resp, err = http.Post(base+"/admin/api/nodes/"+target.Name+"/drain", "application/json", bytes.NewReader([]byte(`{}`)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("drain without confirm: got %d, want 400", resp.StatusCode)
	}

	// By ID prefix, as an operator would copy it from `nomad node status`.
	t0 := time.Now()
	code, stdout, stderr := slicectl("drain", target.ID[:8], "--yes", "--deadline", "2m", "--json")
	took := time.Since(t0)
	t.Logf("slicectl drain took %s; progress:\n%s", took.Round(time.Millisecond), stderr)
	if code != ops.ExitOK {
		t.Fatalf("slicectl drain: exit %d\nstdout %s\nstderr %s", code, stdout, stderr)
	}
	var out admin.DrainJSON
	if err := json.Unmarshal([]byte(stdout), &out); err != nil {
		t.Fatalf("--json output: %v\n%s", err, stdout)
	}
	st := out.Drain
	if !st.Done || st.NodeID != target.ID || len(st.Moves) != onNode[target.ID] {
		t.Fatalf("drain status: %+v; want done with %d moves off %s", st, onNode[target.ID], target.Name)
	}
	routes := e.routes.Snapshot()
	for _, m := range st.Moves {
		if m.ToNode != other.Name || m.ToAlloc == "" || m.ToAlloc == m.FromAlloc {
			t.Errorf("slice %d: moved to %q (%s), want a new allocation on %s", m.SliceID, m.ToNode, m.ToAlloc, other.Name)
		}
		if jobOf[m.SliceID] != m.JobID {
			t.Errorf("slice %d: job %s, want its own job %s kept (moved, not re-dispatched)", m.SliceID, m.JobID, jobOf[m.SliceID])
		}
		if routes[m.SliceID].AllocID != m.ToAlloc {
			t.Errorf("slice %d: route to %s, want the new allocation %s", m.SliceID, routes[m.SliceID].AllocID, m.ToAlloc)
		}
	}
	after, err := e.db.Slices(ctx, slicehub.StateWarm)
	if err != nil {
		t.Fatal(err)
	}
	for _, sl := range after {
		if want, ok := jobOf[sl.ID]; !ok || sl.JobID != want {
			t.Errorf("slice %d: job %s after the drain, want %s (no re-dispatch, no new slice)", sl.ID, sl.JobID, want)
		}
	}
	if len(after) != warm {
		t.Errorf("warm slices after the drain: %d, want %d", len(after), warm)
	}
	// Nothing is left on the drained node, and it takes no new slice.
	ds, err := s.DrainStatus(ctx, target.Name)
	if err != nil {
		t.Fatal(err)
	}
	if ds.Eligible || !ds.Done {
		t.Errorf("status after the drain: %+v", ds)
	}

	// Nowhere to go: with the first node out, a drain of the second cannot
	// finish; slicectl says so when its deadline passes, and exits 1.
	t.Cleanup(func() {
		if _, err := e.api.Nodes().UpdateDrain(other.ID, nil, true, nil); err != nil {
			t.Errorf("undrain %s: %v", other.Name, err)
		}
	})
	code, _, stderr = slicectl("drain", other.Name, "--yes", "--deadline", "3s", "--max-parallel", "1")
	if code != ops.ExitError || !strings.Contains(stderr, "the deadline of 3s passed with") {
		t.Errorf("drain with nowhere to go: exit %d, want %d; stderr:\n%s", code, ops.ExitError, stderr)
	}
}
