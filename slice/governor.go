package slice

// The memory governor: WhatsApp Web's memory grows with use and idling (300
// MB to 1.2 GB in a month, 100 to 500 MB in hours: docs/architecture.md),
// and the usual remedy is a Chromium restart on the same profile, which
// keeps the login. The slice watches its own cgroup against a soft
// threshold below its hard memory_max and, over it, restarts Chromium at a
// quiet moment (no send in flight, no history import running), through the
// same path as a crash recovery, which loses no message: the syncer catches
// up from WhatsApp once the page is back. No re-link: the profile stays.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// GovernorConfig configures the memory governor (SLICE_MEMORY_SOFT etc.).
type GovernorConfig struct {
	// Soft is the threshold in bytes of anonymous + shmem memory; 0: no
	// governor.
	Soft uint64
	// Every is how often memory is read. Default 15 s.
	Every time.Duration
	// MinInterval is the least time between two restarts: the loop guard.
	// A slice over its threshold right after a restart does not restart
	// again before it; it logs at ERROR instead. Default 10 min.
	MinInterval time.Duration
	// AlertAfter restarts within AlertWindow raise an alert (a log at
	// ERROR with alert=slice_memory_governor). Default 3 in 6 h.
	AlertAfter  int
	AlertWindow time.Duration
	// QuietFor bounds the wait for a quiet moment: past it, the restart
	// waits for the next reading. Default 2 min.
	QuietFor time.Duration
	// Read replaces the cgroup reader (tests); nil: CgroupMemory.
	Read func() (MemoryUsage, error) `json:"-"`
}

func (c GovernorConfig) withDefaults() GovernorConfig {
	if c.Every <= 0 {
		c.Every = 15 * time.Second
	}
	if c.MinInterval <= 0 {
		c.MinInterval = 10 * time.Minute
	}
	if c.AlertAfter <= 0 {
		c.AlertAfter = 3
	}
	if c.AlertWindow <= 0 {
		c.AlertWindow = 6 * time.Hour
	}
	if c.QuietFor <= 0 {
		c.QuietFor = 2 * time.Minute
	}
	return c
}

// governorRestarts counts the governor's Chromium restarts, by outcome.
var governorRestarts = prometheus.NewCounterVec(prometheus.CounterOpts{
	Namespace: "slicehub", Subsystem: "slice", Name: "governor_restarts_total",
	Help: "Chromium restarts by the slice's memory governor, by result (restarted, deferred_busy, suppressed_loop).",
}, []string{"result"})

// governorSoft is the soft threshold in force (0: no governor).
var governorSoft = prometheus.NewGauge(prometheus.GaugeOpts{
	Namespace: "slicehub", Subsystem: "slice", Name: "memory_soft_bytes",
	Help: "The memory governor's soft threshold (anon + shmem), 0 when the governor is off.",
})

// cgroupMemory exports the slice's own cgroup memory at each scrape, read
// as the governor reads it; nothing when there is no cgroup to read (a
// slice run outside a container).
type cgroupMemory struct{ desc *prometheus.Desc }

func (c cgroupMemory) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c cgroupMemory) Collect(ch chan<- prometheus.Metric) {
	u, err := CgroupMemory()
	if err != nil {
		return
	}
	for kind, v := range map[string]uint64{"anon": u.Anon, "shmem": u.Shmem, "file": u.File} {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(v), kind)
	}
}

func init() {
	prometheus.MustRegister(governorRestarts, governorSoft, cgroupMemory{prometheus.NewDesc("slicehub_slice_cgroup_memory_bytes",
		"The slice's own cgroup memory by kind (anon, shmem: what the governor weighs; file: page cache), read at each scrape.",
		[]string{"kind"}, nil)})
}

// Decision is what the governor does with one reading.
type Decision string

const (
	DecideNothing  Decision = ""                // under the threshold
	DecideRestart  Decision = "restarted"       // over it, quiet: restart
	DecideBusy     Decision = "deferred_busy"   // over it, but a send or an import runs
	DecideLoopHold Decision = "suppressed_loop" // over it, but a restart was too recent
)

