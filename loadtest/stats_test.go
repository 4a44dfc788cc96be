package loadtest

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/slicehub/slicehub/gateway"
	"github.com/slicehub/slicehub/internal/report"
)

// sampler reads, every interval, the resident memory and CPU time of the
// processes that matter, and PostgreSQL's connection count.
type sampler struct {
	pids  map[string]int
	pgURL string
	pgPID int // the postmaster: PostgreSQL's CPU is its whole process tree's

	mu      sync.Mutex
	start   time.Time
	points  map[string][]procPoint
	pg      []pgPoint
	pgErr   error
	marks   map[string]time.Time // phase name -> start
	pgMax   int
	pgSlice int
}

type procPoint struct {
	at  time.Time
	rss int64
	cpu time.Duration
}

type pgPoint struct {
	at          time.Time
	all, slices int
}

func newSampler(pids map[string]int, pgURL string) *sampler {
	s := &sampler{pids: map[string]int{}, pgURL: pgURL, points: map[string][]procPoint{}, marks: map[string]time.Time{}}
	for name, pid := range pids {
		if pid > 0 {
			s.pids[name] = pid
		}
	}
	return s
}

func (s *sampler) mark(phase string) {
	s.mu.Lock()
	s.marks[phase] = time.Now()
	s.mu.Unlock()
}

func (s *sampler) run(ctx context.Context, every time.Duration) {
	s.mu.Lock()
	s.start = time.Now()
	s.mu.Unlock()
	conn, err := pgx.Connect(ctx, s.pgURL)
	if err != nil {
		s.mu.Lock()
		s.pgErr = err
		s.mu.Unlock()
	} else {
		defer conn.Close(context.Background())
	}
	tk := time.NewTicker(every)
	defer tk.Stop()
	for {
		now := time.Now()
		for name, pid := range s.pids {
			rss, cpu, err := readProc(pid)
			if err != nil {
				continue
			}
			s.mu.Lock()
			s.points[name] = append(s.points[name], procPoint{at: now, rss: rss, cpu: cpu})
			s.mu.Unlock()
		}
		if s.pgPID > 0 {
			if cpu, err := treeCPU(s.pgPID); err == nil {
				s.mu.Lock()
				// RSS is left at 0: summing backends' RSS counts shared
				// buffers once per backend.
				s.points["postgresql (all processes)"] = append(s.points["postgresql (all processes)"], procPoint{at: now, cpu: cpu})
				s.mu.Unlock()
			}
		}
		if conn != nil {
			qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			all, slices, err := pgConnections(qctx, conn)
			cancel()
			s.mu.Lock()
			if err == nil {
				s.pg = append(s.pg, pgPoint{at: now, all: all, slices: slices})
				s.pgMax = max(s.pgMax, all)
				s.pgSlice = max(s.pgSlice, slices)
			} else if ctx.Err() == nil {
				s.pgErr = err
			}
			s.mu.Unlock()
		}
		select {
		case <-ctx.Done():
			return
		case <-tk.C:
		}
	}
}

// procStats is one process over the measured phase: peak and last RSS, and
// its average CPU use (1.0 = one core).
type procStats struct {
	name            string
	peakRSS, endRSS int64
	cpu             float64
}

func (s *sampler) procStats(from time.Time) []procStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []procStats
	for name, pts := range s.points {
		var st procStats
		st.name = name
		var first, last *procPoint
		for i := range pts {
			p := &pts[i]
			st.peakRSS = max(st.peakRSS, p.rss)
			if p.at.Before(from) {
				continue
			}
			if first == nil {
				first = p
			}
			last = p
		}
		if first != nil && last != nil && last.at.After(first.at) {
			st.endRSS = last.rss
			st.cpu = float64(last.cpu-first.cpu) / float64(last.at.Sub(first.at))
		}
		out = append(out, st)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}

// classStats is one request class over the measured phase.
type classStats struct {
	class          string
	n, failed      int
	p50, p99, p999 time.Duration
	max            time.Duration
}

