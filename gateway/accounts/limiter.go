package accounts

import (
	"context"
	"log/slog"
	"net/netip"
	"sync"
	"time"
)

// Rate is a token bucket: Burst attempts at once, one more every Every.
type Rate struct {
	Burst int
	Every time.Duration
}

// Limiter is an in-memory token bucket per key (an IP prefix or an email),
// and, once shared, the same budget in a store all replicas use: a request
// must pass both. The local one answers floods without a round trip; the
// shared one keeps N replicas from granting N times the budget.
type Limiter struct {
	rate Rate
	now  func() time.Time
	max  int // bound on keys, so a flood of distinct keys cannot grow memory

	mu      sync.Mutex
	buckets map[string]*bucket

	name    string // the shared bucket's budget name
	shared  Throttle
	timeout time.Duration
	log     *slog.Logger
}

// Share makes the limiter also consult the replicas' shared store.
func (l *Limiter) Share(name string, t Throttle, timeout time.Duration, log *slog.Logger) {
	l.name, l.shared, l.timeout, l.log = name, t, timeout, log
}

// sharedWait asks the shared store. An unreachable store lets the request
// through on the local budget alone: throttling must not turn a database
// blip into a login outage, and the local bucket still bounds guessing.
func (l *Limiter) sharedWait(key string, take bool) time.Duration {
	if l.shared == nil {
		return 0
	}
	ctx, cancel := context.WithTimeout(context.Background(), l.timeout)
	defer cancel()
	var d time.Duration
	var err error
	if take {
		d, err = l.shared.TakeToken(ctx, l.name, key, l.rate.Burst, l.rate.Every)
	} else {
		d, err = l.shared.TokenWait(ctx, l.name, key, l.rate.Burst, l.rate.Every)
	}
	if err != nil {
		l.log.Warn("shared throttle unreachable; using this replica's budget alone", "budget", l.name, "err", err)
		return 0
	}
	return d
}

type bucket struct {
	tokens float64
	last   time.Time
}

const maxLimiterKeys = 100_000

func NewLimiter(r Rate, now func() time.Time) *Limiter {
	return &Limiter{rate: r, now: now, max: maxLimiterKeys, buckets: make(map[string]*bucket)}
}

// refill brings b up to date and returns it; the caller holds l.mu.
func (l *Limiter) refill(key string, now time.Time) *bucket {
	b := l.buckets[key]
	if b == nil {
		if len(l.buckets) >= l.max {
			l.sweepLocked(now)
			for k := range l.buckets { // still full: forget an arbitrary key
				if len(l.buckets) < l.max {
					break
				}
				delete(l.buckets, k)
			}
		}
		b = &bucket{tokens: float64(l.rate.Burst), last: now}
		l.buckets[key] = b
		return b
	}
	if l.rate.Every > 0 {
		b.tokens += float64(now.Sub(b.last)) / float64(l.rate.Every)
		if b.tokens > float64(l.rate.Burst) {
			b.tokens = float64(l.rate.Burst)
		}
	}
	b.last = now
	return b
}

// wait is how long until key has a whole token; 0 means it has one now.
func (l *Limiter) waitLocked(b *bucket) time.Duration {
	if b.tokens >= 1 {
		return 0
	}
	if l.rate.Every <= 0 {
		return time.Hour
	}
	return time.Duration((1 - b.tokens) * float64(l.rate.Every))
}

// Take spends a token of key. It returns 0 when allowed, or how long to wait.
func (l *Limiter) Take(key string) time.Duration {
	if l.rate.Burst <= 0 {
		return 0 // disabled
	}
	l.mu.Lock()
	b := l.refill(key, l.now())
	if d := l.waitLocked(b); d > 0 {
		l.mu.Unlock()
		return d
	}
	b.tokens--
	l.mu.Unlock()
	return l.sharedWait(key, true)
}

// Wait reports how long until key has a token, without spending one. Login
// uses it with Take on failures only, so a correct password is never throttled
// by the per-account budget that failures use up.
func (l *Limiter) Wait(key string) time.Duration {
	if l.rate.Burst <= 0 {
		return 0
	}
	l.mu.Lock()
	d := l.waitLocked(l.refill(key, l.now()))
	l.mu.Unlock()
	if d > 0 {
		return d
	}
	return l.sharedWait(key, false)
}

// Sweep forgets buckets that are full again: they hold no information.
func (l *Limiter) Sweep() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sweepLocked(l.now())
}

func (l *Limiter) sweepLocked(now time.Time) {
	full := time.Duration(l.rate.Burst) * l.rate.Every
	for k, b := range l.buckets {
		if now.Sub(b.last) >= full {
			delete(l.buckets, k)
		}
	}
}

// IPKey is the throttling key of a client address. An IPv6 client usually
// holds a whole /64, so it is throttled as one.
func IPKey(a netip.Addr) string {
	if a.Is6() && !a.Is4In6() {
		p, err := a.Prefix(64)
		if err == nil {
			return p.String()
		}
	}
	return a.Unmap().String()
}
