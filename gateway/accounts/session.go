package accounts

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
// TokenLen is the length of a session token in its cookie.
const TokenLen = 43 // base64.RawURLEncoding.EncodedLen(32)

// tokenEncoding refuses non-canonical spellings, so one token has one cookie value.
var tokenEncoding = base64.RawURLEncoding.Strict()

type TokenHash [sha256.Size]byte

func NewToken() (cookie string, hash TokenHash) {
	var raw [32]byte
	if _, err := rand.Read(raw[:]); err != nil {
		panic(err) // crypto/rand does not fail on supported platforms
	}
	return tokenEncoding.EncodeToString(raw[:]), sha256.Sum256(raw[:])
}

// ParseToken validates the cookie's shape before anything touches the
// database: a wrong length or alphabet is refused for free.
func ParseToken(cookie string) (TokenHash, bool) {
	var raw [32]byte
	if len(cookie) != TokenLen {
		return TokenHash{}, false
	}
	n, err := tokenEncoding.Decode(raw[:], []byte(cookie))
	if err != nil || n != len(raw) {
		return TokenHash{}, false
	}
	return sha256.Sum256(raw[:]), true
}

// Session is what the gateway needs to route a request, cached by token
// hash. An entry is immutable once published; a refresh replaces it.
type Session struct {
	Hash    TokenHash
	User    slicehub.User
	SliceID int64 // 0: no slice bound yet
	State   slicehub.SliceState
	Expires time.Time // end of this cache entry, not of the session
	// UserIDHeader is the decimal user id, formatted once for the proxy.
	UserIDHeader []byte
}

// SessionCache maps token hash -> session for a short TTL. Sharding keeps
// the read lock of the hot path from being one contended cache line.
type SessionCache struct {
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
	m  map[TokenHash]*Session
}

func NewSessionCache(ttl time.Duration) *SessionCache {
	c := &SessionCache{ttl: ttl, invalidUser: map[int64]invMark{}, invalidSl: map[int64]invMark{}}
	for i := range c.shards {
		c.shards[i].m = make(map[TokenHash]*Session)
	}
	return c
}

func (c *SessionCache) shard(h TokenHash) *sessionShard { return &c.shards[h[0]&63] }

func (c *SessionCache) Get(h TokenHash, now time.Time) *Session {
	sh := c.shard(h)
	sh.mu.RLock()
	s := sh.m[h]
	sh.mu.RUnlock()
	if s == nil || now.After(s.Expires) {
		return nil
	}
	return s
}

// Snapshot is the invalidation number a database read starts from.
func (c *SessionCache) Snapshot() uint64 {
	c.invMu.Lock()
	defer c.invMu.Unlock()
	return c.invSeq
}

// StaleSince reports whether userID or sliceID (0: none) was invalidated
// after snapshot seq was taken.
func (c *SessionCache) StaleSince(seq uint64, userID, sliceID int64) bool {
	c.invMu.Lock()
	defer c.invMu.Unlock()
	return c.invalidAllSeq > seq || (userID != 0 && c.invalidUser[userID].seq > seq) ||
		(sliceID != 0 && c.invalidSl[sliceID].seq > seq)
}

// Put publishes s unless its user or slice was invalidated since seq.
func (c *SessionCache) Put(s *Session, seq uint64) {
	if c.StaleSince(seq, s.User.ID, s.SliceID) {
		return
	}
	sh := c.shard(s.Hash)
	sh.mu.Lock()
	sh.m[s.Hash] = s
	sh.mu.Unlock()
}

func (c *SessionCache) Drop(h TokenHash) {
	sh := c.shard(h)
	sh.mu.Lock()
	delete(sh.m, h)
	sh.mu.Unlock()
}