type result struct {
	cfg                 loadConfig
	machine             report.Machine
	pg                  map[string]string // PostgreSQL's durability settings, read with SHOW
	pgErr               error
	users               int
	notServed           int // users who could not sign up or were not served within the limit
	poolFill, allServed time.Duration
	measured            time.Duration
	classes             []classStats
	signup              classStats
	served              []time.Duration // signup to first answer of the own slice, per user
	total, failed       int
	wrong               int
	statuses            map[int]int // failed requests by status (0: transport)
	wsMsgs, wsDials     int64
	writes, pushes      int64
	closes              map[string]int
	redispatched        int // slices the scheduler replaced after the provision timeout
	bootstrapRetries    int // bootstrap answers that said "later" (mostly 429, the per-address throttle)
	wsWrong             int64
	watch               *sampler
}

func (r *result) errorRate() float64 {
	if r.total == 0 {
		return 1
	}
	return float64(r.failed) / float64(r.total)
}

func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	i := int(p*float64(len(ds)) + 0.5)
	if i >= len(ds) {
		i = len(ds) - 1
	}
	if i < 0 {
		i = 0
	}
	return ds[i]
}

func statsOf(class string, ss []sample) classStats {
	c := classStats{class: class, n: len(ss)}
	var ds []time.Duration
	for _, s := range ss {
		if !s.ok {
			c.failed++
		}
		ds = append(ds, s.dur)
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	c.p50, c.p99, c.p999 = percentile(ds, 0.50), percentile(ds, 0.99), percentile(ds, 0.999)
	if len(ds) > 0 {
		c.max = ds[len(ds)-1]
	}
	return c
}

func summarize(all []sample, users []*user, from time.Time, measured time.Duration) *result {
	r := &result{measured: measured, statuses: map[int]int{}, closes: map[string]int{}}
	by := map[string][]sample{}
	var signups []sample
	for _, s := range all {
		if s.class == classSignup {
			signups = append(signups, s)
			continue
		}
		if s.at.Before(from) {
			continue
		}
		by[s.class] = append(by[s.class], s)
		r.total++
		if !s.ok {
			r.failed++
			if s.wrong {
				r.wrong++
			} else {
				r.statuses[s.status]++
			}
		}
	}
	r.signup = statsOf(classSignup, signups)
	for _, c := range classes {
		if c == classSignup || len(by[c]) == 0 {
			continue
		}
		r.classes = append(r.classes, statsOf(c, by[c]))
	}
	for _, u := range users {
		if !u.served.IsZero() {
			r.served = append(r.served, u.served.Sub(u.signedUp))
		}
		r.wsMsgs += u.wsMsgs.Load()
		r.writes += u.writes.Load()
		u.closeMu.Lock()
		for k, v := range u.closes {
			r.closes[k] += v
		}
		u.closeMu.Unlock()
		r.pushes += u.pushes.Load()
		r.wsDials += u.wsDials.Load()
		r.wsWrong += u.wsWrong.Load()
	}
	sort.Slice(r.served, func(i, j int) bool { return r.served[i] < r.served[j] })
	r.wrong += int(r.wsWrong)
	return r
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond)) }

func mib(b int64) string { return fmt.Sprintf("%.0f MiB", float64(b)/(1<<20)) }

