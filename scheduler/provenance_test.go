package scheduler_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	consulapi "github.com/hashicorp/consul/api"
	dto "github.com/prometheus/client_model/go"

	"github.com/slicehub/slicehub"
	"github.com/slicehub/slicehub/scheduler"
	"github.com/slicehub/slicehub/testsupport"
)

// Route hijack, on real Nomad, Consul and PostgreSQL: a slice registers the
// slice service in Consul itself, with another tenant's slice_id, meta and
// even that tenant's allocation in a forged service ID, at its own address.
// None of it is routed: the table takes only Nomad's registration of the
// allocation the scheduler recorded, at the address Nomad allocated.
func TestRealRouteHijackIsNeverRouted(t *testing.T) {
	// Real slices (raw_exec, the slice binary): the address check needs
	// the port Nomad allocates, which the mock job does not reserve.
	r := newRealEnv(t)
	var s *scheduler.Scheduler
	srv := bootstrapServer(t, &s)
	r.registerRaw(t, sliceBinary(t), srv.URL)
	s = r.scheduler(t, scheduler.Config{MinWarm: 2, MaxSlices: 10})
	run(t, s.Run)
	r.waitStates(t, 90*time.Second, map[slicehub.SliceState]int{slicehub.StateWarm: 2})
	ctx := context.Background()
	warm, err := r.db.Slices(ctx, slicehub.StateWarm)
	if err != nil || len(warm) != 2 {
		t.Fatalf("warm slices %+v, %v", warm, err)
	}
	victim, attacker := warm[0], warm[1]
	for _, sl := range warm {
		if sl.AllocID == "" || sl.AllocAddr == "" {
			t.Fatalf("slice %d has no recorded allocation: %+v", sl.ID, sl)
		}
		rt, ok := r.routes.Lookup(sl.ID)
		if !ok || rt.AllocID != sl.AllocID || rt.Addr != sl.AllocAddr {
			t.Fatalf("route of slice %d = %+v, %v; want its recorded allocation %s at %s", sl.ID, rt, ok, sl.AllocID, sl.AllocAddr)
		}
	}
	// What Nomad 1.6 registers: "_nomad-task-<alloc>-group-<group>-<service>-<port>".
	// Every instance, not only passing ones: the WhatsApp check warns
	// while the slice waits for a QR scan.
	entries, _, err := r.consul.Health().Service(r.name, "", false, nil)
	if err != nil {
		t.Fatal(err)
	}
	wantID := "_nomad-task-" + victim.AllocID + "-group-slice-" + r.name + "-http"
	found := false
	for _, e := range entries {
		found = found || e.Service.ID == wantID
	}
	if !found {
		t.Fatalf("Nomad's registration of slice %d is not %s: %+v", victim.ID, wantID, entries)
	}

	host, port := splitAddr(t, attacker.AllocAddr)
	vhost, vport := splitAddr(t, victim.AllocAddr)
	meta := map[string]string{slicehub.MetaSliceID: victim.IDString(), "alloc_id": victim.AllocID}
	forged := []*consulapi.AgentServiceRegistration{
		// The attacker's own allocation, the victim's slice id.
		{ID: "_nomad-task-" + attacker.AllocID + "-group-slice-" + r.name + "-hijack", Address: host, Port: port},
		// The victim's allocation in a forged ID, at the attacker's address.
		{ID: "_nomad-task-" + victim.AllocID + "-group-slice-" + r.name + "-hijack", Address: host, Port: port},
		// No Nomad ID at all: at the attacker's address, and at the victim's.
		{ID: "hijack-" + victim.IDString(), Address: host, Port: port},
		{ID: "hijack-copy-" + victim.IDString(), Address: vhost, Port: vport},
	}
	for _, reg := range forged {
		reg.Name, reg.Meta, reg.Tags = r.name, meta, []string{"slicehub", "slice-" + victim.IDString()}
		if err := r.consul.Agent().ServiceRegister(reg); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = r.consul.Agent().ServiceDeregister(reg.ID) })
	}
	rejected := func(reason string) float64 {
		var m dto.Metric
		if err := r.routes.Rejected.WithLabelValues(reason).Write(&m); err != nil {
			t.Fatal(err)
		}
		return m.GetCounter().GetValue()
	}
	// Once the four are counted, the table has read them all.
	testsupport.Eventually(t, 20*time.Second, "the four forged instances refused", func() (bool, error) {
		n := rejected("other_alloc") + rejected("address") + rejected("not_nomad")
		return n >= 4, fmt.Errorf("refused: other_alloc %v, address %v, not_nomad %v", rejected("other_alloc"), rejected("address"), rejected("not_nomad"))
	})
	if rejected("address") < 1 || rejected("not_nomad") < 2 || rejected("other_alloc") < 1 {
		t.Errorf("refused: other_alloc %v, address %v, not_nomad %v; want at least 1, 1, 2", rejected("other_alloc"), rejected("address"), rejected("not_nomad"))
	}
	for _, sl := range warm {
		rt, ok := r.routes.Lookup(sl.ID)
		if !ok || rt.AllocID != sl.AllocID || rt.Addr != sl.AllocAddr {
			t.Errorf("after the hijack attempt, route of slice %d = %+v, %v; want %s at %s", sl.ID, rt, ok, sl.AllocID, sl.AllocAddr)
		}
	}
}

func splitAddr(t *testing.T, addr string) (string, int) {
	t.Helper()
	i := strings.LastIndexByte(addr, ':')
	var port int
	if _, err := fmt.Sscanf(addr[i+1:], "%d", &port); i < 0 || err != nil {
		t.Fatalf("address %q", addr)
	}
	return addr[:i], port
}
