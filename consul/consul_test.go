package consul_test

import (
	"context"
	"fmt"
	"maps"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	dto "github.com/prometheus/client_model/go"

	"github.com/slicehub/slicehub"
	"github.com/slicehub/slicehub/consul"
	"github.com/slicehub/slicehub/testsupport"
)

func TestMain(m *testing.M) { testsupport.Main(m, testsupport.Options{}) }

func client(t *testing.T) *api.Client {
	t.Helper()
	c, err := consul.NewClient(testsupport.Stack(t).Consul.Addr, testsupport.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// replica is one Lead loop whose fn counts how many fns run at once.
type replica struct {
	cancel  context.CancelFunc
	done    chan struct{}
	leading atomic.Bool
	runs    atomic.Int32
}

func startReplica(t *testing.T, c *api.Client, key string, active *atomic.Int32, maxActive *atomic.Int32) *replica {
	ctx, cancel := context.WithCancel(context.Background())
	r := &replica{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		consul.Lead(ctx, c, key, testsupport.Logger(t), func(ctx context.Context) {
			n := active.Add(1)
			for {
				m := maxActive.Load()
				if n <= m || maxActive.CompareAndSwap(m, n) {
					break
				}
			}
			r.runs.Add(1)
			r.leading.Store(true)
			<-ctx.Done()
			r.leading.Store(false)
			active.Add(-1)
		})
	}()
	t.Cleanup(r.stop)
	return r
}

func (r *replica) stop() {
	r.cancel()
	<-r.done
}

func leaders(rs []*replica) (n int, who *replica) {
	for _, r := range rs {
		if r.leading.Load() {
			n++
			who = r
		}
	}
	return n, who
}

// Exactly one of three replicas leads; stopping the leader hands over.
func TestLeadIsExclusiveAndHandsOver(t *testing.T) {
	c := client(t)
	key := "slicehub/test/" + t.Name()
	var active, maxActive atomic.Int32
	rs := []*replica{startReplica(t, c, key, &active, &maxActive), startReplica(t, c, key, &active, &maxActive),
		startReplica(t, c, key, &active, &maxActive)}
	for round := 0; round < 2; round++ {
		var leader *replica
		testsupport.Eventually(t, 20*time.Second, "one leader", func() (bool, error) {
			n, who := leaders(rs)
			leader = who
			return n == 1, fmt.Errorf("%d leaders", n)
		})
		t0 := time.Now()
		leader.stop()
		testsupport.Eventually(t, 20*time.Second, "a new leader", func() (bool, error) {
			n, who := leaders(rs)
			return n == 1 && who != leader, nil
		})
		t.Logf("round %d: handed over in %v", round, time.Since(t0).Round(time.Millisecond))
	}
	if m := maxActive.Load(); m != 1 {
		t.Fatalf("%d replicas acted at once", m)
	}
}

// A leader whose lock vanishes (a Consul that lost its state, a key deleted
// by hand) steps down within seconds and takes the lock again.
func TestLeadStepsDownWhenTheLockIsGone(t *testing.T) {
	c := client(t)
	key := "slicehub/test/" + t.Name()
	var active, maxActive atomic.Int32
	r := startReplica(t, c, key, &active, &maxActive)
	testsupport.Eventually(t, 20*time.Second, "leading", func() (bool, error) { return r.leading.Load(), nil })
	t0 := time.Now()
	if _, err := c.KV().Delete(key, nil); err != nil {
		t.Fatal(err)
	}
	testsupport.Eventually(t, 10*time.Second, "stepped down and leading again", func() (bool, error) {
		return r.runs.Load() == 2 && r.leading.Load(), nil
	})
	t.Logf("key deleted: stepped down and took it again in %v", time.Since(t0).Round(time.Millisecond))

	// The session is destroyed: Consul releases the lock.
	pair, _, err := c.KV().Get(key, nil)
	if err != nil || pair == nil || pair.Session == "" {
		t.Fatalf("lock %+v, %v", pair, err)
	}
	if _, err := c.Session().Destroy(pair.Session, nil); err != nil {
		t.Fatal(err)
	}
	testsupport.Eventually(t, 30*time.Second, "leading again after the session ended", func() (bool, error) {
		return r.runs.Load() == 3 && r.leading.Load(), nil
	})
}

// The route table follows the passing instances of the service, by slice id.
// runRoutes runs the route table until the returned stop is called, which
// waits for Run to return.
func runRoutes(routes *consul.Routes) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		routes.Run(ctx)
	}()
	return func() { cancel(); <-done }
}

