package admin

import (
	"context"
	"testing"
	"time"

	"github.com/slicehub/slicehub"
	"github.com/slicehub/slicehub/scheduler"
)

// drainPool is the fake pool plus a drain that records its options.
type drainPool struct {
	*fakePool
	got scheduler.DrainOptions
	ref string
}

func (p *drainPool) Drain(_ context.Context, ref string, o scheduler.DrainOptions) (scheduler.DrainStatus, error) {
	if ref != "node-1" {
		return scheduler.DrainStatus{}, slicehub.Errorf("fake.drain", slicehub.KindNotFound, "node_not_found", "no such node")
	}
	p.ref, p.got = ref, o
	return scheduler.DrainStatus{NodeID: "abc", NodeName: ref, Started: true,
		Moves: []scheduler.SliceMove{{SliceID: 1, FromAlloc: "a1", State: scheduler.MoveMoving}}}, nil
}

func (p *drainPool) DrainStatus(_ context.Context, ref string) (scheduler.DrainStatus, error) {
	if ref != "node-1" {
		return scheduler.DrainStatus{}, slicehub.Errorf("fake.drain", slicehub.KindNotFound, "node_not_found", "no such node")
	}
	return scheduler.DrainStatus{NodeName: ref, Done: true}, nil
}

// The real drain runs on two Nomad clients in scheduler/scaletest; here,
// the API's input checks and error answers.
func TestDrainAPI(t *testing.T) {
	var dp *drainPool
	app, _, _ := testApp(t, func(d *Deps) {
		dp = &drainPool{fakePool: d.Pool.(*fakePool)}
		d.Pool = dp
	})
	for _, tc := range []struct {
		method, path, body string
		status             int
		code               string
	}{
		{"GET", "/admin/api/nodes/nope/drain", "", 404, "node_not_found"},
		{"GET", "/admin/api/nodes/bad%20node/drain", "", 400, "invalid_node"},
		{"POST", "/admin/api/nodes/node-1/drain", "", 400, "confirmation_required"},
		{"POST", "/admin/api/nodes/node-1/drain", `{"confirm":"node-2"}`, 400, "confirmation_required"},
		{"POST", "/admin/api/nodes/node-1/drain", `{"confirm":"node-1","deadline":"soon"}`, 400, "invalid_deadline"},
		{"POST", "/admin/api/nodes/node-1/drain", `{"confirm":"node-1","deadline":"48h"}`, 400, "invalid_deadline"},
		{"POST", "/admin/api/nodes/node-1/drain", `{"confirm":"node-1","max_parallel":500}`, 400, "invalid_max_parallel"},
		{"POST", "/admin/api/nodes/node-1/drain", `{"confirm":"node-1","force":true}`, 400, "invalid_json"},
		{"POST", "/admin/api/nodes/nope/drain", `{"confirm":"nope"}`, 404, "node_not_found"},
	} {
		status, out := call(t, app, tc.method, tc.path, tc.body)
		if status != tc.status || out["code"] != tc.code || out["error"] == "" {
			t.Errorf("%s %s %s: got %d %v, want %d %s", tc.method, tc.path, tc.body, status, out, tc.status, tc.code)
		}
	}
	status, out := call(t, app, "POST", "/admin/api/nodes/node-1/drain", `{"confirm":"node-1","deadline":"90s","max_parallel":3}`)
	if status != 200 || dp.got.Deadline != 90*time.Second || dp.got.MaxParallel != 3 || dp.got.Actor != "admin:7" {
		t.Fatalf("drain: %d %v; options %+v", status, out, dp.got)
	}
	drain, _ := out["drain"].(map[string]any)
	if moves, _ := drain["moves"].([]any); len(moves) != 1 || drain["node_name"] != "node-1" {
		t.Errorf("drain answer: %v", out)
	}
	if status, out := call(t, app, "GET", "/admin/api/nodes/node-1/drain", ""); status != 200 || out["drain"].(map[string]any)["done"] != true {
		t.Errorf("drain status: %d %v", status, out)
	}

	// A pool that cannot drain answers 503, not 404 or 500.
	app, _, _ = testApp(t, nil)
	if status, out := call(t, app, "GET", "/admin/api/nodes/node-1/drain", ""); status != 503 || out["code"] != "drain_unsupported" {
		t.Errorf("drain without a drainer: %d %v", status, out)
	}
}
