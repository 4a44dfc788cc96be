package scheduler

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the pool's figures, in the style of Coder's prebuilds: desired,
// per state, claims and how many found the pool empty, claim latency,
// dispatch-to-healthy time, reconcile time and repairs by kind.
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
	CapacityExhausted prometheus.Gauge
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
			Help: "Repairs made by the reconciler, by kind."}, []string{"kind"}),
		Bootstraps: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "slicehub_bootstraps_total",
			Help: "Credential hand-overs to slices, by result."}, []string{"result"}),
		CapacityExhausted: prometheus.NewGauge(prometheus.GaugeOpts{Name: "slicehub_pool_capacity_exhausted",
			Help: "1 when the warm pool cannot be refilled because max_slices is reached."}),
	}
	if reg != nil {
		reg.MustRegister(m.Desired, m.Slices, m.Claims, m.ClaimDuration, m.Dispatches, m.DispatchToHealthy,
			m.ReconcileDuration, m.Repairs, m.Bootstraps, m.CapacityExhausted)
	}
	return m
}
