package consul

import (
	"context"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/slicehub/slicehub"
)

// Routes is the gateway's route table: every routable instance of the
// slice service (see Routable), by slice id. One blocking query on the whole service feeds it, so
// the cost does not grow with the number of watchers, and a health change
// reaches the table as soon as Consul answers the query. Lookups are
// lock-free because they sit on the proxy's hot path.
//
// Provenance: anything that can reach a Consul agent may register an
// instance of the slice service, with whatever meta it likes (a hostile
// slice naming another tenant's slice_id, to receive that tenant's traffic
// and gateway token). So the table accepts an instance only when it is
// Nomad's own registration of the slice's current allocation as recorded in
// PostgreSQL (slicehub.Placement): the service ID Nomad gives it names that
// allocation, and its address is the one Nomad gave the allocation. The
// slice_id meta only says which record to compare with; it is never
// trusted. Every other instance is ignored, logged once, and counted in
// slicehub_routes_rejected_total.
type Routes struct {
	client     *api.Client
	service    string
	log        *slog.Logger
	placements Placements
	// Rejected counts the instances refused, once each, by reason:
	// not_nomad (a service ID Nomad does not make), no_placement (no
	// allocation recorded for the slice yet), other_alloc (an allocation
	// that is not the recorded one: also a replaced one, for a moment),
	// address (the recorded allocation's ID at another address).
	Rejected *prometheus.CounterVec
	// WaitTime bounds each blocking query; Consul answers earlier on change.
	WaitTime time.Duration
	// ResetGrace: after Consul's catalog was reset (its index went
	// backwards: a server restarted without its state, a snapshot
	// restored), routes missing from it are kept this long while the
	// agents register their services again. A slice that is alive keeps
	// being served meanwhile; a route to one that died fails with 502, and
	// can reach no other tenant (every slice checks its own gateway token).
	ResetGrace time.Duration

	resetUntil time.Time // only Run's goroutine touches these two
	resetAt    time.Time

	// mu serialises apply: Run's answers and Refresh's reloads.
	mu       sync.Mutex
	entries  []*api.ServiceEntry          // Consul's last answer
	placed   map[int64]slicehub.Placement // PostgreSQL's last answer
	rejected map[string]string            // instance -> reason, at the last apply
	refresh  chan struct{}

	table    atomic.Pointer[map[int64]slicehub.Route]
	lastSync atomic.Int64 // unix nanos of the last successful answer
	errMu    sync.Mutex
	lastErr  error

	subMu sync.Mutex
	subs  map[chan struct{}]struct{}
}

// Placements is where the route table learns each slice's current
// allocation: PostgreSQL (*postgres.DB), as the scheduler recorded it from
// Nomad.
type Placements interface {
	Placements(ctx context.Context) (map[int64]slicehub.Placement, error)
}

// NewRoutes returns a route table for service that routes only the
// allocations placements records; call Run to fill it.
func NewRoutes(client *api.Client, service string, placements Placements, log *slog.Logger) *Routes {
	if log == nil {
		log = slog.Default()
	}
	r := &Routes{client: client, service: service, placements: placements, log: log.With("component", "routes"), WaitTime: 30 * time.Second,
		ResetGrace: 2 * time.Minute, subs: map[chan struct{}]struct{}{}, refresh: make(chan struct{}, 1),
		Rejected: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "slicehub_routes_rejected_total",
			Help: "Instances of the slice service the route table refused, once each, by reason (not_nomad, no_placement, other_alloc, address)."},
			[]string{"reason"})}
	empty := map[int64]slicehub.Route{}
	r.table.Store(&empty)
	return r
}

// Lookup returns the healthy address of a slice.
func (r *Routes) Lookup(sliceID int64) (slicehub.Route, bool) {
	rt, ok := (*r.table.Load())[sliceID]
	return rt, ok
}

// Snapshot returns the current table. The map must not be modified.
func (r *Routes) Snapshot() map[int64]slicehub.Route { return *r.table.Load() }

// Status reports when the table was last confirmed by Consul and the last
// error, if the most recent query failed. While Consul is unreachable the
// table keeps serving the last known routes.
func (r *Routes) Status() (lastSync time.Time, err error) {
	r.errMu.Lock()
	defer r.errMu.Unlock()
	ns := r.lastSync.Load()
	if ns == 0 {
		return time.Time{}, r.lastErr
	}
	return time.Unix(0, ns), r.lastErr
}

