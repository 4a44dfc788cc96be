package proxy

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
	"golang.org/x/sync/singleflight"
)

// Pool is the keep-alive pool to one slice address. Slices come and go,
// so pools are created on first use and dropped when idle (see sweep).
type Pool struct {
	HC       *fasthttp.HostClient
	lastUsed atomic.Int64 // unix nanoseconds
}

type Pools struct {
	cfg *PoolConfig
	mu  sync.RWMutex
	m   map[string]*Pool
}

// PoolConfig is what the pools take of gateway.Config; its meanings are
// gateway.Config's.
type PoolConfig struct {
	DialTimeout             time.Duration
	ProxyTimeout            time.Duration
	UpstreamMaxConns        int
	UpstreamIdleConnTimeout time.Duration
	MaxHeaderBytes          int
	UpstreamMaxBufferedBody int
}

// NewPools makes the pools to slices, each created on first use.
func NewPools(cfg *PoolConfig) *Pools {
	return &Pools{cfg: cfg, m: make(map[string]*Pool)}
}

func (u *Pools) Get(addr string, now time.Time) *Pool {
	u.mu.RLock()
	up := u.m[addr]
	u.mu.RUnlock()
	if up == nil {
		u.mu.Lock()
		if up = u.m[addr]; up == nil {
			up = &Pool{HC: u.newHostClient(addr)}
			u.m[addr] = up
		}
		u.mu.Unlock()
	}
	up.lastUsed.Store(now.UnixNano())
	return up
}

func (u *Pools) newHostClient(addr string) *fasthttp.HostClient {
	cfg := u.cfg
	dialer := &net.Dialer{Timeout: cfg.DialTimeout, KeepAlive: 30 * time.Second}
	idle := cfg.ProxyTimeout
	return &fasthttp.HostClient{
		Addr: addr,
		Dial: func(addr string) (net.Conn, error) {
			c, err := dialer.Dial("tcp", addr)
			if err != nil {
				return nil, err
			}
			return &idleDeadlineConn{Conn: c, idle: idle}, nil
		},
		// A proxy must be transparent: no User-Agent of its own, and the path
		// exactly as the browser sent it (routing is by session, not path,
		// and re-encoding a path can change what the slice's router sees).
		NoDefaultUserAgentHeader: true,
		DisablePathNormalizing:   true,
		// fasthttp's own error texts must never quote a request: it carries
		// the slice's gateway token.
		SecureErrorLogMessage: true,
		MaxConns:              cfg.UpstreamMaxConns,
		MaxConnWaitTimeout:    time.Second,
		// Shorter than Node's default keepAliveTimeout (5 s): reusing a
		// connection the slice is closing fails the request, and a
		// non-idempotent one cannot be retried.
		MaxIdleConnDuration: cfg.UpstreamIdleConnTimeout,
		ReadBufferSize:      cfg.MaxHeaderBytes,
		WriteBufferSize:     16 << 10,
		// Bodies up to this size are read whole (one write to the client);
		// larger or chunked ones stream, which is what SSE and downloads need.
		MaxResponseBodySize: cfg.UpstreamMaxBufferedBody,
		StreamResponseBody:  true,
		// Retry an idempotent request once when a pooled connection turns out
		// dead, but never after a timeout: a slow slice would get it twice.
		RetryIfErr: func(req *fasthttp.Request, attempts int, err error) (bool, bool) {
			if attempts >= 2 || IsTimeout(err) {
				return false, false
			}
			return false, req.Header.IsGet() || req.Header.IsHead() || req.Header.IsPut() ||
				req.Header.IsOptions() || req.Header.IsDelete()
		},
	}
}

// Sweep drops pools unused for maxIdle, so that addresses of retired or moved
// allocations do not accumulate.
func (u *Pools) Sweep(now time.Time, maxIdle time.Duration) {
	u.mu.Lock()
	defer u.mu.Unlock()
	for addr, up := range u.m {
		if now.Sub(time.Unix(0, up.lastUsed.Load())) > maxIdle && up.HC.PendingRequests() == 0 {
			up.HC.CloseIdleConnections()
			delete(u.m, addr)
		}
	}
}