// governor is the decision logic, apart from clocks and cgroups so that it
// can be tested with fakes.
type governor struct {
	cfg      GovernorConfig
	restarts []time.Time // within AlertWindow
	held     bool        // the loop guard was logged since the last restart
}

// decide says what to do with a reading of used bytes at now, when busy
// tells whether a send or an import is running.
func (g *governor) decide(now time.Time, used uint64, busy bool) Decision {
	if g.cfg.Soft == 0 || used < g.cfg.Soft {
		return DecideNothing
	}
	if n := len(g.restarts); n > 0 && now.Sub(g.restarts[n-1]) < g.cfg.MinInterval {
		return DecideLoopHold
	}
	if busy {
		return DecideBusy
	}
	return DecideRestart
}

// restarted records a restart at now and says whether the rate calls for
// an alert.
func (g *governor) restarted(now time.Time) (recent int, alert bool) {
	kept := g.restarts[:0]
	for _, t := range g.restarts {
		if now.Sub(t) < g.cfg.AlertWindow {
			kept = append(kept, t)
		}
	}
	g.restarts = append(kept, now)
	g.held = false
	return len(g.restarts), len(g.restarts) >= g.cfg.AlertAfter
}

// Governor runs the decision logic against the slice's cgroup.
type Governor struct {
	g       governor
	read    func() (MemoryUsage, error)
	busy    func() bool
	restart func() error
	now     func() time.Time
	log     *slog.Logger

	mu     sync.Mutex
	events []GovernorEvent
}

// GovernorEvent is one restart in the slice's history.
type GovernorEvent struct {
	At     time.Time   `json:"at"`
	Usage  MemoryUsage `json:"usage"`
	Soft   uint64      `json:"soft"`
	Recent int         `json:"recent"` // restarts within AlertWindow
	Alert  bool        `json:"alert"`
	Error  string      `json:"error,omitempty"`
}

// NewGovernor returns a governor over read (the cgroup), busy (a send or an
// import runs) and restart (Chromium on the same profile).
func NewGovernor(cfg GovernorConfig, read func() (MemoryUsage, error), busy func() bool, restart func() error, log *slog.Logger) *Governor {
	return &Governor{g: governor{cfg: cfg.withDefaults()}, read: read, busy: busy, restart: restart, now: time.Now,
		log: log.With("component", "governor")}
}

// Events returns the restarts so far, oldest first.
func (v *Governor) Events() []GovernorEvent {
	v.mu.Lock()
	defer v.mu.Unlock()
	return append([]GovernorEvent(nil), v.events...)
}

// Run reads memory every cfg.Every until ctx ends.
func (v *Governor) Run(ctx context.Context) {
	t := time.NewTicker(v.g.cfg.Every)
	defer t.Stop()
	v.log.Info("memory governor on", "soft_bytes", v.g.cfg.Soft, "every", v.g.cfg.Every.String(), "min_interval", v.g.cfg.MinInterval.String())
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		v.Tick(ctx)
	}
}

