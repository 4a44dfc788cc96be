package scheduler

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the pool's figures, in the style of Coder's prebuilds:
// desired, per state, claims and how many found the pool empty, claim
// latency, dispatch-to-healthy time, reconcile time, repairs by kind, plus
// what Nomad's nodes can still hold and the failures that page someone.
type Metrics struct {
	Desired           prometheus.Gauge
	Slices            *prometheus.GaugeVec
	Claims            *prometheus.CounterVec
	ClaimDuration     prometheus.Histogram
	Dispatches        prometheus.Counter
	DispatchToHealthy prometheus.Histogram
	ReconcileDuration prometheus.Histogram
	Repairs           *prometheus.CounterVec
	Bootstraps        *prometheus.CounterVec
	// CapacityExhausted is 1 while a slice the pool wants cannot be
	// dispatched, because max_slices is reached or nothing fits on the
	// nodes (see the reason in the log).
	CapacityExhausted prometheus.Gauge
	CapacityNodes     prometheus.Gauge
	CapacityMemory    *prometheus.GaugeVec // kind = allocatable | reserved, in bytes
	CapacityFit       prometheus.Gauge
	// SliceFailures counts slices marked failed (their restart budget
	// exhausted), by the state they failed from: alert on any increase.
	SliceFailures *prometheus.CounterVec
	Operations    *prometheus.CounterVec
	NomadEvents   *prometheus.CounterVec
	Leader        prometheus.Gauge
	Retention     *prometheus.CounterVec
	// Admission (admission.go): slices dispatched and not yet healthy, and
	// user slices the dispatch cap holds back.
	DispatchesInFlight prometheus.Gauge
	DispatchesWaiting  prometheus.Gauge
}

// NewMetrics creates the metrics and registers them on reg (none when nil).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Desired: prometheus.NewGauge(prometheus.GaugeOpts{Name: "slicehub_pool_desired_warm", Help: "Warm slices the pool aims to keep."}),
		Slices:  prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "slicehub_slices", Help: "Slices by state."}, []string{"state"}),
		Claims: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "slicehub_claims_total",
			Help: "Claims by result: warm (served from the pool), starting, pool_empty (on-demand slice)."}, []string{"result"}),
		ClaimDuration: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "slicehub_claim_duration_seconds",
			Help: "Time to bind a user to a slice.", Buckets: prometheus.ExponentialBuckets(0.001, 2, 14)}),
		Dispatches: prometheus.NewCounter(prometheus.CounterOpts{Name: "slicehub_dispatches_total", Help: "Child jobs dispatched."}),
		DispatchToHealthy: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "slicehub_dispatch_to_healthy_seconds",
			Help: "Time from dispatch to passing in Consul.", Buckets: prometheus.ExponentialBuckets(0.25, 2, 10)}),
		ReconcileDuration: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "slicehub_reconcile_duration_seconds",
			Help: "Time of one full reconcile.", Buckets: prometheus.ExponentialBuckets(0.001, 2, 14)}),
		Repairs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "slicehub_repairs_total",
			Help: "Repairs made by the reconciler, by kind: lost_job, provision_timeout, unhealthy, stray_child, stop_unwanted, failed, warm_ttl, adopted; hand dispatches: hand_adopted, hand_duplicate, hand_suspended, hand_retired, hand_malformed."}, []string{"kind"}),
		Bootstraps: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "slicehub_bootstraps_total",
			Help: "Credential hand-overs to slices, by result."}, []string{"result"}),
		CapacityExhausted: prometheus.NewGauge(prometheus.GaugeOpts{Name: "slicehub_pool_capacity_exhausted",
			Help: "1 while the pool wants a slice it cannot dispatch: max_slices reached or nothing fits on Nomad's nodes."}),
		CapacityNodes: prometheus.NewGauge(prometheus.GaugeOpts{Name: "slicehub_capacity_nodes",
			Help: "Nomad nodes that can run slices (ready, eligible, driver healthy)."}),
		CapacityMemory: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "slicehub_capacity_memory_bytes",
			Help: "Memory of the nodes that can run slices: allocatable, and reserved by allocations."}, []string{"kind"}),
		CapacityFit: prometheus.NewGauge(prometheus.GaugeOpts{Name: "slicehub_capacity_slices_fit",
			Help: "How many more slices fit on Nomad's nodes now."}),
		SliceFailures: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "slicehub_slice_failures_total",
			Help: "Slices marked failed after exhausting their restart budget, by the state they failed from. Alert on any increase."}, []string{"from"}),
		Operations: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "slicehub_slice_operations_total",
			Help: "Billing and admin operations on slices, by operation and result (done, noop, error)."}, []string{"op", "result"}),
		NomadEvents: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "slicehub_nomad_events_total",
			Help: "Nomad event stream batches, by kind: relevant (a reconcile follows), ignored, stream_error, connected."}, []string{"kind"}),
		Leader: prometheus.NewGauge(prometheus.GaugeOpts{Name: "slicehub_scheduler_leader",
			Help: "1 while this replica holds the leader lock and reconciles."}),
		Retention: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "slicehub_retention_total",
			Help: "Retention work on retired slices, by step (dumped, dropped, profile_deleted) and result."}, []string{"step", "result"}),
		DispatchesInFlight: prometheus.NewGauge(prometheus.GaugeOpts{Name: "slicehub_admission_dispatches_in_flight",
			Help: "Slices dispatched and not yet healthy (the dispatch cap counts these per node)."}),
		DispatchesWaiting: prometheus.NewGauge(prometheus.GaugeOpts{Name: "slicehub_admission_dispatches_waiting",
			Help: "Slices the dispatch cap held back in the last reconcile."}),
	}
	if reg != nil {
		reg.MustRegister(m.Desired, m.Slices, m.Claims, m.ClaimDuration, m.Dispatches, m.DispatchToHealthy,
			m.ReconcileDuration, m.Repairs, m.Bootstraps, m.CapacityExhausted, m.CapacityNodes, m.CapacityMemory,
			m.CapacityFit, m.SliceFailures, m.Operations, m.NomadEvents, m.Leader, m.Retention,
			m.DispatchesInFlight, m.DispatchesWaiting)
	}
	return m
}
