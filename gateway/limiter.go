package gateway

import (
	"net/netip"
	"sync"
	"time"
)

// Rate is a token bucket: Burst attempts at once, one more every Every.
type Rate struct {
	Burst int
	Every time.Duration
}

// limiter is an in-memory token bucket per key (an IP prefix or an email).
// It is per replica: with N gateways an attacker gets N times the budget,
// which is acceptable for throttling guesses; a shared store can replace it
// behind the same three methods.
type limiter struct {
	rate Rate
	now  func() time.Time
	max  int // bound on keys, so a flood of distinct keys cannot grow memory

	mu      sync.Mutex
	buckets map[string]*bucket
}

type bucket struct {
	tokens float64
	last   time.Time
}

const maxLimiterKeys = 100_000

func newLimiter(r Rate, now func() time.Time) *limiter {
	return &limiter{rate: r, now: now, max: maxLimiterKeys, buckets: make(map[string]*bucket)}
}

// refill brings b up to date and returns it; the caller holds l.mu.
func (l *limiter) refill(key string, now time.Time) *bucket {
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
func (l *limiter) waitLocked(b *bucket) time.Duration {
	if b.tokens >= 1 {
		return 0
	}
	if l.rate.Every <= 0 {
		return time.Hour
	}
	return time.Duration((1 - b.tokens) * float64(l.rate.Every))
}

// Take spends a token of key. It returns 0 when allowed, or how long to wait.
func (l *limiter) Take(key string) time.Duration {
	if l.rate.Burst <= 0 {
		return 0 // disabled
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.refill(key, l.now())
	if d := l.waitLocked(b); d > 0 {
		return d
	}
	b.tokens--
	return 0
}

// Wait reports how long until key has a token, without spending one. Login
// uses it with Take on failures only, so a correct password is never throttled
// by the per-account budget that failures use up.
func (l *limiter) Wait(key string) time.Duration {
	if l.rate.Burst <= 0 {
		return 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.waitLocked(l.refill(key, l.now()))
}

// Sweep forgets buckets that are full again: they hold no information.
func (l *limiter) Sweep() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sweepLocked(l.now())
}

func (l *limiter) sweepLocked(now time.Time) {
	full := time.Duration(l.rate.Burst) * l.rate.Every
	for k, b := range l.buckets {
		if now.Sub(b.last) >= full {
			delete(l.buckets, k)
		}
	}
}

// ipKey is the throttling key of a client address. An IPv6 client usually
// holds a whole /64, so it is throttled as one.
func ipKey(a netip.Addr) string {
	if a.Is6() && !a.Is4In6() {
		p, err := a.Prefix(64)
		if err == nil {
			return p.String()
		}
	}
	return a.Unmap().String()
}