// Tick reads memory once and acts; it returns the decision taken.
func (v *Governor) Tick(ctx context.Context) Decision {
	u, err := v.read()
	if err != nil {
		v.log.Warn("cannot read the slice's memory", "err", err)
		return DecideNothing
	}
	d := v.g.decide(v.now(), u.Used(), v.busy())
	if d == DecideBusy {
		// Wait a little for the quiet moment rather than a whole period
		// (real time: the wait is on the syncer, not on the clock).
		giveUp := time.NewTimer(v.g.cfg.QuietFor)
		poll := time.NewTicker(250 * time.Millisecond)
	wait:
		for d == DecideBusy {
			select {
			case <-ctx.Done():
				break wait
			case <-giveUp.C:
				break wait
			case <-poll.C:
				d = v.g.decide(v.now(), u.Used(), v.busy())
			}
		}
		giveUp.Stop()
		poll.Stop()
	}
	switch d {
	case DecideNothing:
		return d
	case DecideBusy:
		governorRestarts.WithLabelValues(string(d)).Inc()
		v.log.Info("over the soft memory threshold, but the slice is busy; restart deferred", "used_bytes", u.Used(), "soft_bytes", v.g.cfg.Soft)
		return d
	case DecideLoopHold:
		if v.g.held {
			return d // said once per restart; the metric counts restarts, not readings
		}
		v.g.held = true
		governorRestarts.WithLabelValues(string(d)).Inc()
		v.log.Error("over the soft memory threshold right after a governor restart: the budget is too small for this account",
			"alert", "slice_memory_governor_loop", "used_bytes", u.Used(), "soft_bytes", v.g.cfg.Soft)
		return d
	}
	now := v.now()
	rerr := v.restart()
	recent, alert := v.g.restarted(now)
	ev := GovernorEvent{At: now, Usage: u, Soft: v.g.cfg.Soft, Recent: recent, Alert: alert}
	if rerr != nil {
		ev.Error = rerr.Error()
	}
	v.mu.Lock()
	v.events = append(v.events, ev)
	v.mu.Unlock()
	governorRestarts.WithLabelValues(string(d)).Inc()
	v.log.Info("memory governor restarted Chromium on the same profile", "event", "governor_restart",
		"anon_bytes", u.Anon, "shmem_bytes", u.Shmem, "file_bytes", u.File, "soft_bytes", v.g.cfg.Soft, "recent", recent, "err", rerr)
	if alert {
		v.log.Error("the memory governor restarts Chromium too often", "alert", "slice_memory_governor",
			"restarts", recent, "window", v.g.cfg.AlertWindow.String())
	}
	return d
}

// MemoryUsage is the slice cgroup's memory, in bytes.
type MemoryUsage struct {
	Anon  uint64 `json:"anon"`
	Shmem uint64 `json:"shmem"`
	File  uint64 `json:"file"` // page cache: reclaimable, not governed
}

// Used is what the governor weighs: anonymous memory and shmem (Chromium's
// shared memory), not page cache, which the kernel reclaims by itself.
func (u MemoryUsage) Used() uint64 { return u.Anon + u.Shmem }

// CgroupMemory reads the slice's own cgroup: on cgroup v2 memory.stat's
// anon, shmem and file; on cgroup v1 (where usage_in_bytes includes page
// cache) memory.stat's rss, shmem and cache, hierarchical totals when
// present.
func CgroupMemory() (MemoryUsage, error) {
	if st, err := readStat("/sys/fs/cgroup/memory.stat"); err == nil {
		return MemoryUsage{Anon: st["anon"], Shmem: st["shmem"], File: st["file"]}, nil
	}
	st, err := readStat("/sys/fs/cgroup/memory/memory.stat")
	if err != nil {
		return MemoryUsage{}, fmt.Errorf("slice.governor: no cgroup memory.stat: %w", err)
	}
	pick := func(k string) uint64 {
		if v, ok := st["total_"+k]; ok {
			return v
		}
		return st[k]
	}
	return MemoryUsage{Anon: pick("rss"), Shmem: pick("shmem"), File: pick("cache")}, nil
}

func readStat(path string) (map[string]uint64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st := map[string]uint64{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), " ")
		if n, err := strconv.ParseUint(v, 10, 64); ok && err == nil {
			st[k] = n
		}
	}
	if len(st) == 0 {
		return nil, errors.New(path + ": empty")
	}
	return st, sc.Err()
}

// Governor is the slice's memory governor, nil unless Config.Governor.Soft.
func (s *Slice) Governor() *Governor { return s.gov.Load() }

// startGovernor starts the memory governor over sup when configured; the
// returned func stops it.
func (s *Slice) startGovernor(sup *Supervisor, syncer *Syncer) (stop func()) {
	cfg := s.cfg.Governor
	if cfg.Soft == 0 {
		return func() {}
	}
	read := cfg.Read
	if read == nil {
		read = CgroupMemory
	}
	gov := NewGovernor(cfg, read, syncer.Busy, func() error {
		if !sup.Recycle() {
			return errors.New("no browser to restart")
		}
		return nil
	}, s.log)
	s.gov.Store(gov)
	governorSoft.Set(float64(cfg.Soft))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); gov.Run(ctx) }()
	return func() { cancel(); <-done }
}
