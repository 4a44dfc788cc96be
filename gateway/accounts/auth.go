package accounts

import (
	"context"
	"net/http"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/slicehub/slicehub"
	"github.com/slicehub/slicehub/gateway/wire"
)

// credentials is the body of signup and login.
type credentials struct {
	Email    string `json:"email"`
	Password string `json:"password"`
}

type userJSON struct {
	ID      int64  `json:"id"`
	Email   string `json:"email"`
	IsAdmin bool   `json:"is_admin"`
}

type sliceJSON struct {
	ID    int64               `json:"id"`
	State slicehub.SliceState `json:"state"`
}

// Account answers signup, login and me.
type Account struct {
	User  userJSON   `json:"user"`
	Slice *sliceJSON `json:"slice"`
}

func accountOf(u slicehub.User, sliceID int64, state slicehub.SliceState) Account {
	a := Account{User: userJSON{ID: u.ID, Email: u.Email, IsAdmin: u.IsAdmin}}
	if sliceID != 0 {
		a.Slice = &sliceJSON{ID: sliceID, State: state}
	}
	return a
}

// RateLimited is the 429 of every throttle.
func RateLimited(op string, d time.Duration) error {
	return wire.WithRetry(op, slicehub.KindRateLimited, "rate_limited", "too many requests; try again later", d)
}

// Spend spends a token of l for key, or returns the 429.
func Spend(op string, l *Limiter, key string) error {
	if d := l.Take(key); d > 0 {
		return RateLimited(op, d)
	}
	return nil
}

// BackendContext bounds one handler's calls to the store and the slices
// (Config.BackendTimeout): the gateway's and the pages' handlers use it too.
func (s *Service) BackendContext(c *fiber.Ctx) (context.Context, context.CancelFunc) {
	return context.WithTimeout(c.UserContext(), s.cfg.BackendTimeout)
}

func (s *Service) Signup(c *fiber.Ctx) error {
	return s.jsonAuth(c, "gateway.signup", s.limits.signupIP, http.StatusCreated, s.Register)
}

// jsonAuth is the JSON side of signup and login: the request checks, the
// per-IP budget and the body, then do (register or authenticate, shared
// with the HTML forms), answered with status and never cached.
func (s *Service) jsonAuth(c *fiber.Ctx, op string, perIP *Limiter, status int,
	do func(ctx context.Context, c *fiber.Ctx, email, password string) (Account, error)) error {
	if err := s.origins.CheckJSON(c); err != nil {
		return err
	}
	if err := s.ThrottleIP(op, perIP, c); err != nil {
		return err
	}
	var in credentials
	if err := wire.DecodeJSON(c, &in, s.cfg.AuthBodyLimit); err != nil {
		return err
	}
	ctx, cancel := s.BackendContext(c)
	defer cancel()
	acct, err := do(ctx, c, in.Email, in.Password)
	if err != nil {
		return err
	}
	c.Set(fiber.HeaderCacheControl, "no-store")
	return c.Status(status).JSON(acct)
}

// ThrottleIP spends a token of l for the client's address.
func (s *Service) ThrottleIP(op string, l *Limiter, c *fiber.Ctx) error {
	ip, _ := s.trusted.ClientAddr(c.Context())
	return Spend(op, l, IPKey(ip))
}

// Register creates an account, claims a slice for it and signs it in: the
// Signup of the JSON API and of the HTML form alike. The caller has checked
// the request (JSON or CSRF) and spent the per-IP budget.
func (s *Service) Register(ctx context.Context, c *fiber.Ctx, rawEmail, password string) (Account, error) {
	const op = "gateway.signup"
	email, err := normalizeEmail(rawEmail)
	if err != nil {
		return Account{}, err
	}
	if err := Spend(op, s.limits.signupAccount, email); err != nil {
		return Account{}, err
	}
	if err := checkPassword(password, email); err != nil {
		return Account{}, err
	}
	hash, err := s.Hasher.Hash(ctx, password)
	if err != nil {
		return Account{}, err
	}
	u, err := s.store.CreateUser(ctx, email, hash)
	if err != nil {
		return Account{}, slicehub.Wrap(op, slicehub.KindInternal, err)
	}
	// The account exists from here on: a failed claim must not fail the
	// signup. The user gets a session and slice null; login claims again.
	var sliceID int64
	var state slicehub.SliceState
	if sl, err := s.slices.Claim(ctx, u.ID); err != nil {
		s.log.Error("claim at signup failed", "user_id", u.ID, "err", err)
	} else {
		sliceID, state = sl.ID, sl.State
	}
	if err := s.StartSession(ctx, c, u.ID); err != nil {
		return Account{}, err
	}
	s.log.Info("signup", "user_id", u.ID, "slice_id", sliceID)
	return accountOf(u, sliceID, state), nil
}

func (s *Service) Login(c *fiber.Ctx) error {
	return s.jsonAuth(c, "gateway.login", s.limits.loginIP, http.StatusOK, s.Authenticate)
}

