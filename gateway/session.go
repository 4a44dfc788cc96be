package gateway

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"strconv"
	"sync"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/gofiber/fiber/v2/utils"
	"github.com/valyala/fasthttp"
	"golang.org/x/sync/singleflight"

	"github.com/slicehub/slicehub"
	"github.com/slicehub/slicehub/gateway/wire"
)

// A session token is 32 random bytes, base64url without padding in the
// cookie. The database keeps only SHA-256 of the raw bytes, so a leaked
// sessions table opens no session.
const tokenLen = 43 // base64.RawURLEncoding.EncodedLen(32)

// tokenEncoding refuses non-canonical spellings, so one token has one cookie value.
var tokenEncoding = base64.RawURLEncoding.Strict()

type tokenHash [sha256.Size]byte

func newToken() (cookie string, hash tokenHash) {
	var raw [32]byte
	if _, err := rand.Read(raw[:]); err != nil {
		panic(err) // crypto/rand does not fail on supported platforms
	}
	return tokenEncoding.EncodeToString(raw[:]), sha256.Sum256(raw[:])
}

// parseToken validates the cookie's shape before anything touches the
// database: a wrong length or alphabet is refused for free.
func parseToken(cookie string) (tokenHash, bool) {
	var raw [32]byte
	if len(cookie) != tokenLen {
		return tokenHash{}, false
	}
	n, err := tokenEncoding.Decode(raw[:], []byte(cookie))
	if err != nil || n != len(raw) {
		return tokenHash{}, false
	}
	return sha256.Sum256(raw[:]), true
}

// session is what the gateway needs to route a request, cached by token
// hash. An entry is immutable once published; a refresh replaces it.
type session struct {
	hash    tokenHash
	user    slicehub.User
	sliceID int64 // 0: no slice bound yet
	state   slicehub.SliceState
	expires time.Time // end of this cache entry, not of the session
	// userIDHeader is the decimal user id, formatted once for the proxy.
	userIDHeader []byte
}

// sessionCache maps token hash -> session for a short TTL. Sharding keeps
// the read lock of the hot path from being one contended cache line.
type sessionCache struct {
	ttl    time.Duration
	shards [64]sessionShard
	group  singleflight.Group

	// Invalidations are numbered. A database read notes the number before it
	// starts and publishes nothing if its user or slice was invalidated
	// since: the read may have seen the state from before the change.
	// Numbers, not times: two events within one clock tick must still order.
	invMu       sync.Mutex
	invSeq      uint64
	invalidUser map[int64]invMark
	invalidSl   map[int64]invMark
	// invalidAllSeq is the number of the last InvalidateAll.
	invalidAllSeq uint64
}

type invMark struct {
	seq uint64
	at  time.Time // for sweeping only
}

type sessionShard struct {
	mu sync.RWMutex
	m  map[tokenHash]*session
}

func newSessionCache(ttl time.Duration) *sessionCache {
	c := &sessionCache{ttl: ttl, invalidUser: map[int64]invMark{}, invalidSl: map[int64]invMark{}}
	for i := range c.shards {
		c.shards[i].m = make(map[tokenHash]*session)
	}
	return c
}

func (c *sessionCache) shard(h tokenHash) *sessionShard { return &c.shards[h[0]&63] }

func (c *sessionCache) get(h tokenHash, now time.Time) *session {
	sh := c.shard(h)
	sh.mu.RLock()
	s := sh.m[h]
	sh.mu.RUnlock()
	if s == nil || now.After(s.expires) {
		return nil
	}
	return s
}

// snapshot is the invalidation number a database read starts from.
func (c *sessionCache) snapshot() uint64 {
	c.invMu.Lock()
	defer c.invMu.Unlock()
	return c.invSeq
}

// staleSince reports whether userID or sliceID (0: none) was invalidated
// after snapshot seq was taken.
func (c *sessionCache) staleSince(seq uint64, userID, sliceID int64) bool {
	c.invMu.Lock()
	defer c.invMu.Unlock()
	return c.invalidAllSeq > seq || (userID != 0 && c.invalidUser[userID].seq > seq) ||
		(sliceID != 0 && c.invalidSl[sliceID].seq > seq)
}

// put publishes s unless its user or slice was invalidated since seq.
func (c *sessionCache) put(s *session, seq uint64) {
	if c.staleSince(seq, s.user.ID, s.sliceID) {
		return
	}
	sh := c.shard(s.hash)
	sh.mu.Lock()
	sh.m[s.hash] = s
	sh.mu.Unlock()
}

func (c *sessionCache) drop(h tokenHash) {
	sh := c.shard(h)
	sh.mu.Lock()
	delete(sh.m, h)
	sh.mu.Unlock()
}

// dropWhere removes every entry matching f. It scans all shards: it runs on
// invalidations, which are rare next to lookups, and so needs no index.
func (c *sessionCache) dropWhere(f func(*session) bool) {
	for i := range c.shards {
		sh := &c.shards[i]
		sh.mu.Lock()
		for h, s := range sh.m {
			if f(s) {
				delete(sh.m, h)
			}
		}
		sh.mu.Unlock()
	}
}

func (c *sessionCache) invalidateUser(userID int64, now time.Time) {
	c.invMu.Lock()
	c.invSeq++
	c.invalidUser[userID] = invMark{seq: c.invSeq, at: now}
	c.invMu.Unlock()
	c.dropWhere(func(s *session) bool { return s.user.ID == userID })
}

