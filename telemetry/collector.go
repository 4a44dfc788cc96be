package telemetry

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/slicehub/slicehub"
	"github.com/slicehub/slicehub/internal/parallel"
	"github.com/slicehub/slicehub/sliceclient"
)

// Routes is the healthy view of the slices (consul.Routes).
type Routes interface {
	Snapshot() map[int64]slicehub.Route
}

// Slices is what the collector reads about slices and the pool from
// PostgreSQL (*postgres.DB).
type Slices interface {
	Slices(ctx context.Context, states ...slicehub.SliceState) ([]slicehub.Slice, error)
	GatewayToken(ctx context.Context, id int64) (string, error)
	// DatabaseSizes is the size of each slice's database, by slice id.
	DatabaseSizes(ctx context.Context, ids []int64) (map[int64]int64, error)
}

// CRMCounter is implemented by Slices that can count each slice CRM's
// rows (*postgres.DB). It is optional: without it the counts stay 0.
type CRMCounter interface {
	CRMCounts(ctx context.Context, ids []int64) (map[int64]CRMCount, error)
}

// Rules are the alert thresholds; a zero threshold turns its rule off.
type Rules struct {
	// CapacityPercent: reserved memory of the nodes that can run slices,
	// as a percentage of their allocatable memory.
	CapacityPercent float64
	// MemoryPercent: a slice's memory as a percentage of its memory_max.
	MemoryPercent float64
	// WADisconnectedFor: how long an assigned slice's WhatsApp may be
	// disconnected (or not answer) before the alert fires.
	WADisconnectedFor time.Duration
	// WarmEmptyFor: how long the warm pool may be empty, while MinWarm
	// wants slices, before the alert fires (a claim empties it briefly).
	WarmEmptyFor time.Duration
	// GovernorRestarts: memory governor restarts of one slice within
	// GovernorWindow (default 6h) that raise RuleGovernorRestarts.
	GovernorRestarts int
	GovernorWindow   time.Duration
}

// Config of a Collector.
type Config struct {
	// Interval between collections (default 60s); Retention how long the
	// samples are kept (default 7 days).
	Interval, Retention time.Duration
	// MemoryMaxBytes is a slice's memory_max, for the memory rule and the
	// dashboard's bars.
	MemoryMaxBytes int64
	// MinWarm is the warm pool's target (the scheduler's, which an admin
	// can change at run time).
	MinWarm func() int
	// Capacity is the scheduler's capacity count.
	Capacity func(ctx context.Context) (slicehub.Capacity, error)
	// Checks are the dependencies to probe for the unreachable rule, by
	// name ("nomad", "consul", "postgres").
	Checks map[string]func(ctx context.Context) error
	Rules  Rules
	// HTTPClient asks the slices for their WhatsApp state.
	HTTPClient *http.Client
	Logger     *slog.Logger
	Registry   prometheus.Registerer
	Now        func() time.Time
}

// Collector samples the platform every interval, stores and exports the
// samples, and evaluates the alerts. Run it only on the leader (inside
// consul.Lead): one writer keeps the series free of duplicates and the
// alerts from firing once per replica.
type Collector struct {
	cfg     Config
	store   Store
	nomad   Nomad
	routes  Routes
	slices  Slices
	alerter *Alerter
	log     *slog.Logger
	m       *metrics

	mu        sync.Mutex
	lastPrune time.Time
	// governor: each slice's restart counter readings within the window.
	governor map[int64][]governorPoint
}

// New returns a Collector.
func New(cfg Config, store Store, nomad Nomad, routes Routes, slices Slices, alerter *Alerter) *Collector {
	if cfg.Interval <= 0 {
		cfg.Interval = time.Minute
	}
	if cfg.Retention <= 0 {
		cfg.Retention = 7 * 24 * time.Hour
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: 5 * time.Second}
	}
	if cfg.MinWarm == nil {
		cfg.MinWarm = func() int { return 0 }
	}
	if cfg.Rules.GovernorWindow <= 0 {
		cfg.Rules.GovernorWindow = 6 * time.Hour
	}
	return &Collector{cfg: cfg, store: store, nomad: nomad, routes: routes, slices: slices, alerter: alerter,
		log: cfg.Logger.With("component", "telemetry"), m: newMetrics(cfg.Registry)}
}

