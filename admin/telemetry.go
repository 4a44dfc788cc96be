package admin

import (
	"context"
	"sync"
	"time"
)

// Telemetry is what the dashboard reads from the telemetry package (per
// slice and per node time series, and the alerts that are firing). It is
// an interface of the dashboard's own so that the dashboard can be built,
// tested and shipped before telemetry exists: a nil Telemetry means "no
// telemetry yet", and every panel that needs it says so instead of
// failing. An implementation should answer from its own tables; the
// dashboard calls it on every render and every live update (each few
// seconds per open dashboard), so it must not ask Nomad itself.
type Telemetry interface {
	// LatestSlices is the newest recent sample of each slice that has one.
	LatestSlices(ctx context.Context) (map[int64]SliceSample, error)
	// SliceSeries is one slice's memory and CPU since a time, oldest first.
	SliceSeries(ctx context.Context, sliceID int64, since time.Time) (Series, error)
	// NodeSeries is every Nomad node's memory and CPU since a time, by
	// node id, oldest first.
	NodeSeries(ctx context.Context, since time.Time) (map[string]Series, error)
	// ActiveAlerts are the alerts firing now.
	ActiveAlerts(ctx context.Context) ([]Alert, error)
}

// Series are the two charts of a slice or a node.
type Series struct {
	// MemoryMB is memory in use, in MiB.
	MemoryMB []Point
	// CPUPercent is CPU in use, in percent (of a core for a slice, of the
	// node's total for a node).
	CPUPercent []Point
}

// Point is one sample of a series.
type Point struct {
	At    time.Time
	Value float64
}

// SliceSample is the newest telemetry of one slice.
type SliceSample struct {
	At          time.Time
	MemoryMB    float64
	MemoryMaxMB float64 // the slice's memory_max; 0 when unknown
	CPUPercent  float64
	// WhatsApp is the state the slice last reported (slicehub.WA*), ""
	// when unknown.
	WhatsApp string
	// Contacts and Notes are the rows of the slice's CRM (estimates).
	Contacts, Notes int64
}

// Alert is one firing alert, as the dashboard's banner shows it.
type Alert struct {
	Rule     string // "capacity", "pool_empty", "slice_failed", ...
	Severity string // "critical" or "warning"
	Subject  string // what it is about: "slice 12", "node n1", "nomad"
	Message  string
	Since    time.Time
}

// seriesCache keeps each series for a while: telemetry samples once a
// minute or so, while every open dashboard re-renders every few seconds,
// and a day of one slice's samples is a thousand rows. Latest samples and
// alerts are not cached: they are one cheap query each, and an alert
// should show at the next tick.
type seriesCache struct {
	Telemetry
	ttl time.Duration

	mu     sync.Mutex
	slices map[int64]cachedSeries
	nodes  cachedNodes
}

type cachedSeries struct {
	at time.Time
	s  Series
}

type cachedNodes struct {
	at time.Time
	m  map[string]Series
}

func newSeriesCache(t Telemetry, ttl time.Duration) *seriesCache {
	return &seriesCache{Telemetry: t, ttl: ttl, slices: map[int64]cachedSeries{}}
}

func (c *seriesCache) SliceSeries(ctx context.Context, sliceID int64, since time.Time) (Series, error) {
	c.mu.Lock()
	e, ok := c.slices[sliceID]
	c.mu.Unlock()
	if ok && time.Since(e.at) < c.ttl {
		return e.s, nil
	}
	s, err := c.Telemetry.SliceSeries(ctx, sliceID, since)
	if err != nil {
		return s, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	// Entries of retired slices would pile up: sweep the stale ones.
	if len(c.slices) > 1000 {
		for id, e := range c.slices {
			if time.Since(e.at) >= c.ttl {
				delete(c.slices, id)
			}
		}
	}
	c.slices[sliceID] = cachedSeries{at: time.Now(), s: s}
	return s, nil
}

func (c *seriesCache) NodeSeries(ctx context.Context, since time.Time) (map[string]Series, error) {
	c.mu.Lock()
	e := c.nodes
	c.mu.Unlock()
	if e.m != nil && time.Since(e.at) < c.ttl {
		return e.m, nil
	}
	m, err := c.Telemetry.NodeSeries(ctx, since)
	if err != nil {
		return m, err
	}
	c.mu.Lock()
	c.nodes = cachedNodes{at: time.Now(), m: m}
	c.mu.Unlock()
	return m, nil
}