// Authenticate checks a password and starts a new session: the login of
// the JSON API and of the HTML form alike. The caller has checked the
// request (JSON or CSRF) and spent the per-IP budget.
func (s *Service) Authenticate(ctx context.Context, c *fiber.Ctx, rawEmail, password string) (Account, error) {
	const op = "gateway.login"
	invalid := slicehub.Errorf(op, slicehub.KindUnauthorized, "invalid_credentials", "wrong email or password")
	email, err := normalizeEmail(rawEmail)
	if err != nil || len(password) > 4*maxPasswordLen {
		// No account can match; spend the same time as a real check anyway.
		if _, err := s.Hasher.Verify(ctx, password, ""); err != nil {
			return Account{}, err
		}
		return Account{}, invalid
	}
	// Failed attempts spend the account's budget and successes do not, so
	// guessing is slowed while a user who signs in often never notices it.
	// Once failures exhaust it, the account waits whatever the password.
	if d := s.limits.loginAccount.Wait(email); d > 0 {
		return Account{}, RateLimited(op, d)
	}
	u, hash, err := s.store.UserByEmail(ctx, email)
	switch {
	case err == nil:
	case slicehub.KindOf(err) == slicehub.KindNotFound:
		hash = "" // verify against the dummy: same cost, same answer
	default:
		return Account{}, slicehub.Wrap(op, slicehub.KindInternal, err)
	}
	ok, err := s.Hasher.Verify(ctx, password, hash)
	if err != nil {
		return Account{}, err
	}
	if !ok {
		s.limits.loginAccount.Take(email)
		return Account{}, invalid
	}
	if u.DisabledAt != nil {
		return Account{}, slicehub.Errorf(op, slicehub.KindForbidden, "account_disabled", "this account is disabled")
	}

	// A previous session in this browser ends: one cookie, one session.
	if old, ok := ParseToken(c.Cookies(slicehub.SessionCookie)); ok {
		_ = s.EndSession(ctx, old) // best effort: the new session does not depend on it
	}
	sliceID, state := s.SliceAtLogin(ctx, u.ID)
	if err := s.StartSession(ctx, c, u.ID); err != nil {
		return Account{}, err
	}
	s.log.Info("login", "user_id", u.ID)
	return accountOf(u, sliceID, state), nil
}

// SliceAtLogin finds the user's slice, claiming one when the signup's claim
// did not bind any.
func (s *Service) SliceAtLogin(ctx context.Context, userID int64) (int64, slicehub.SliceState) {
	sl, err := s.slices.SliceForUser(ctx, userID)
	if slicehub.KindOf(err) == slicehub.KindNotFound {
		sl, err = s.slices.Claim(ctx, userID)
	}
	if err != nil {
		s.log.Error("slice lookup at login failed", "user_id", userID, "err", err)
		return 0, ""
	}
	return sl.ID, sl.State
}

// EndSession deletes a session and forgets it here, and closes its
// WebSockets. Other replicas forget it when their cache entry expires.
func (s *Service) EndSession(ctx context.Context, h TokenHash) error {
	err := s.store.DeleteSession(ctx, h[:])
	s.Sessions.Drop(h)
	if s.onEnd != nil {
		s.onEnd(h)
	}
	if err != nil {
		return slicehub.Wrap("gateway.end_session", slicehub.KindInternal, err)
	}
	return nil
}

func (s *Service) Logout(c *fiber.Ctx) error {
	if !s.origins.Allowed(c.Context()) {
		return wire.ErrBadOrigin
	}
	// The browser forgets the cookie whatever happens below.
	s.ClearSessionCookie(c)
	if h, ok := ParseToken(c.Cookies(slicehub.SessionCookie)); ok {
		ctx, cancel := s.BackendContext(c)
		defer cancel()
		if err := s.EndSession(ctx, h); err != nil {
			return err
		}
	}
	return c.SendStatus(http.StatusNoContent)
}

func (s *Service) Me(c *fiber.Ctx) error {
	sess, err := s.Session(c)
	if err != nil {
		return err
	}
	c.Set(fiber.HeaderCacheControl, "no-store")
	return c.JSON(accountOf(sess.User, sess.SliceID, sess.State))
}

// RequireAdmin guards /admin/*: an admin's session anywhere under it, or
// an admin API key (Authorization: Bearer) under /admin/api/ only, so that
// a key cannot drive pages meant for a person.
func (s *Service) RequireAdmin(c *fiber.Ctx) error {
	if auth := c.Get(fiber.HeaderAuthorization); auth != "" && isAdminAPIPath(c.Path()) {
		return s.requireAdminKey(c, auth)
	}
	sess, err := s.Session(c)
	if err != nil {
		return err
	}
	if !sess.User.IsAdmin {
		return wire.ErrForbidden
	}
	// A browser's session rides along on any request, so a state-changing
	// one must come from our own pages. A key in a header cannot be forged
	// cross-site and needs no such check.
	if !wire.SafeMethod(&c.Context().Request.Header) && !s.origins.Allowed(c.Context()) {
		return wire.ErrBadOrigin
	}
	c.Locals(LocalsUserID, sess.User.ID)
	return c.Next()
}

// LocalsUserID is the c.Locals key under which /admin handlers find the
// authenticated admin's user id (an int64).
const LocalsUserID = "slicehub.user_id"

// LocalsAdminKeyID is the c.Locals key of the admin API key's id (an
// int64) when the request was authenticated by a key rather than a
// session, for the audit trail of /admin handlers.
const LocalsAdminKeyID = "slicehub.admin_key_id"

// ThrottleSignup spends the client address's signup budget, as the JSON
// signup does: for the gateway's HTML signup form.
func (s *Service) ThrottleSignup(op string, c *fiber.Ctx) error {
	return s.ThrottleIP(op, s.limits.signupIP, c)
}

// ThrottleLogin spends the client address's login budget, as the JSON
// login does: for the gateway's HTML login form.
func (s *Service) ThrottleLogin(op string, c *fiber.Ctx) error {
	return s.ThrottleIP(op, s.limits.loginIP, c)
}