// placements is a recorded-allocations source for the route table's tests.
type placements struct {
	mu sync.Mutex
	m  map[int64]slicehub.Placement
}

func (p *placements) Placements(context.Context) (map[int64]slicehub.Placement, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return maps.Clone(p.m), nil
}

func (p *placements) set(id int64, pl slicehub.Placement) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.m == nil {
		p.m = map[int64]slicehub.Placement{}
	}
	p.m[id] = pl
}

func TestRoutesFollowTheCatalog(t *testing.T) {
	c := client(t)
	service := "slice-" + fmt.Sprint(time.Now().UnixNano())
	alloc := "0b0e4c36-1c1e-4a39-9d7c-3c2f0c7e1a01"
	placed := &placements{}
	placed.set(42, slicehub.Placement{AllocID: alloc, Addr: "127.0.0.1:23456"})
	routes := consul.NewRoutes(c, service, placed, testsupport.Logger(t))
	routes.WaitTime = 2 * time.Second
	changes, unsubscribe := routes.Subscribe()
	defer unsubscribe()
	defer runRoutes(routes)()

	reg := &api.AgentServiceRegistration{ID: "_nomad-task-" + alloc + "-group-slice-" + service + "-http", Name: service,
		Address: "127.0.0.1", Port: 23456, Meta: map[string]string{slicehub.MetaSliceID: "42"}}
	if err := c.Agent().ServiceRegister(reg); err != nil {
		t.Fatal(err)
	}
	testsupport.Eventually(t, 10*time.Second, "slice 42 routed", func() (bool, error) {
		rt, ok := routes.Lookup(42)
		return ok && rt.Addr == "127.0.0.1:23456" && rt.AllocID == alloc, fmt.Errorf("route %+v", rt)
	})
	select {
	case <-changes:
	default:
		t.Errorf("no change announced")
	}
	// A malformed slice id is ignored.
	bad := &api.AgentServiceRegistration{ID: service + "-bad", Name: service, Address: "127.0.0.1", Port: 1,
		Meta: map[string]string{slicehub.MetaSliceID: "042"}}
	if err := c.Agent().ServiceRegister(bad); err != nil {
		t.Fatal(err)
	}
	if err := c.Agent().ServiceDeregister(reg.ID); err != nil {
		t.Fatal(err)
	}
	testsupport.Eventually(t, 10*time.Second, "slice 42 unrouted", func() (bool, error) {
		_, ok := routes.Lookup(42)
		return !ok && len(routes.Snapshot()) == 0, nil
	})
	_ = c.Agent().ServiceDeregister(bad.ID)
	if last, err := routes.Status(); err != nil || last.IsZero() {
		t.Errorf("Status = %v, %v; want a recent sync", last, err)
	}
}