// text is the summary printed by the test and used in the report.
func (r *result) text() string {
	var b strings.Builder
	fmt.Fprintf(&b, "users: %d; warm pool of %d filled in %s; %d users signed up and were served by their own slice within %s, in %s\n",
		r.users, r.cfg.warm, r.poolFill.Round(100*time.Millisecond), r.users-r.notServed, r.cfg.serveLimit, r.allServed.Round(100*time.Millisecond))
	fmt.Fprintf(&b, "signup request: p50 %s, p99 %s, max %s (%d requests, %d failed)\n", ms(r.signup.p50), ms(r.signup.p99), ms(r.signup.max), r.signup.n, r.signup.failed)
	fmt.Fprintf(&b, "signup to own slice serving: p50 %s, p99 %s, max %s\n",
		percentile(r.served, 0.5).Round(time.Millisecond), percentile(r.served, 0.99).Round(time.Millisecond), percentile(r.served, 1).Round(time.Millisecond))
	fmt.Fprintf(&b, "measured phase: %s, %d requests (%.0f/s), %d failed (%.3f%%), %d from a wrong tenant; failed by status: %v\n",
		r.measured.Round(time.Second), r.total, float64(r.total)/r.measured.Seconds(), r.failed, 100*r.errorRate(), r.wrong, r.statuses)
	fmt.Fprintf(&b, "%-32s %8s %7s %10s %10s %10s %10s\n", "class", "requests", "failed", "p50", "p99", "p99.9", "max")
	for _, c := range r.classes {
		fmt.Fprintf(&b, "%-32s %8d %7d %10s %10s %10s %10s\n", c.class, c.n, c.failed, ms(c.p50), ms(c.p99), ms(c.p999), ms(c.max))
	}
	fmt.Fprintf(&b, "WebSocket: %d messages received, %d dials for %d users (%d reconnects; sockets ended by: %v); CRM pushes: %d contact/note events received for %d writes\n",
		r.wsMsgs, r.wsDials, r.users, r.wsDials-int64(r.users), r.closes, r.pushes, r.writes)
	fmt.Fprintf(&b, "scheduler: %d slices replaced after the 3-minute provision timeout; slices: %d bootstrap attempts told to come back later (429/409/425/503)\n", r.redispatched, r.bootstrapRetries)
	from := r.watch.marks["load"]
	for _, p := range r.watch.procStats(from) {
		if p.peakRSS == 0 {
			fmt.Fprintf(&b, "%-26s CPU %.0f%% of a core during the measured phase\n", p.name, 100*p.cpu)
			continue
		}
		fmt.Fprintf(&b, "%-26s RSS peak %s, at the end %s; CPU %.0f%% of a core during the measured phase\n", p.name, mib(p.peakRSS), mib(p.endRSS), 100*p.cpu)
	}
	r.watch.mu.Lock()
	pgMax, pgSlices, pgErr := r.watch.pgMax, r.watch.pgSlice, r.watch.pgErr
	r.watch.mu.Unlock()
	fmt.Fprintf(&b, "PostgreSQL client connections (pg_stat_activity): max %d, of which slices' %d", pgMax, pgSlices)
	if pgErr != nil {
		fmt.Fprintf(&b, " (sampling error: %v)", pgErr)
	}
	b.WriteString("\n")
	return b.String()
}

