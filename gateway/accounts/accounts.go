// Package accounts owns who a request is: sign up, log in and out,
// server-side sessions (the token in the cookie, its hash in the database,
// and a short-lived cache per replica), the password hash and its bounded
// concurrency, the login, signup and session-guessing throttles, CSRF for
// the gateway's HTML forms, and admin API keys with the /admin guard.
//
// It answers to the gateway (package gateway), which routes its handlers,
// reads its session cache on the proxy path, and is told when a session
// ends so that it can close that session's WebSockets. Errors go back to
// the gateway's one error writer (package wire).
package accounts

import (
	"context"
	"log/slog"
	"time"

	"github.com/alexedwards/argon2id"

	"github.com/slicehub/slicehub"
	"github.com/slicehub/slicehub/gateway/wire"
)

// Store stores users, server-side sessions, password reset tokens and
// admin API keys (package postgres).
type Store interface {
	// CreateUser fails with KindConflict, code "email_taken", for a known email.
	CreateUser(ctx context.Context, email, passwordHash string) (slicehub.User, error)
	// UserByEmail returns the user and its password hash, or KindNotFound.
	UserByEmail(ctx context.Context, email string) (slicehub.User, string, error)
	CreateSession(ctx context.Context, userID int64, tokenHash []byte, expiresAt time.Time) error
	// SessionUser returns the session's user if the session is neither past
	// its absolute expiry nor idle for longer than idle, touching its
	// last-seen time at most once a minute; KindUnauthorized otherwise.
	SessionUser(ctx context.Context, tokenHash []byte, idle time.Duration) (slicehub.User, error)
	DeleteSession(ctx context.Context, tokenHash []byte) error

	// CreateResetToken stores a password reset token's hash.
	CreateResetToken(ctx context.Context, userID int64, tokenHash []byte, expiresAt time.Time) error
	// ResetTokenUser returns the user of a live reset token (unused,
	// unexpired, user enabled); KindInvalid "invalid_token" otherwise.
	ResetTokenUser(ctx context.Context, tokenHash []byte) (slicehub.User, error)
	// ResetPassword redeems a live reset token once: it sets the password
	// and ends every session of the user. KindInvalid "invalid_token"
	// otherwise.
	ResetPassword(ctx context.Context, tokenHash []byte, passwordHash string) (slicehub.User, error)

	// CreateAdminKey stores an admin API key's hash.
	CreateAdminKey(ctx context.Context, name string, keyHash []byte, createdBy int64) (slicehub.AdminKey, error)
	AdminKeys(ctx context.Context) ([]slicehub.AdminKey, error)
	// RevokeAdminKey is KindNotFound for an unknown id.
	RevokeAdminKey(ctx context.Context, id int64) error
	// AdminKeyUser returns an unrevoked key and the account it acts for;
	// KindUnauthorized otherwise.
	AdminKeyUser(ctx context.Context, keyHash []byte) (slicehub.User, slicehub.AdminKey, error)
}

// Slices is what signing in needs of the slices (package scheduler).
type Slices interface {
	// Claim binds a warm slice to the user, or queues an on-demand one.
	Claim(ctx context.Context, userID int64) (slicehub.Slice, error)
	// SliceForUser returns the user's slice, or KindNotFound.
	SliceForUser(ctx context.Context, userID int64) (slicehub.Slice, error)
}

// Throttle is a token-bucket store shared by the gateway's replicas. Each
// replica still checks its own in-memory bucket first, so a flood is
// turned away without a database round trip; the shared one makes N
// replicas give an attacker one budget, not N.
type Throttle interface {
	// TakeToken spends a token of bucket (name, key); 0, or how long to wait.
	TakeToken(ctx context.Context, name, key string, burst int, every time.Duration) (time.Duration, error)
	// TokenWait is how long until the bucket has a token, spending none.
	TokenWait(ctx context.Context, name, key string, burst int, every time.Duration) (time.Duration, error)
	// PruneTokens forgets buckets untouched for longer than idle.
	PruneTokens(ctx context.Context, idle time.Duration) (int64, error)
}

// Config is the accounts' part of gateway.Config, defaults applied.
type Config struct {
	CookieSecure    bool
	SessionIdle     time.Duration
	SessionAbsolute time.Duration
	SessionCacheTTL time.Duration
	BackendTimeout  time.Duration
	AuthBodyLimit   int

	Argon2              *argon2id.Params
	MaxConcurrentHashes int

	LoginPerIP       Rate
	LoginPerAccount  Rate // spent by failed logins only
	SignupPerIP      Rate
	SignupPerAccount Rate
	BadSessionPerIP  Rate

	Now func() time.Time
}

// Service is the accounts of one gateway replica.
type Service struct {
	cfg    Config
	store  Store
	slices Slices
	log    *slog.Logger
	now    func() time.Time

	trusted wire.TrustedProxies
	origins *wire.Origins
	onEnd   func(TokenHash)

	// Sessions is the replica's session cache, read by the proxy.
	Sessions *SessionCache
	// Hasher hashes and checks passwords, a few at a time.
	Hasher *Hasher
	// BadSession is spent by session cookies and admin keys the database
	// does not know, per client address, so that guessing them cannot
	// become a flood of queries.
	BadSession *Limiter
	limits     struct {
		loginIP, loginAccount, signupIP, signupAccount *Limiter
	}
}

// New builds the accounts. trusted and origins say who the client is and
// where a request may come from; onEnd, if set, is told of each session
// that ends here (logout, a new login in the same browser).
func New(cfg Config, store Store, slices Slices, log *slog.Logger, trusted wire.TrustedProxies,
	origins *wire.Origins, onEnd func(TokenHash)) *Service {
	s := &Service{cfg: cfg, store: store, slices: slices, log: log, now: cfg.Now,
		trusted: trusted, origins: origins, onEnd: onEnd}
	s.Sessions = NewSessionCache(cfg.SessionCacheTTL)
	s.Hasher = NewHasher(cfg.Argon2, cfg.MaxConcurrentHashes)
	s.limits.loginIP = NewLimiter(cfg.LoginPerIP, s.now)
	s.limits.loginAccount = NewLimiter(cfg.LoginPerAccount, s.now)
	s.limits.signupIP = NewLimiter(cfg.SignupPerIP, s.now)
	s.limits.signupAccount = NewLimiter(cfg.SignupPerAccount, s.now)
	s.BadSession = NewLimiter(cfg.BadSessionPerIP, s.now)
	return s
}

// Share makes the guessers' budgets (login and signup) also consult the
// replicas' shared store. The session-miss limiter stays local: it guards
// PostgreSQL itself, per replica.
func (s *Service) Share(t Throttle) {
	for name, l := range map[string]*Limiter{
		"login_ip": s.limits.loginIP, "login_account": s.limits.loginAccount,
		"signup_ip": s.limits.signupIP, "signup_account": s.limits.signupAccount,
	} {
		l.Share(name, t, s.cfg.BackendTimeout, s.log)
	}
}

// Limiters are every throttle of the accounts, for the janitor to sweep.
func (s *Service) Limiters() []*Limiter {
	return []*Limiter{s.limits.loginIP, s.limits.loginAccount, s.limits.signupIP, s.limits.signupAccount, s.BadSession}
}