// A Consul server that restarts without its state comes back with an empty
// catalog until the agents register their services again. The route table
// sees the index go backwards and keeps its routes for ResetGrace, then
// drops what did not come back. The instance is registered in the catalog
// directly, on a node no agent runs: devenv's agent keeps the services
// registered with it across a restart (its data directory), so only such
// an entry stays gone, as every entry does after a real loss of state.
func TestRoutesSurviveACatalogReset(t *testing.T) {
	c := client(t)
	service := "slice-" + fmt.Sprint(time.Now().UnixNano())
	alloc := "5d1e2f3a-4b5c-4d6e-8f70-8192a3b4c5d6"
	placed := &placements{}
	placed.set(43, slicehub.Placement{AllocID: alloc, Addr: "127.0.0.1:23457"})
	routes := consul.NewRoutes(c, service, placed, testsupport.Logger(t))
	routes.WaitTime = time.Second
	routes.ResetGrace = 4 * time.Second
	defer runRoutes(routes)()

	reg := &api.CatalogRegistration{Node: "external-" + service, Address: "127.0.0.1",
		Service: &api.AgentService{ID: "_nomad-task-" + alloc + "-group-slice-" + service + "-http", Service: service,
			Address: "127.0.0.1", Port: 23457, Meta: map[string]string{slicehub.MetaSliceID: "43"}}}
	if _, err := c.Catalog().Register(reg, nil); err != nil {
		t.Fatal(err)
	}
	testsupport.Eventually(t, 10*time.Second, "slice 43 routed", func() (bool, error) {
		_, ok := routes.Lookup(43)
		return ok, nil
	})
	// The dev agent keeps its catalog in memory: after the restart, the
	// service is gone from it, as from a server restarted without state.
	restarted := time.Now()
	if err := testsupport.Stack(t).RestartConsul(t.Context()); err != nil {
		t.Fatal(err)
	}
	testsupport.Eventually(t, 20*time.Second, "a sync with the new catalog", func() (bool, error) {
		last, err := routes.Status()
		return err == nil && last.After(restarted), fmt.Errorf("last sync %s, err %v", last, err)
	})
	if services, _, err := c.Catalog().Service(service, "", nil); err != nil || len(services) != 0 {
		t.Fatalf("the catalog still has %d instances (%v): the test needs it empty", len(services), err)
	}
	if _, ok := routes.Lookup(43); !ok && time.Since(restarted) < routes.ResetGrace {
		t.Fatal("the route was dropped as soon as the reset catalog was read")
	}
	testsupport.Eventually(t, 20*time.Second, "slice 43 dropped after the grace", func() (bool, error) {
		_, ok := routes.Lookup(43)
		return !ok, nil
	})
	if took := time.Since(restarted); took < routes.ResetGrace {
		t.Fatalf("the route went after %s, before the grace of %s", took, routes.ResetGrace)
	}
}

// The WhatsApp check informs, it never routes: an instance whose WhatsApp
// check is warning or critical stays routed while its health check
// passes, and one whose health check fails is unrouted whatever WhatsApp
// says.
func TestRoutesIgnoreTheWhatsAppCheck(t *testing.T) {
	c := client(t)
	service := "slice-" + fmt.Sprint(time.Now().UnixNano())
	alloc := "7a1b2c3d-0000-4000-8000-00000000000c"
	placed := &placements{}
	placed.set(44, slicehub.Placement{AllocID: alloc, Addr: "127.0.0.1:23458"})
	routes := consul.NewRoutes(c, service, placed, testsupport.Logger(t))
	routes.WaitTime = 2 * time.Second
	defer runRoutes(routes)()

	// Nomad's own registration of the recorded allocation (route provenance).
	id := "_nomad-task-" + alloc + "-group-slice-" + service + "-http"
	reg := &api.AgentServiceRegistration{ID: id, Name: service, Address: "127.0.0.1", Port: 23458,
		Meta: map[string]string{slicehub.MetaSliceID: "44"},
		Checks: api.AgentServiceChecks{
			{CheckID: id + "-health", Name: "slice health", TTL: "1h", Status: api.HealthPassing},
			{CheckID: id + "-wa", Name: slicehub.WhatsAppCheck, TTL: "1h", Status: api.HealthWarning},
		}}
	if err := c.Agent().ServiceRegister(reg); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Agent().ServiceDeregister(id) }()
	routed := func(want bool, what string) {
		t.Helper()
		testsupport.Eventually(t, 10*time.Second, what, func() (bool, error) {
			_, ok := routes.Lookup(44)
			return ok == want, fmt.Errorf("routed = %v", ok)
		})
	}
	set := func(check, status, output string) {
		t.Helper()
		if err := c.Agent().UpdateTTL(check, output, status); err != nil {
			t.Fatal(err)
		}
	}
	routed(true, "routed while WhatsApp waits for a QR scan (warning)")
	set(id+"-wa", api.HealthCritical, "WhatsApp disconnected for 11m0s")
	// Consul has answered with the critical WhatsApp check, and the route
	// is still there.
	testsupport.Eventually(t, 10*time.Second, "Consul reports the WhatsApp check critical", func() (bool, error) {
		checks, _, err := c.Health().Checks(service, nil)
		if err != nil {
			return false, err
		}
		for _, ch := range checks {
			if ch.Name == slicehub.WhatsAppCheck {
				return ch.Status == api.HealthCritical, fmt.Errorf("whatsapp %s", ch.Status)
			}
		}
		return false, fmt.Errorf("no whatsapp check")
	})
	seen := time.Now()
	testsupport.Eventually(t, 10*time.Second, "a route sync after Consul reported it", func() (bool, error) {
		last, err := routes.Status()
		return err == nil && last.After(seen), fmt.Errorf("last sync %s", last)
	})
	if _, ok := routes.Lookup(44); !ok {
		t.Fatal("a critical WhatsApp check unrouted the slice")
	}
	set(id+"-health", api.HealthCritical, "database down")
	routed(false, "unrouted when its health check fails")
	set(id+"-health", api.HealthPassing, "ok")
	routed(true, "routed again when its health check passes, WhatsApp still critical")
}