// Run collects at once, then every interval, until ctx ends (the leader
// loses its lock).
func (c *Collector) Run(ctx context.Context) {
	c.log.Info("telemetry collector started", "interval", c.cfg.Interval, "retention", c.cfg.Retention)
	t := time.NewTicker(c.cfg.Interval)
	defer t.Stop()
	// A replica that stepped down must not go on exporting its last values
	// as if they were current: only the leader's gauges are meaningful.
	defer c.m.reset()
	for {
		if err := c.Collect(ctx); err != nil && ctx.Err() == nil {
			c.log.Warn("telemetry collection incomplete", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Collect runs one collection: samples, storage, /metrics, pruning (at
// most hourly) and the alerts. It returns the first error met, having done
// what it could without it.
func (c *Collector) Collect(ctx context.Context) error {
	const op = "telemetry.collect"
	now := c.cfg.Now()
	var firstErr error
	note := func(err error) {
		if err != nil && firstErr == nil {
			firstErr = slicehub.Wrap(op, slicehub.KindUnavailable, err)
		}
	}
	var rules []string
	var conds []Condition

	// Dependencies first: when one is down, the checks that need it are
	// skipped below rather than resolving alerts they cannot judge.
	down := map[string]bool{}
	for name, check := range c.cfg.Checks {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := check(cctx)
		cancel()
		if err != nil {
			down[name] = true
			conds = append(conds, Condition{Rule: RuleUnreachable, Subject: name, Value: 1,
				Message: fmt.Sprintf("%s is unreachable: %v", name, err)})
		}
		c.m.up.WithLabelValues(name).Set(b2f(err == nil))
	}
	rules = append(rules, RuleUnreachable)

	samples, sampleErr := c.sampleSlices(ctx, now)
	note(sampleErr)
	nodes, err := c.nomad.NodeStats(ctx)
	note(err)
	for i := range nodes {
		nodes[i].At = now
	}
	c.export(samples, nodes)
	if !down["postgres"] {
		note(c.store.InsertSliceSamples(ctx, samples))
		note(c.store.InsertNodeSamples(ctx, nodes))
		c.prune(ctx, now)
	}

	// Per-slice rules from the samples. The memory rule needs Nomad; the
	// WhatsApp rule needs PostgreSQL too (which slices have a user).
	if !down["nomad"] && sampleErr == nil && c.cfg.Rules.MemoryPercent > 0 && c.cfg.MemoryMaxBytes > 0 {
		rules = append(rules, RuleMemoryNearMax)
		for _, s := range samples {
			pct := 100 * float64(s.MemoryBytes) / float64(c.cfg.MemoryMaxBytes)
			if pct >= c.cfg.Rules.MemoryPercent {
				conds = append(conds, Condition{Rule: RuleMemoryNearMax, Subject: sliceSubject(s.SliceID), Value: pct,
					Message: fmt.Sprintf("slice %d uses %.0f%% of its memory_max (%d MiB of %d MiB)",
						s.SliceID, pct, s.MemoryBytes>>20, c.cfg.MemoryMaxBytes>>20)})
			}
		}
	}
	if !down["postgres"] {
		conds, rules = c.sliceRules(ctx, samples, conds, rules, note)
	}
	if sampleErr == nil && c.cfg.Rules.GovernorRestarts > 0 {
		rules = append(rules, RuleGovernorRestarts)
		conds = append(conds, c.governorRule(samples, now)...)
	}
	if c.cfg.Capacity != nil && c.cfg.Rules.CapacityPercent > 0 && !down["nomad"] {
		if capy, err := c.cfg.Capacity(ctx); err != nil {
			note(err)
		} else {
			rules = append(rules, RuleCapacity)
			if capy.MemoryMB > 0 {
				pct := 100 * float64(capy.ReservedMB) / float64(capy.MemoryMB)
				c.m.capacity.Set(pct)
				if pct >= c.cfg.Rules.CapacityPercent {
					conds = append(conds, Condition{Rule: RuleCapacity, Subject: "cluster", Value: pct,
						Message: fmt.Sprintf("%.0f%% of the nodes' memory is reserved (%d of %d MiB); %d more slices fit",
							pct, capy.ReservedMB, capy.MemoryMB, capy.Fit)})
				}
			}
		}
	}
	if c.alerter != nil {
		c.alerter.Evaluate(ctx, rules, conds)
		if active, err := c.store.ActiveAlerts(ctx); err == nil {
			c.m.alerts.Reset()
			for _, a := range active {
				c.m.alerts.WithLabelValues(a.Rule).Inc()
			}
		}
	}
	c.log.Debug("telemetry collected", "slices", len(samples), "nodes", len(nodes), "took", c.cfg.Now().Sub(now))
	return firstErr
}

// sliceRules evaluates the rules that need the slices' states.
func (c *Collector) sliceRules(ctx context.Context, samples []SliceSample, conds []Condition, rules []string, note func(error)) ([]Condition, []string) {
	live, err := c.slices.Slices(ctx, slicehub.StatesWhere(slicehub.SliceState.Live)...)
	if err != nil {
		note(err)
		return conds, rules
	}
	warm := 0
	byID := map[int64]SliceSample{}
	for _, s := range samples {
		byID[s.SliceID] = s
	}
	rules = append(rules, RuleSliceFailed)
	if c.cfg.Rules.WADisconnectedFor > 0 {
		rules = append(rules, RuleWADisconnected)
	}
	for _, s := range live {
		switch {
		case s.State == slicehub.StateWarm:
			warm++
		case s.State == slicehub.StateFailed:
			conds = append(conds, Condition{Rule: RuleSliceFailed, Subject: sliceSubject(s.ID), Value: float64(s.Restarts),
				Message: fmt.Sprintf("slice %d failed after %d restarts (user %d)", s.ID, s.Restarts, s.UserID)})
		case s.State.Routable():
			// Its user reaches WhatsApp through it.
			if c.cfg.Rules.WADisconnectedFor <= 0 {
				continue
			}
			// "qr" is not counted: a user who never linked a phone is not
			// an incident. No answer at all is.
			smp := byID[s.ID]
			if smp.WAState == slicehub.WAConnected || smp.WAState == slicehub.WAQR || smp.WAState == slicehub.WAStarting {
				continue
			}
			state := smp.WAState
			if state == "" {
				state = "not answering"
			}
			conds = append(conds, Condition{Rule: RuleWADisconnected, Subject: sliceSubject(s.ID), For: c.cfg.Rules.WADisconnectedFor,
				Message: fmt.Sprintf("slice %d (user %d): WhatsApp %s for more than %s", s.ID, s.UserID, state, c.cfg.Rules.WADisconnectedFor)})
		}
	}
	if minWarm := c.cfg.MinWarm(); minWarm > 0 {
		rules = append(rules, RuleWarmPoolEmpty)
		if warm == 0 {
			conds = append(conds, Condition{Rule: RuleWarmPoolEmpty, Subject: "pool", For: c.cfg.Rules.WarmEmptyFor,
				Message: fmt.Sprintf("no warm slice (the pool wants %d): new users wait for a slice to start", minWarm)})
		}
	}
	return conds, rules
}

func sliceSubject(id int64) string { return "slice/" + strconv.FormatInt(id, 10) }

// sampleSlices samples each running slice: Nomad's stats of its
// allocation, and its WhatsApp state when it has a route.
func (c *Collector) sampleSlices(ctx context.Context, now time.Time) ([]SliceSample, error) {
	allocs, err := c.nomad.SliceAllocs(ctx)
	if err != nil {
		return nil, err
	}
	var routes map[int64]slicehub.Route
	if c.routes != nil {
		routes = c.routes.Snapshot()
	}
	var sizes map[int64]int64
	var counts map[int64]CRMCount
	if c.slices != nil && len(allocs) > 0 {
		ids := make([]int64, len(allocs))
		for i, a := range allocs {
			ids[i] = a.SliceID
		}
		if sizes, err = c.slices.DatabaseSizes(ctx, ids); err != nil {
			c.log.Debug("no database sizes", "err", err)
		}
		if cc, ok := c.slices.(CRMCounter); ok {
			if counts, err = cc.CRMCounts(ctx, ids); err != nil {
				c.log.Debug("no CRM counts", "err", err)
			}
		}
	}
	out := make([]SliceSample, len(allocs))
	parallel.Each(len(allocs), 8, func(i int) {
		a := allocs[i]
		s := SliceSample{SliceID: a.SliceID, At: now, AllocID: a.AllocID, NodeID: a.NodeID, MemoryMaxBytes: c.cfg.MemoryMaxBytes, DBBytes: sizes[a.SliceID],
			Contacts: counts[a.SliceID].Contacts, Notes: counts[a.SliceID].Notes}
		if u, err := c.nomad.AllocUsage(ctx, a.AllocID); err == nil {
			s.MemoryBytes, s.CPUPercent = u.MemoryBytes, u.CPUPercent
		} else {
			c.log.Debug("no stats for a slice allocation", "slice_id", a.SliceID, "alloc_id", a.AllocID, "err", err)
		}
		if rt, ok := routes[a.SliceID]; ok && c.slices != nil {
			// One token read for both calls: the slice's WhatsApp state, as
			// the gateway's workspace page asks it, and its /api/metrics.
			sc, sl, err := c.sliceClient(ctx, a.SliceID, rt.Addr)
			if err != nil {
				c.log.Debug("no gateway token for a slice", "slice_id", a.SliceID, "err", err)
				out[i] = s
				return
			}
			if st, err := sc.WhatsAppState(ctx, sl); err == nil {
				s.WAState, s.Healthy = st, true
			} else {
				c.log.Debug("no WhatsApp state from a slice", "slice_id", a.SliceID, "err", err)
			}
			if n, b, err := sliceMetrics(ctx, sc, sl); err == nil {
				s.GovernorRestarts, s.GovernedBytes, s.GovernorKnown = n, b, true
			} else {
				c.log.Debug("no metrics from a slice", "slice_id", a.SliceID, "err", err)
			}
		}
		out[i] = s
	})
	return out, nil
}

// sliceClient is the client and the slice's address for a call to its
// API with its gateway token (package sliceclient).
func (c *Collector) sliceClient(ctx context.Context, id int64, addr string) (sliceclient.Client, sliceclient.Slice, error) {
	token, err := c.slices.GatewayToken(ctx, id)
	if err != nil {
		return sliceclient.Client{}, sliceclient.Slice{}, err
	}
	return sliceclient.Client{HTTP: c.cfg.HTTPClient, Timeout: 5 * time.Second}, sliceclient.Slice{ID: id, Addr: addr, Token: token}, nil
}

// prune deletes what is older than the retention, at most once an hour:
// deleting a minute's rows each minute would cost as much for no gain.
func (c *Collector) prune(ctx context.Context, now time.Time) {
	c.mu.Lock()
	due := now.Sub(c.lastPrune) >= time.Hour
	if due {
		c.lastPrune = now
	}
	c.mu.Unlock()
	if !due {
		return
	}
	n, err := c.store.PruneTelemetry(ctx, now.Add(-c.cfg.Retention))
	if err != nil {
		c.log.Warn("cannot prune telemetry", "err", err)
		return
	}
	if n > 0 {
		c.log.Info("telemetry pruned", "rows", n, "before", now.Add(-c.cfg.Retention))
	}
}

// export sets the gauges from this collection; the slice and node series
// are reset first so that a retired slice or a removed node disappears
// from /metrics instead of showing its last value forever.
func (c *Collector) export(samples []SliceSample, nodes []NodeSample) {
	m := c.m
	m.sliceMemory.Reset()
	m.sliceCPU.Reset()
	m.sliceWA.Reset()
	m.sliceDB.Reset()
	m.sliceRows.Reset()
	m.sliceGovernor.Reset()
	m.sliceGoverned.Reset()
	for _, s := range samples {
		if s.GovernorKnown {
			id := strconv.FormatInt(s.SliceID, 10)
			m.sliceGovernor.WithLabelValues(id).Set(float64(s.GovernorRestarts))
			m.sliceGoverned.WithLabelValues(id).Set(float64(s.GovernedBytes))
		}
		id := strconv.FormatInt(s.SliceID, 10)
		m.sliceMemory.WithLabelValues(id).Set(float64(s.MemoryBytes))
		m.sliceCPU.WithLabelValues(id).Set(s.CPUPercent)
		m.sliceWA.WithLabelValues(id).Set(b2f(s.WAState == slicehub.WAConnected))
		m.sliceDB.WithLabelValues(id).Set(float64(s.DBBytes))
		m.sliceRows.WithLabelValues(id, "contacts").Set(float64(s.Contacts))
		m.sliceRows.WithLabelValues(id, "notes").Set(float64(s.Notes))
	}
	m.nodeMemory.Reset()
	m.nodeCPU.Reset()
	m.nodeDisk.Reset()
	for _, n := range nodes {
		m.nodeMemory.WithLabelValues(n.Name, "used").Set(float64(n.MemoryUsed))
		m.nodeMemory.WithLabelValues(n.Name, "total").Set(float64(n.MemoryTotal))
		m.nodeCPU.WithLabelValues(n.Name).Set(n.CPUPercent)
		m.nodeDisk.WithLabelValues(n.Name, "used").Set(float64(n.DiskUsed))
		m.nodeDisk.WithLabelValues(n.Name, "total").Set(float64(n.DiskTotal))
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// metrics are the collector's gauges on /metrics. They are only set on the
// leader; Prometheus should scrape every replica and take the leader's.
type metrics struct {
	sliceMemory, sliceCPU, sliceWA *prometheus.GaugeVec
	sliceDB, sliceRows             *prometheus.GaugeVec
	sliceGovernor, sliceGoverned   *prometheus.GaugeVec
	nodeMemory, nodeCPU, nodeDisk  *prometheus.GaugeVec
	up, alerts                     *prometheus.GaugeVec
	capacity                       prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	g := func(name, help string, labels ...string) *prometheus.GaugeVec {
		return prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "slicehub", Name: name, Help: help}, labels)
	}
	m := &metrics{
		sliceMemory:   g("slice_memory_bytes", "Resident memory of each running slice, from Nomad's allocation stats.", "slice_id"),
		sliceCPU:      g("slice_cpu_percent", "CPU of each running slice, percent of one core.", "slice_id"),
		sliceWA:       g("slice_whatsapp_connected", "1 when the slice's WhatsApp is connected.", "slice_id"),
		sliceDB:       g("slice_database_bytes", "Size of each running slice's database (with its profile snapshot).", "slice_id"),
		sliceRows:     g("slice_crm_rows", "Rows of each running slice's CRM, by table (contacts, notes; PostgreSQL's estimate).", "slice_id", "table"),
		sliceGovernor: g("slice_governor_restarts", "Each slice's memory governor Chromium restarts since the slice process started (its own counter, read from the slice's /api/metrics).", "slice_id"),
		sliceGoverned: g("slice_governed_memory_bytes", "Each slice's cgroup anon + shmem memory, what its memory governor weighs (from the slice's /api/metrics).", "slice_id"),
		nodeMemory:    g("node_memory_bytes", "Memory of each Nomad client node.", "node", "kind"),
		nodeCPU:       g("node_cpu_percent", "CPU busy on each Nomad client node, mean over its cores.", "node"),
		nodeDisk:      g("node_disk_bytes", "Disk of each Nomad client node's allocation directory.", "node", "kind"),
		up:            g("dependency_up", "1 when the leader's last probe of a dependency succeeded.", "dependency"),
		alerts:        g("alerts_active", "Active alerts by rule.", "rule"),
		capacity: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "slicehub", Name: "capacity_reserved_percent",
			Help: "Reserved memory of the nodes that can run slices, percent of their allocatable memory."}),
	}
	if reg != nil {
		reg.MustRegister(m.sliceMemory, m.sliceCPU, m.sliceWA, m.sliceDB, m.sliceRows, m.sliceGovernor, m.sliceGoverned, m.nodeMemory, m.nodeCPU, m.nodeDisk, m.up, m.alerts, m.capacity)
	}
	return m
}

func (m *metrics) reset() {
	for _, v := range []*prometheus.GaugeVec{m.sliceMemory, m.sliceCPU, m.sliceWA, m.sliceDB, m.sliceRows, m.sliceGovernor, m.sliceGoverned, m.nodeMemory, m.nodeCPU, m.nodeDisk, m.up, m.alerts} {
		v.Reset()
	}
	m.capacity.Set(0)
}