// Subscribe returns a channel that receives a value (coalesced) after each
// change of the table, and a function to unsubscribe.
func (r *Routes) Subscribe() (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	r.subMu.Lock()
	r.subs[ch] = struct{}{}
	r.subMu.Unlock()
	return ch, func() {
		r.subMu.Lock()
		delete(r.subs, ch)
		r.subMu.Unlock()
	}
}

// Refresh makes the table reload the recorded placements and apply them to
// Consul's last answer, soon and without blocking: the scheduler calls it
// after recording an allocation, and every replica on slice_changed.
// Requests made while a reload runs are served by one more reload.
func (r *Routes) Refresh() {
	select {
	case r.refresh <- struct{}{}:
	default:
	}
}

// Run keeps the table in sync until ctx ends.
func (r *Routes) Run(ctx context.Context) {
	done := make(chan struct{})
	defer func() { <-done }()
	go func() {
		defer close(done)
		for {
			select {
			case <-ctx.Done():
				return
			case <-r.refresh:
				r.update(ctx, nil)
			}
		}
	}()
	var index uint64
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		q := (&api.QueryOptions{WaitIndex: index, WaitTime: r.WaitTime}).WithContext(ctx)
		// Not passingOnly: that needs every check to pass, and the
		// WhatsApp check must not route (see Routable).
		entries, meta, err := r.client.Health().Service(r.service, "", false, q)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			r.setErr(err)
			r.log.Warn("route query failed; serving the last known routes", "err", err, "retry_in", backoff)
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, 5*time.Second)
			continue
		}
		backoff = 100 * time.Millisecond
		// Consul's index can go backwards (a restart, a snapshot restore);
		// then start over, or the next query would block on a stale index.
		if meta.LastIndex < index || meta.LastIndex == 0 {
			// The index also goes backwards without a reset: a query for a
			// service with no instances can answer a lower index after a
			// blocking wait than right away, and does so again every
			// WaitTime. Re-arming the grace each time kept gone routes for
			// ever; so a grace is armed once per reset, and another
			// backwards index within twice the grace is the same reset.
			if now := time.Now(); index > 0 && r.ResetGrace > 0 && now.Sub(r.resetAt) > 2*r.ResetGrace {
				r.resetAt, r.resetUntil = now, now.Add(r.ResetGrace)
				r.log.Warn("Consul's catalog was reset; keeping the last known routes while it refills",
					"index_was", index, "index_now", meta.LastIndex, "grace", r.ResetGrace)
			}
			index = 0
		} else {
			index = meta.LastIndex
		}
		r.update(ctx, entries)
		r.setErr(nil)
		r.lastSync.Store(time.Now().UnixNano())
	}
}

func (r *Routes) setErr(err error) {
	r.errMu.Lock()
	r.lastErr = err
	r.errMu.Unlock()
}

