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
	"github.com/slicehub/slicehub"
)

// Routes is the gateway's route table: every routable instance of the
// slice service (see Routable), by slice id. One blocking query on the whole service feeds it, so
// the cost does not grow with the number of watchers, and a health change
// reaches the table as soon as Consul answers the query. Lookups are
// lock-free because they sit on the proxy's hot path.
type Routes struct {
	client  *api.Client
	service string
	log     *slog.Logger
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

	table    atomic.Pointer[map[int64]slicehub.Route]
	lastSync atomic.Int64 // unix nanos of the last successful answer
	errMu    sync.Mutex
	lastErr  error

	subMu sync.Mutex
	subs  map[chan struct{}]struct{}
}

// NewRoutes returns a route table for service; call Run to fill it.
func NewRoutes(client *api.Client, service string, log *slog.Logger) *Routes {
	if log == nil {
		log = slog.Default()
	}
	r := &Routes{client: client, service: service, log: log.With("component", "routes"), WaitTime: 30 * time.Second,
		ResetGrace: 2 * time.Minute, subs: map[chan struct{}]struct{}{}}
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

// Run keeps the table in sync until ctx ends.
func (r *Routes) Run(ctx context.Context) {
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
		r.store(entries)
		r.setErr(nil)
		r.lastSync.Store(time.Now().UnixNano())
	}
}

func (r *Routes) setErr(err error) {
	r.errMu.Lock()
	r.lastErr = err
	r.errMu.Unlock()
}

func (r *Routes) store(entries []*api.ServiceEntry) {
	next := make(map[int64]slicehub.Route, len(entries))
	modify := make(map[int64]uint64, len(entries))
	for _, e := range entries {
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
		// Two passing instances of one slice exist only briefly (a
		// replacement allocation); the newest registration wins.
		if prev, dup := modify[id]; dup && prev > e.Service.ModifyIndex {
			continue
		}
		modify[id] = e.Service.ModifyIndex
		next[id] = slicehub.Route{SliceID: id, Addr: joinHostPort(host, e.Service.Port), AllocID: allocFromServiceID(e.Service.ID)}
	}
	if time.Now().Before(r.resetUntil) {
		for id, rt := range *r.table.Load() {
			if _, ok := next[id]; !ok {
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
// service id, "_nomad-task-<alloc uuid>-<group>-<service>-<port label>".
func allocFromServiceID(id string) string {
	const prefix = "_nomad-task-"
	if !strings.HasPrefix(id, prefix) || len(id) < len(prefix)+36 {
		return ""
	}
	return id[len(prefix) : len(prefix)+36]
}

func joinHostPort(host string, port int) string {
	return net.JoinHostPort(strings.Trim(host, "[]"), strconv.Itoa(port))
}
