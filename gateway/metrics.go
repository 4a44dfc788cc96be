package gateway

import (
	"fmt"
	"runtime/debug"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/gofiber/fiber/v2"
	"github.com/gofiber/fiber/v2/middleware/adaptor"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/slicehub/slicehub"
)

// routeClass groups paths for metrics: a label per path would let any
// client create series without bound.
type routeClass uint8

const (
	classOther routeClass = iota
	classAPI
	classSocketIO
	classAuth
	classAdmin
	classGateway // healthz, readyz, metrics
	classInternal
	classPages // the gateway's own HTML pages, their static files and event stream
	numClasses
)

var classNames = [numClasses]string{"other", "api", "socketio", "auth", "admin", "gateway", "internal", "pages"}

func classOf(path string) routeClass {
	switch {
	case strings.HasPrefix(path, "/api/") || path == "/api":
		return classAPI
	case strings.HasPrefix(path, "/socket.io/") || path == "/socket.io":
		return classSocketIO
	case strings.HasPrefix(path, "/auth/"):
		return classAuth
	case strings.HasPrefix(path, "/admin/") || path == "/admin":
		return classAdmin
	case path == "/healthz" || path == "/readyz" || path == "/metrics":
		return classGateway
	case strings.HasPrefix(path, "/internal/"):
		return classInternal
	case path == "/" || path == "/signup" || path == "/login" || path == "/logout" || path == "/reset" ||
		path == "/reset/confirm" || path == "/workspace" || path == "/workspace/events" ||
		strings.HasPrefix(path, "/static/"):
		return classPages
	}
	return classOther
}

type metrics struct {
	registry     *prometheus.Registry
	requests     *prometheus.CounterVec
	overhead     prometheus.Observer
	proxyLatency [numClasses]prometheus.Observer
	wsOpen       prometheus.Gauge
	loopConns    prometheus.Gauge   // browser connections held by the event loops
	loopHandOffs prometheus.Counter // connections the event loops handed to the fasthttp server
	loopPanics   prometheus.Counter // panics the event loops recovered from

	// counters caches requests.WithLabelValues per class and status:
	// resolving labels hashes strings, which the hot path need not do twice.
	counters [numClasses][600]atomic.Pointer[prometheus.Counter]
}

func newMetrics(reg *prometheus.Registry) *metrics {
	if reg == nil {
		reg = prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	m := &metrics{
		registry: reg,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "slicehub", Subsystem: "gateway", Name: "requests_total",
			Help: "Requests answered by the gateway, by route class and status.",
		}, []string{"class", "status"}),
		wsOpen: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "slicehub", Subsystem: "gateway", Name: "websockets_open",
			Help: "WebSocket connections currently proxied to slices.",
		}),
	}
	m.loopConns = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: "slicehub", Subsystem: "gateway", Name: "loop_connections",
		Help: "Browser connections served by the event loops (the plain proxy path).",
	})
	m.loopHandOffs = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "slicehub", Subsystem: "gateway", Name: "loop_handoffs_total",
		Help: "Connections the event loops handed to the fasthttp server: a refusal, a WebSocket, a large or chunked body, a cache miss they could not fill.",
	})
	m.loopPanics = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "slicehub", Subsystem: "gateway", Name: "loop_panics_total",
		Help: "Panics the event loops recovered from, each by closing the one connection it was serving (a bug: see the log).",
	})
	overhead := prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: "slicehub", Subsystem: "gateway", Name: "proxy_overhead_seconds",
		Help: "Time the gateway spends on a proxied request before sending it to the slice (session, route, token).",
		// The target is well under a millisecond: resolution lives down there.
		Buckets: []float64{0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.01, 0.05, 0.25},
	})
	latency := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: "slicehub", Subsystem: "gateway", Name: "proxy_duration_seconds",
		Help:    "Time from a proxied request's arrival to the slice's response headers (the whole body when it is small).",
		Buckets: []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 30, 60},
	}, []string{"class"})
	m.overhead = overhead
	for c := range m.proxyLatency {
		m.proxyLatency[c] = latency.WithLabelValues(classNames[c])
	}
	reg.MustRegister(m.requests, overhead, latency, m.wsOpen, m.loopConns, m.loopHandOffs, m.loopPanics)
	return m
}

func (m *metrics) countRequest(class routeClass, status int) {
	if status < 100 || status >= 600 {
		status = 599
	}
	slot := &m.counters[class][status]
	p := slot.Load()
	if p == nil {
		c := m.requests.WithLabelValues(classNames[class], strconv.Itoa(status))
		slot.Store(&c)
		p = &c
	}
	(*p).Inc()
}

// observe is the outermost middleware: it turns a handler's error into its
// JSON answer (so the status is known here), turns a panic into a 500
// instead of a dead gateway, and counts the request.
func (s *Server) observe(c *fiber.Ctx) (err error) {
	class := classOf(c.Path()) // before the handler: the proxy rewrites the request
	defer func() {
		if r := recover(); r != nil {
			err = s.writeError(c, &slicehub.Error{Op: "gateway.panic", Kind: slicehub.KindInternal,
				Err: fmt.Errorf("panic: %v\n%s", r, debug.Stack())})
			s.metrics.countRequest(class, c.Response().StatusCode())
		}
	}()
	err = s.prepareBody(c, class)
	if err == nil {
		err = c.Next()
	}
	if err != nil {
		if werr := s.writeError(c, err); werr != nil {
			return werr
		}
	}
	s.metrics.countRequest(class, c.Response().StatusCode())
	return nil
}

func (m *metrics) handler() fiber.Handler {
	return adaptor.HTTPHandler(promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{}))
}