// update reloads the placements and applies them to entries (nil: to
// Consul's last answer). When PostgreSQL cannot be read, the last known
// placements stay: they were true a moment ago, and a slice placed since
// waits for the next reload.
func (r *Routes) update(ctx context.Context, entries []*api.ServiceEntry) {
	placed, err := r.placements.Placements(ctx)
	if err != nil && ctx.Err() == nil {
		r.log.Warn("cannot read the recorded allocations; routing by the last known ones", "err", err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if err == nil {
		r.placed = placed
	}
	if entries != nil {
		r.entries = entries
	}
	r.store()
}

// store rebuilds the table from r.entries and r.placed; r.mu is held.
func (r *Routes) store() {
	next := make(map[int64]slicehub.Route, len(r.entries))
	modify := make(map[int64]uint64, len(r.entries))
	rejected := map[string]string{}
	for _, e := range r.entries {
		if e.Service == nil || !Routable(e) {
			continue
		}
		id, ok := slicehub.ParseSliceID(e.Service.Meta[slicehub.MetaSliceID])
		if !ok {
			continue
		}
		host := e.Service.Address
		if host == "" && e.Node != nil {
			host = e.Node.Address
		}
		if host == "" || e.Service.Port <= 0 {
			continue
		}
		addr := joinHostPort(host, e.Service.Port)
		alloc := allocFromServiceID(e.Service.ID)
		if why := provenance(r.placed[id], alloc, addr); why != "" {
			key := e.Service.ID
			if e.Node != nil {
				key = e.Node.Node + "/" + key
			}
			rejected[key] = why
			if _, seen := r.rejected[key]; !seen {
				r.reject(why, id, e, addr)
			}
			continue
		}
		// Two passing instances of one allocation exist only briefly (a
		// re-registration); the newest registration wins.
		if prev, dup := modify[id]; dup && prev > e.Service.ModifyIndex {
			continue
		}
		modify[id] = e.Service.ModifyIndex
		next[id] = slicehub.Route{SliceID: id, Addr: addr, AllocID: alloc}
	}
	r.rejected = rejected
	if time.Now().Before(r.resetUntil) {
		for id, rt := range *r.table.Load() {
			if _, ok := next[id]; !ok && r.placed[id].AllocID == rt.AllocID {
				next[id] = rt // not re-registered yet
			}
		}
	}
	prev := r.table.Swap(&next)
	if !sameRoutes(*prev, next) {
		r.notify()
	}
}

// Routable reports whether an instance of the slice service may receive
// traffic: every check of it and of its node passes (Nomad's "slice
// health", Consul's serfHealth, a maintenance mode), as Consul's own
// passing filter would say, except the slice's WhatsApp check
// (slicehub.WhatsAppCheck), which only informs operators: a phone waiting
// for a QR scan or out of coverage leaves the CRM reachable.
func Routable(e *api.ServiceEntry) bool {
	for _, c := range e.Checks {
		if c.Name == slicehub.WhatsAppCheck && e.Service != nil && c.ServiceID == e.Service.ID {
			continue
		}
		if c.Status != api.HealthPassing {
			return false
		}
	}
	return true
}

// RoutableOnly keeps the entries that are Routable: a health query's
// passing filter for the slice service (query with passingOnly false).
func RoutableOnly(entries []*api.ServiceEntry) []*api.ServiceEntry {
	out := entries[:0:0]
	for _, e := range entries {
		if Routable(e) {
			out = append(out, e)
		}
	}
	return out
}

// provenance says why an instance naming allocation alloc at addr is not
// the recorded placement p, or "" when it is.
func provenance(p slicehub.Placement, alloc, addr string) string {
	switch {
	case alloc == "":
		return "not_nomad"
	case p.AllocID == "":
		return "no_placement"
	case alloc != p.AllocID:
		return "other_alloc"
	case p.Addr != "" && addr != p.Addr:
		return "address"
	}
	return ""
}

// reject logs and counts an instance the first time it is refused. A
// service ID Nomad does not make, or the recorded allocation's ID at another
// address, is someone else posing as the slice: a warning. The others
// happen in normal operation (a replaced allocation still registered for a
// moment, a new one registered before the scheduler recorded it).
func (r *Routes) reject(why string, id int64, e *api.ServiceEntry, addr string) {
	r.Rejected.WithLabelValues(why).Inc()
	node := ""
	if e.Node != nil {
		node = e.Node.Node
	}
	args := []any{"slice_id", id, "service_id", e.Service.ID, "node", node, "addr", addr, "reason", why, "recorded", r.placed[id]}
	switch why {
	case "not_nomad", "address":
		r.log.Warn("an instance of the slice service that Nomad did not register for the slice's allocation: not routed", args...)
	default:
		r.log.Info("an instance of the slice service that is not the slice's recorded allocation: not routed", args...)
	}
}

func (r *Routes) notify() {
	r.subMu.Lock()
	defer r.subMu.Unlock()
	for ch := range r.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

func sameRoutes(a, b map[int64]slicehub.Route) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// allocFromServiceID extracts the allocation id from a Nomad-registered
// service id: "_nomad-task-<alloc uuid>-group-<group>-<service>-<port
// label>" for a group service, "_nomad-task-<alloc uuid>-<task>-..." for a
// task's. "" for any other id.
func allocFromServiceID(id string) string {
	const prefix = "_nomad-task-"
	if !strings.HasPrefix(id, prefix) || len(id) < len(prefix)+37 || id[len(prefix)+36] != '-' {
		return ""
	}
	alloc := id[len(prefix) : len(prefix)+36]
	if !isUUID(alloc) {
		return ""
	}
	return alloc
}

// isUUID reports whether s is a lower-case 8-4-4-4-12 hex UUID, as Nomad
// writes allocation ids.
func isUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case i == 8 || i == 13 || i == 18 || i == 23:
			if c != '-' {
				return false
			}
		case '0' <= c && c <= '9', 'a' <= c && c <= 'f':
		default:
			return false
		}
	}
	return true
}

func joinHostPort(host string, port int) string {
	return net.JoinHostPort(strings.Trim(host, "[]"), strconv.Itoa(port))
}