// DropWhere removes every entry matching f. It scans all shards: it runs on
// invalidations, which are rare next to lookups, and so needs no index.
func (c *SessionCache) DropWhere(f func(*Session) bool) {
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

func (c *SessionCache) InvalidateUser(userID int64, now time.Time) {
	c.invMu.Lock()
	c.invSeq++
	c.invalidUser[userID] = invMark{seq: c.invSeq, at: now}
	c.invMu.Unlock()
	c.DropWhere(func(s *Session) bool { return s.User.ID == userID })
}

func (c *SessionCache) InvalidateSlice(sliceID int64, now time.Time) {
	c.invMu.Lock()
	c.invSeq++
	c.invalidSl[sliceID] = invMark{seq: c.invSeq, at: now}
	c.invMu.Unlock()
	c.DropWhere(func(s *Session) bool { return s.SliceID == sliceID })
}

// InvalidateAll drops every entry; reads in flight publish nothing.
func (c *SessionCache) InvalidateAll() {
	c.invMu.Lock()
	c.invSeq++
	c.invalidAllSeq = c.invSeq
	c.invMu.Unlock()
	c.DropWhere(func(*Session) bool { return true })
}

// Sweep drops expired entries and invalidation marks older than any read
// that could still be in flight.
func (c *SessionCache) Sweep(now time.Time, keepMarks time.Duration) {
	c.DropWhere(func(s *Session) bool { return now.After(s.Expires) })
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

// Session resolves the request's session cookie, from the cache when it can.
// It is on the hot path of every proxied request: a cache hit costs one
// SHA-256 of 32 bytes and one read-locked map lookup.
func (s *Service) Session(c *fiber.Ctx) (*Session, error) {
	return s.SessionOf(c.Context())
}

// SessionOf is session for a request that Fiber has not seen (front).
func (s *Service) SessionOf(ctx *fasthttp.RequestCtx) (*Session, error) {
	h, ok := ParseToken(utils.UnsafeString(ctx.Request.Header.Cookie(slicehub.SessionCookie)))
	if !ok {
		return nil, wire.ErrNoSession
	}
	now := s.now()
	if sess := s.Sessions.Get(h, now); sess != nil {
		return sess, nil
	}
	// A miss costs database reads. Random tokens always miss, so failed
	// lookups are throttled per client address before they reach PostgreSQL.
	ip, _ := s.trusted.ClientAddr(ctx)
	key := IPKey(ip)
	if d := s.BadSession.Wait(key); d > 0 {
		return nil, RateLimited("gateway.session", d)
	}
	sess, err := s.LoadSession(h)
	if err != nil {
		if slicehub.KindOf(err) == slicehub.KindUnauthorized {
			s.BadSession.Take(key)
		}
		return nil, err
	}
	return sess, nil
}

// LoadSession reads a session from the database, once for all concurrent
// requests that carry the same token.
func (s *Service) LoadSession(h TokenHash) (*Session, error) {
	const op = "gateway.session"
	v, err, _ := s.Sessions.group.Do(string(h[:]), func() (any, error) {
		started, seq := s.now(), s.Sessions.Snapshot()
		// Detached from the request: the result serves every waiter, and one
		// waiter giving up must not fail the others.
		ctx, cancel := context.WithTimeout(context.Background(), s.cfg.BackendTimeout)
		defer cancel()
		u, err := s.store.SessionUser(ctx, h[:], s.cfg.SessionIdle)
		if err != nil {
			if slicehub.KindOf(err) == slicehub.KindUnauthorized || slicehub.KindOf(err) == slicehub.KindNotFound {
				return nil, wire.ErrNoSession
			}
			return nil, slicehub.Wrap(op, slicehub.KindInternal, err)
		}
		if u.DisabledAt != nil {
			return nil, wire.ErrNoSession
		}
		sess := &Session{Hash: h, User: u, Expires: started.Add(s.Sessions.ttl)}
		sess.UserIDHeader = strconv.AppendInt(nil, u.ID, 10)
		sl, err := s.slices.SliceForUser(ctx, u.ID)
		switch {
		case err == nil:
			sess.SliceID, sess.State = sl.ID, sl.State
		case slicehub.KindOf(err) == slicehub.KindNotFound:
		default:
			return nil, slicehub.Wrap(op, slicehub.KindInternal, err)
		}
		s.Sessions.Put(sess, seq)
		return sess, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*Session), nil
}

// StartSession creates a new session for userID and sets its cookie. Every
// Login gets a new token, so a token planted before login (fixation) is
// worthless after it.
func (s *Service) StartSession(ctx context.Context, c *fiber.Ctx, userID int64) error {
	const op = "gateway.start_session"
	tok, h := NewToken()
	now := s.now()
	expires := now.Add(s.cfg.SessionAbsolute)
	if err := s.store.CreateSession(ctx, userID, h[:], expires); err != nil {
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

// ClearSessionCookie tells the browser to forget the session cookie.
func (s *Service) ClearSessionCookie(c *fiber.Ctx) {
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