func (c *sessionCache) invalidateSlice(sliceID int64, now time.Time) {
	c.invMu.Lock()
	c.invSeq++
	c.invalidSl[sliceID] = invMark{seq: c.invSeq, at: now}
	c.invMu.Unlock()
	c.dropWhere(func(s *session) bool { return s.sliceID == sliceID })
}

// invalidateAll drops every entry; reads in flight publish nothing.
func (c *sessionCache) invalidateAll() {
	c.invMu.Lock()
	c.invSeq++
	c.invalidAllSeq = c.invSeq
	c.invMu.Unlock()
	c.dropWhere(func(*session) bool { return true })
}

// sweep drops expired entries and invalidation marks older than any read
// that could still be in flight.
func (c *sessionCache) sweep(now time.Time, keepMarks time.Duration) {
	c.dropWhere(func(s *session) bool { return now.After(s.expires) })
	c.invMu.Lock()
	for id, m := range c.invalidUser {
		if now.Sub(m.at) > keepMarks {
			delete(c.invalidUser, id)
		}
	}
	for id, m := range c.invalidSl {
		if now.Sub(m.at) > keepMarks {
			delete(c.invalidSl, id)
		}
	}
	c.invMu.Unlock()
}

// session resolves the request's session cookie, from the cache when it can.
// It is on the hot path of every proxied request: a cache hit costs one
// SHA-256 of 32 bytes and one read-locked map lookup.
func (s *Server) session(c *fiber.Ctx) (*session, error) {
	return s.sessionOf(c.Context())
}

// sessionOf is session for a request that Fiber has not seen (front).
func (s *Server) sessionOf(ctx *fasthttp.RequestCtx) (*session, error) {
	h, ok := parseToken(utils.UnsafeString(ctx.Request.Header.Cookie(slicehub.SessionCookie)))
	if !ok {
		return nil, wire.ErrNoSession
	}
	now := s.now()
	if sess := s.sessions.get(h, now); sess != nil {
		return sess, nil
	}
	// A miss costs database reads. Random tokens always miss, so failed
	// lookups are throttled per client address before they reach PostgreSQL.
	ip, _ := s.trusted.ClientAddr(ctx)
	key := ipKey(ip)
	if d := s.badSession.Wait(key); d > 0 {
		return nil, rateLimited("gateway.session", d)
	}
	sess, err := s.loadSession(h)
	if err != nil {
		if slicehub.KindOf(err) == slicehub.KindUnauthorized {
			s.badSession.Take(key)
		}
		return nil, err
	}
	return sess, nil
}

// loadSession reads a session from the database, once for all concurrent
// requests that carry the same token.
func (s *Server) loadSession(h tokenHash) (*session, error) {
	const op = "gateway.session"
	v, err, _ := s.sessions.group.Do(string(h[:]), func() (any, error) {
		started, seq := s.now(), s.sessions.snapshot()
		// Detached from the request: the result serves every waiter, and one
		// waiter giving up must not fail the others.
		ctx, cancel := context.WithTimeout(context.Background(), s.cfg.BackendTimeout)
		defer cancel()
		u, err := s.deps.Accounts.SessionUser(ctx, h[:], s.cfg.SessionIdle)
		if err != nil {
			if slicehub.KindOf(err) == slicehub.KindUnauthorized || slicehub.KindOf(err) == slicehub.KindNotFound {
				return nil, wire.ErrNoSession
			}
			return nil, slicehub.Wrap(op, slicehub.KindInternal, err)
		}
		if u.DisabledAt != nil {
			return nil, wire.ErrNoSession
		}
		sess := &session{hash: h, user: u, expires: started.Add(s.sessions.ttl)}
		sess.userIDHeader = strconv.AppendInt(nil, u.ID, 10)
		sl, err := s.deps.Slices.SliceForUser(ctx, u.ID)
		switch {
		case err == nil:
			sess.sliceID, sess.state = sl.ID, sl.State
		case slicehub.KindOf(err) == slicehub.KindNotFound:
		default:
			return nil, slicehub.Wrap(op, slicehub.KindInternal, err)
		}
		s.sessions.put(sess, seq)
		return sess, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*session), nil
}

// startSession creates a new session for userID and sets its cookie. Every
// login gets a new token, so a token planted before login (fixation) is
// worthless after it.
func (s *Server) startSession(ctx context.Context, c *fiber.Ctx, userID int64) error {
	const op = "gateway.start_session"
	tok, h := newToken()
	now := s.now()
	expires := now.Add(s.cfg.SessionAbsolute)
	if err := s.deps.Accounts.CreateSession(ctx, userID, h[:], expires); err != nil {
		return slicehub.Wrap(op, slicehub.KindInternal, err)
	}
	c.Cookie(&fiber.Cookie{
		Name:     slicehub.SessionCookie,
		Value:    tok,
		Path:     "/",
		Expires:  expires,
		MaxAge:   int(s.cfg.SessionAbsolute / time.Second),
		Secure:   s.cfg.CookieSecure,
		HTTPOnly: true,
		SameSite: fiber.CookieSameSiteLaxMode,
	})
	return nil
}

// clearSessionCookie tells the browser to forget the session cookie.
func (s *Server) clearSessionCookie(c *fiber.Ctx) {
	c.Cookie(&fiber.Cookie{
		Name:     slicehub.SessionCookie,
		Value:    "",
		Path:     "/",
		Expires:  time.Unix(0, 0),
		MaxAge:   -1,
		Secure:   s.cfg.CookieSecure,
		HTTPOnly: true,
		SameSite: fiber.CookieSameSiteLaxMode,
	})
}