func (u *Pools) CloseIdle() {
	u.mu.RLock()
	defer u.mu.RUnlock()
	for _, up := range u.m {
		up.HC.CloseIdleConnections()
	}
}

// idleDeadlineConn turns fasthttp's per-request read deadline into an idle
// deadline. fasthttp sets one absolute deadline for the whole response,
// streamed body included, which would cut an SSE stream or a long download
// at the proxy timeout. Here the deadline moves forward on every read, so
// the timeout means "the slice said nothing for this long": headers must
// start within it, and a stream must show life within it.
type idleDeadlineConn struct {
	net.Conn
	idle     time.Duration
	armed    bool      // a deadline is wanted; only the goroutine owning the conn touches it
	deadline time.Time // the read deadline set on Conn now
}

func (c *idleDeadlineConn) SetReadDeadline(t time.Time) error {
	c.armed, c.deadline = !t.IsZero(), t
	return c.Conn.SetReadDeadline(t)
}

// Read moves the deadline to idle from now, but only once an eighth of
// idle has passed since it was last set: each move is a timer update in
// the runtime, and a small response is read right after fasthttp set one.
// The timeout thus fires after between 7/8 and all of idle of silence.
func (c *idleDeadlineConn) Read(p []byte) (int, error) {
	if c.armed {
		now := time.Now()
		if c.deadline.Sub(now) < c.idle-c.idle/8 {
			c.deadline = now.Add(c.idle)
			if err := c.Conn.SetReadDeadline(c.deadline); err != nil {
				return 0, err
			}
		}
	}
	return c.Conn.Read(p)
}

func IsTimeout(err error) bool {
	if errors.Is(err, fasthttp.ErrTimeout) || errors.Is(err, fasthttp.ErrDialTimeout) ||
		errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// ClientError maps a failed round trip to the client-facing error.
func ClientError(err error) error {
	switch {
	case errors.Is(err, fasthttp.ErrNoFreeConns):
		return ErrSliceBusy
	case errors.Is(err, fasthttp.ErrDialTimeout):
		return ErrSliceFailed // unreachable, not slow
	case IsTimeout(err):
		return ErrSliceTimeout
	}
	return ErrSliceFailed // refused, reset, closed early, malformed answer
}

// TokenCache holds each slice's gateway token. The token only changes when
// a slice is re-provisioned, which InvalidateSlice announces; the TTL bounds
// the damage of a missed announcement.
type TokenCache struct {
	ttl   time.Duration
	mu    sync.RWMutex
	m     map[int64]tokenEntry
	group singleflight.Group
}

type tokenEntry struct {
	token   []byte
	expires time.Time
}

func NewTokenCache(ttl time.Duration) *TokenCache {
	return &TokenCache{ttl: ttl, m: make(map[int64]tokenEntry)}
}

func (t *TokenCache) Drop(sliceID int64) {
	t.mu.Lock()
	delete(t.m, sliceID)
	t.mu.Unlock()
}

func (t *TokenCache) DropAll() {
	t.mu.Lock()
	clear(t.m)
	t.mu.Unlock()
}

func (t *TokenCache) Sweep(now time.Time) {
	t.mu.Lock()
	for id, e := range t.m {
		if now.After(e.expires) {
			delete(t.m, id)
		}
	}
	t.mu.Unlock()
}

// Peek is the cached token for sliceID, without filling a miss.
func (t *TokenCache) Peek(sliceID int64, now time.Time) ([]byte, bool) {
	t.mu.RLock()
	e, ok := t.m[sliceID]
	t.mu.RUnlock()
	if !ok || !now.Before(e.expires) {
		return nil, false
	}
	return e.token, true
}

// Put caches sliceID's token until expires.
func (t *TokenCache) Put(sliceID int64, token []byte, expires time.Time) {
	t.mu.Lock()
	t.m[sliceID] = tokenEntry{token: token, expires: expires}
	t.mu.Unlock()
}

// TTL is how long a token is cached.
func (t *TokenCache) TTL() time.Duration { return t.ttl }

// Flight fetches each slice's token once for all who ask at a time.
func (t *TokenCache) Flight() *singleflight.Group { return &t.group }