// Route provenance: only Nomad's registration of the recorded allocation,
// at the recorded address, is routed. Instances that copy the slice's meta,
// forge a Nomad service ID, or name another allocation are ignored and
// counted, whatever their health.
func TestRoutesAcceptOnlyTheRecordedAllocation(t *testing.T) {
	c := client(t)
	service := "slice-" + fmt.Sprint(time.Now().UnixNano())
	victim := "7a1b2c3d-0000-4000-8000-00000000000a"
	other := "7a1b2c3d-0000-4000-8000-00000000000b"
	placed := &placements{}
	placed.set(44, slicehub.Placement{AllocID: victim, Addr: "127.0.0.1:23460"})
	routes := consul.NewRoutes(c, service, placed, testsupport.Logger(t))
	routes.WaitTime = 2 * time.Second
	defer runRoutes(routes)()

	meta := map[string]string{slicehub.MetaSliceID: "44", "alloc_id": victim}
	regs := []*api.AgentServiceRegistration{
		// Nomad's own registration of the recorded allocation.
		{ID: "_nomad-task-" + victim + "-group-slice-" + service + "-http", Port: 23460},
		// The attacker's: its own ID with the victim's meta; the victim's
		// allocation in a forged ID at the attacker's address; another
		// allocation's ID.
		{ID: "evil-44", Port: 23461},
		{ID: "_nomad-task-" + victim + "-group-slice-" + service + "-evil", Port: 23462},
		{ID: "_nomad-task-" + other + "-group-slice-" + service + "-http", Port: 23463},
	}
	for _, r := range regs {
		r.Name, r.Address, r.Meta = service, "127.0.0.1", meta
		if err := c.Agent().ServiceRegister(r); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Agent().ServiceDeregister(r.ID) })
	}
	rejected := func(reason string) float64 {
		var m dto.Metric
		if err := routes.Rejected.WithLabelValues(reason).Write(&m); err != nil {
			t.Fatal(err)
		}
		return m.GetCounter().GetValue()
	}
	// Once the three impostors are counted, the table has seen them all.
	testsupport.Eventually(t, 10*time.Second, "three instances refused", func() (bool, error) {
		n := rejected("not_nomad") + rejected("address") + rejected("other_alloc")
		return n == 3, fmt.Errorf("refused: not_nomad %v, address %v, other_alloc %v", rejected("not_nomad"), rejected("address"), rejected("other_alloc"))
	})
	if rt, ok := routes.Lookup(44); !ok || rt.Addr != "127.0.0.1:23460" || rt.AllocID != victim {
		t.Fatalf("route of slice 44 = %+v, %v; want Nomad's registration at 127.0.0.1:23460", rt, ok)
	}
	if rejected("not_nomad") != 1 || rejected("address") != 1 || rejected("other_alloc") != 1 {
		t.Errorf("refused: not_nomad %v, address %v, other_alloc %v; want 1 each", rejected("not_nomad"), rejected("address"), rejected("other_alloc"))
	}
	// A replacement allocation is routed once it is recorded, without
	// waiting for Consul's next change.
	placed.set(44, slicehub.Placement{AllocID: other, Addr: "127.0.0.1:23463"})
	routes.Refresh()
	testsupport.Eventually(t, 10*time.Second, "the recorded replacement routed", func() (bool, error) {
		rt, ok := routes.Lookup(44)
		return ok && rt.AllocID == other && rt.Addr == "127.0.0.1:23463", fmt.Errorf("route %+v", rt)
	})
	// A slice with no record is not routed at all.
	placed.set(44, slicehub.Placement{})
	routes.Refresh()
	testsupport.Eventually(t, 10*time.Second, "no route without a record", func() (bool, error) {
		_, ok := routes.Lookup(44)
		return !ok, nil
	})
}