// writeReport writes dir/load-YYYY-MM-DD.md with its charts.
func (r *result) writeReport(dir string, now time.Time) (string, error) {
	rep := report.New("load", now)
	host, _ := os.Hostname()
	cpus := r.machine.CPUs
	rep.Printf("# Load: %d users, each with their own slice, for %s\n\n", r.users, r.cfg.duration)
	by := "`make load` (`SLICEHUB_LOAD=1 go test -count=1 -run TestLoad -v ./loadtest/`)"
	if !r.cfg.full {
		by = "the short version that `make test` runs (SLICEHUB_LOAD unset; SLICEHUB_LOAD_* knobs as set)"
	}
	rep.Printf("Run on %s (%s UTC) by %s: "+
		"the real gateway (`slicehub serve`, with its scheduler), Nomad, Consul and PostgreSQL on one machine of %d CPUs, all on loopback. "+
		"Every user signs up through the gateway and gets a slice of their own, dispatched by the scheduler as a Nomad child job. "+
		"The slices are Nomad mock_driver allocations (`jobs/slice-farm.nomad.hcl`) served by one `slice farm` process: "+
		"the real slice runtime (handlers, gateway-token check, socket.io, CRM in the slice's own database, credentials bootstrapped from the gateway), "+
		"without Chromium (about 400 MB and a third of a core each, docs/architecture.md).\n\n", host, now.UTC().Format("2006-01-02 15:04"), by, cpus)
	rep.Environment(r.machine, r.pg, r.pgErr)
	rep.Printf("Each user, once their slice answers, holds a socket.io WebSocket through the gateway (asking `whoami` over it every %s, and receiving a `contact` or `note` push for each CRM write) and "+
		"sends an API request every %s on average (jittered): 35%% whoami, 25%% list contacts, 20%% create a contact, 15%% add a note, 5%% WhatsApp state. "+
		"Users sign up %d at a time, each waiting until their own slice answers; the warm pool holds %d.\n\n",
		r.cfg.ackEvery, r.cfg.think, r.cfg.inflight, r.cfg.warm)
	rep.Printf("## Figures\n\n```\n%s```\n\n", r.text())
	rep.Printf("## Latency per request class (measured phase)\n\n| class | requests | failed | p50 | p99 | p99.9 | max |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	var bars []report.Bar
	for _, c := range r.classes {
		rep.Printf("| %s | %d | %d | %s | %s | %s | %s |\n", c.class, c.n, c.failed, ms(c.p50), ms(c.p99), ms(c.p999), ms(c.max))
		bars = append(bars,
			report.Bar{Label: c.class + " p50", Value: float64(c.p50) / 1e6},
			report.Bar{Label: c.class + " p99", Value: float64(c.p99) / 1e6},
			report.Bar{Label: c.class + " p99.9", Value: float64(c.p999) / 1e6})
	}
	rep.Printf("\n")
	rep.Chart("latency", "Latency percentiles per request class", report.Bars("Latency per request class, measured phase", "ms", bars))

	r.watch.mu.Lock()
	start := r.watch.start
	var series []report.Series
	names := make([]string, 0, len(r.watch.points))
	for n := range r.watch.points {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		s := report.Series{Name: n}
		if len(r.watch.points[n]) > 0 && r.watch.points[n][0].rss == 0 {
			continue // CPU only (PostgreSQL)
		}
		for _, p := range r.watch.points[n] {
			s.Points = append(s.Points, report.Point{X: p.at.Sub(start).Seconds(), Y: float64(p.rss) / (1 << 20)})
		}
		series = append(series, s)
	}
	pg := report.Series{Name: "PostgreSQL connections"}
	for _, p := range r.watch.pg {
		pg.Points = append(pg.Points, report.Point{X: p.at.Sub(start).Seconds(), Y: float64(p.all)})
	}
	loadAt := r.watch.marks["load"].Sub(start).Seconds()
	r.watch.mu.Unlock()
	rep.Printf("## Memory and connections over the run\n\nFrom the end of the warm-pool fill; the measured phase starts at %.0f s (before it, users sign up and wait for their slices).\n\n", loadAt)
	rep.Chart("rss", "Resident memory of each process over the run", report.Lines("Resident memory (RSS)", "s", "MiB", series))
	rep.Chart("pg-connections", "PostgreSQL client connections over the run", report.Lines("PostgreSQL client connections", "s", "connections", []report.Series{pg}))
	var cpuBars []report.Bar
	for _, p := range r.watch.procStats(r.watch.marks["load"]) {
		cpuBars = append(cpuBars, report.Bar{Label: p.name, Value: 100 * p.cpu})
	}
	rep.Chart("cpu", "CPU use of each process during the measured phase", report.Bars(fmt.Sprintf("CPU during the measured phase (the machine has %d CPUs = %d%%)", cpus, 100*cpus), "% of a core", cpuBars))
	rep.Printf("%s", r.findings())
	rep.Printf("%s", reportNotes)
	r.watch.mu.Lock()
	pgMax, pgSlices := r.watch.pgMax, r.watch.pgSlice
	r.watch.mu.Unlock()
	rep.Printf("- PostgreSQL connections: at most %d during the run, of which %d were the slices' own, for %d users' slices. A slice's health check pings its own database, which keeps its pool's connection open; past a few hundred slices per server, PgBouncer in front (transaction pooling) is the remedy the architecture notes name.\n", pgMax, pgSlices, r.users)
	rep.Printf("- Latencies are measured by the load generator, which runs on the same %d CPUs as everything else; they include its own scheduling delays.\n", cpus)
	return rep.Write(dir)
}

// reportNotes says what the figures mean; the findings of the run are
// added by hand under it when they change.
const reportNotes = `## Reading the figures

- The gateway and the scheduler are one process (` + "`slicehub serve`" + `; the scheduler acts in whichever replica holds the Consul lock), so their memory and CPU are reported together.
- The slice farm's memory is that of every slice's Go runtime side: HTTP server, socket.io server, pgx pool of 1 connection. A real slice adds Chromium (about 400 MB) on top.
`

// findings states what the run's figures say about the platform's limits.
func (r *result) findings() string {
	var b strings.Builder
	b.WriteString("## Findings\n\n")
	served := r.users - r.notServed
	perSec := float64(served) / r.allServed.Seconds()
	if r.notServed > 0 {
		fmt.Fprintf(&b, "- **%d users were not served by their slice within %s** and took no part in the measured phase.\n", r.notServed, r.cfg.serveLimit)
	}
	// A few come-back answers are slices asking before their allocation
	// is visible to the gateway; many mean the throttle held them back.
	// The threshold is printed with the sentence it chooses.
	if r.bootstrapRetries > r.users/10 {
		fmt.Fprintf(&b, "- **What limits signups first: the bootstrap throttle** (its \"come back later\" answers, %d, are more than one per ten users, %d). %d users were served by their own slice after %s, about %.1f new slices a second, "+
			"and the slices were told %d times to come back later for their credentials. The gateway's internal endpoint throttles bootstrap per client address "+
			"(`DefaultThrottles.BootstrapPerIP`: a burst of %d, then one every %s), and every slice on a host comes from the host's address, so a host refills its "+
			"pool no faster than that whatever the scheduler dispatches. Signup itself (argon2id, the claim, the session) took p50 %s, p99 %s.\n",
			r.bootstrapRetries, r.users/10, served, r.allServed.Round(100*time.Millisecond), perSec, r.bootstrapRetries, gateway.DefaultThrottles.BootstrapPerIP.Burst,
			gateway.DefaultThrottles.BootstrapPerIP.Every, ms(r.signup.p50), ms(r.signup.p99))
	} else {
		fmt.Fprintf(&b, "- **Signups:** %d users were served by their own slice after %s, about %.1f new slices a second; slices were told %d times "+
			"to come back later for their credentials, no more than one per ten users (%d), the threshold above which this report names the bootstrap throttle as the limit (bootstrap budget per host address: a burst of %d, then one "+
			"every %s). Signup itself (argon2id, the claim, the session) took p50 %s, p99 %s.\n",
			served, r.allServed.Round(100*time.Millisecond), perSec, r.bootstrapRetries, r.users/10, gateway.DefaultThrottles.BootstrapPerIP.Burst,
			gateway.DefaultThrottles.BootstrapPerIP.Every, ms(r.signup.p50), ms(r.signup.p99))
	}
	if r.redispatched > 0 {
		fmt.Fprintf(&b, "- **Starved slices were replaced.** %d slices waited longer than the scheduler's 3-minute provision timeout for their credentials "+
			"(a slice's retries back off exponentially to 15 s, so the slices that have waited longest ask least often and newcomers, retrying within a second, "+
			"win most tokens) and were re-dispatched, some more than once; their users waited longest "+
			"(signup to own slice serving: p99 %s, max %s). Fix, in the gateway (not changed here): key the bootstrap throttle by slice rather than by address, "+
			"or give it a burst the size of a host's pool and several a second; the claim is already single-use per allocation. A shorter backoff in the "+
			"slice would only trade the newcomers' advantage for a lottery among all waiting slices.\n",
			r.redispatched, percentile(r.served, 0.99).Round(time.Second), percentile(r.served, 1).Round(time.Second))
	}
	fmt.Fprintf(&b, "- **Once everyone is in:** %d requests in %s (%.0f/s), %d failed, %d answered by another tenant's slice. "+
		"%d CRM pushes arrived over socket.io for %d writes.\n",
		r.total, r.measured.Round(time.Second), float64(r.total)/r.measured.Seconds(), r.failed, r.wrong, r.pushes, r.writes)
	if n := r.wsDials - int64(r.users); n > 0 {
		fmt.Fprintf(&b, "- **%d WebSocket reconnects** (sockets ended by: %v).", n, r.closes)
		if r.closes["close 1012"] > 0 {
			b.WriteString(" Close 1012 is the gateway's \"slice changed\": it re-checks a user's WebSockets whenever their slice's row changes, " +
				"and ends them unless the slice is then assigned to that user; a user who reaches a slice that is still being handed over " +
				"(claimed while starting) can see it once. The client reconnects at once, to the same slice.")
		}
		b.WriteString("\n")
	}
	b.WriteString("\n")
	return b.String()
}
