package gateway

import (
	"context"
	"errors"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
	"golang.org/x/sync/singleflight"

	"github.com/slicehub/slicehub"
)

// upstream is the keep-alive pool to one slice address. Slices come and go,
// so pools are created on first use and dropped when idle (see sweep).
type upstream struct {
	hc       *fasthttp.HostClient
	lastUsed atomic.Int64 // unix nanoseconds
}

type upstreams struct {
	cfg *Config
	mu  sync.RWMutex
	m   map[string]*upstream
}

func newUpstreams(cfg *Config) *upstreams {
	return &upstreams{cfg: cfg, m: make(map[string]*upstream)}
}

func (u *upstreams) get(addr string, now time.Time) *upstream {
	u.mu.RLock()
	up := u.m[addr]
	u.mu.RUnlock()
	if up == nil {
		u.mu.Lock()
		if up = u.m[addr]; up == nil {
			up = &upstream{hc: u.newHostClient(addr)}
			u.m[addr] = up
		}
		u.mu.Unlock()
	}
	up.lastUsed.Store(now.UnixNano())
	return up
}

func (u *upstreams) newHostClient(addr string) *fasthttp.HostClient {
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
			if attempts >= 2 || isTimeout(err) {
				return false, false
			}
			return false, req.Header.IsGet() || req.Header.IsHead() || req.Header.IsPut() ||
				req.Header.IsOptions() || req.Header.IsDelete()
		},
	}
}

// sweep drops pools unused for maxIdle, so that addresses of retired or moved
// allocations do not accumulate.
func (u *upstreams) sweep(now time.Time, maxIdle time.Duration) {
	u.mu.Lock()
	defer u.mu.Unlock()
	for addr, up := range u.m {
		if now.Sub(time.Unix(0, up.lastUsed.Load())) > maxIdle && up.hc.PendingRequests() == 0 {
			up.hc.CloseIdleConnections()
			delete(u.m, addr)
		}
	}
}

func (u *upstreams) closeIdle() {
	u.mu.RLock()
	defer u.mu.RUnlock()
	for _, up := range u.m {
		up.hc.CloseIdleConnections()
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

func isTimeout(err error) bool {
	if errors.Is(err, fasthttp.ErrTimeout) || errors.Is(err, fasthttp.ErrDialTimeout) ||
		errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// upstreamError maps a failed round trip to the client-facing error.
func upstreamError(err error) error {
	switch {
	case errors.Is(err, fasthttp.ErrNoFreeConns):
		return errSliceBusy
	case errors.Is(err, fasthttp.ErrDialTimeout):
		return errSliceFailed // unreachable, not slow
	case isTimeout(err):
		return errSliceTimeout
	}
	return errSliceFailed // refused, reset, closed early, malformed answer
}

// tokenCache holds each slice's gateway token. The token only changes when
// a slice is re-provisioned, which InvalidateSlice announces; the TTL bounds
// the damage of a missed announcement.
type tokenCache struct {
	ttl   time.Duration
	mu    sync.RWMutex
	m     map[int64]tokenEntry
	group singleflight.Group
}

type tokenEntry struct {
	token   []byte
	expires time.Time
}

func newTokenCache(ttl time.Duration) *tokenCache {
	return &tokenCache{ttl: ttl, m: make(map[int64]tokenEntry)}
}

func (t *tokenCache) drop(sliceID int64) {
	t.mu.Lock()
	delete(t.m, sliceID)
	t.mu.Unlock()
}

func (t *tokenCache) dropAll() {
	t.mu.Lock()
	clear(t.m)
	t.mu.Unlock()
}

func (t *tokenCache) sweep(now time.Time) {
	t.mu.Lock()
	for id, e := range t.m {
		if now.After(e.expires) {
			delete(t.m, id)
		}
	}
	t.mu.Unlock()
}

// gatewayToken returns the token to present to sliceID.
func (s *Server) gatewayToken(sliceID int64) ([]byte, error) {
	const op = "gateway.gateway_token"
	t := s.tokens
	if tok, ok := t.peek(sliceID, s.now()); ok {
		return tok, nil
	}
	v, err, _ := t.group.Do(strconv.FormatInt(sliceID, 10), func() (any, error) {
		started, seq := s.now(), s.acc.Sessions.Snapshot()
		ctx, cancel := context.WithTimeout(context.Background(), s.cfg.BackendTimeout)
		defer cancel()
		tok, err := s.deps.Slices.GatewayToken(ctx, sliceID)
		if err != nil {
			return nil, slicehub.Wrap(op, slicehub.KindInternal, err)
		}
		if tok == "" {
			return nil, slicehub.Errorf(op, slicehub.KindInternal, "", "slice %d has no gateway token", sliceID)
		}
		b := []byte(tok)
		if !s.acc.Sessions.StaleSince(seq, 0, sliceID) {
			t.mu.Lock()
			t.m[sliceID] = tokenEntry{token: b, expires: started.Add(t.ttl)}
			t.mu.Unlock()
		}
		return b, nil
	})
	if err != nil {
		return nil, err
	}
	return v.([]byte), nil
}
