package gateway

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

// accountJSON answers signup, login and me.
type accountJSON struct {
	User  userJSON   `json:"user"`
	Slice *sliceJSON `json:"slice"`
}

func accountOf(u slicehub.User, sliceID int64, state slicehub.SliceState) accountJSON {
	a := accountJSON{User: userJSON{ID: u.ID, Email: u.Email, IsAdmin: u.IsAdmin}}
	if sliceID != 0 {
		a.Slice = &sliceJSON{ID: sliceID, State: state}
	}
	return a
}

// rateLimited is the 429 of every throttle.
func rateLimited(op string, d time.Duration) error {
	return wire.WithRetry(op, slicehub.KindRateLimited, "rate_limited", "too many requests; try again later", d)
}

// throttle spends a token of l for key, or returns the 429.
func throttle(op string, l *limiter, key string) error {
	if d := l.Take(key); d > 0 {
		return rateLimited(op, d)
	}
	return nil
}

// backendContext bounds one handler's calls to Accounts and Slices.
func (s *Server) backendContext(c *fiber.Ctx) (context.Context, context.CancelFunc) {
	return context.WithTimeout(c.UserContext(), s.cfg.BackendTimeout)
}

func (s *Server) signup(c *fiber.Ctx) error {
	return s.jsonAuth(c, "gateway.signup", s.limits.signupIP, http.StatusCreated, s.register)
}

// jsonAuth is the JSON side of signup and login: the request checks, the
// per-IP budget and the body, then do (register or authenticate, shared
// with the HTML forms), answered with status and never cached.
func (s *Server) jsonAuth(c *fiber.Ctx, op string, perIP *limiter, status int,
	do func(ctx context.Context, c *fiber.Ctx, email, password string) (accountJSON, error)) error {
	if err := s.origins.CheckJSON(c); err != nil {
		return err
	}
	if err := s.throttleIP(op, perIP, c); err != nil {
		return err
	}
	var in credentials
	if err := wire.DecodeJSON(c, &in, s.cfg.AuthBodyLimit); err != nil {
		return err
	}
	ctx, cancel := s.backendContext(c)
	defer cancel()
	acct, err := do(ctx, c, in.Email, in.Password)
	if err != nil {
		return err
	}
	c.Set(fiber.HeaderCacheControl, "no-store")
	return c.Status(status).JSON(acct)
}

// throttleIP spends a token of l for the client's address.
func (s *Server) throttleIP(op string, l *limiter, c *fiber.Ctx) error {
	ip, _ := s.trusted.ClientAddr(c.Context())
	return throttle(op, l, ipKey(ip))
}

// register creates an account, claims a slice for it and signs it in: the
// signup of the JSON API and of the HTML form alike. The caller has checked
// the request (JSON or CSRF) and spent the per-IP budget.
func (s *Server) register(ctx context.Context, c *fiber.Ctx, rawEmail, password string) (accountJSON, error) {
	const op = "gateway.signup"
	email, err := normalizeEmail(rawEmail)
	if err != nil {
		return accountJSON{}, err
	}
	if err := throttle(op, s.limits.signupAccount, email); err != nil {
		return accountJSON{}, err
	}
	if err := checkPassword(password, email); err != nil {
		return accountJSON{}, err
	}
	hash, err := s.hasher.hash(ctx, password)
	if err != nil {
		return accountJSON{}, err
	}
	u, err := s.deps.Accounts.CreateUser(ctx, email, hash)
	if err != nil {
		return accountJSON{}, slicehub.Wrap(op, slicehub.KindInternal, err)
	}
	// The account exists from here on: a failed claim must not fail the
	// signup. The user gets a session and slice null; login claims again.
	var sliceID int64
	var state slicehub.SliceState
	if sl, err := s.deps.Slices.Claim(ctx, u.ID); err != nil {
		s.authLog.Error("claim at signup failed", "user_id", u.ID, "err", err)
	} else {
		sliceID, state = sl.ID, sl.State
	}
	if err := s.startSession(ctx, c, u.ID); err != nil {
		return accountJSON{}, err
	}
	s.authLog.Info("signup", "user_id", u.ID, "slice_id", sliceID)
	return accountOf(u, sliceID, state), nil
}

func (s *Server) login(c *fiber.Ctx) error {
	return s.jsonAuth(c, "gateway.login", s.limits.loginIP, http.StatusOK, s.authenticate)
}

// authenticate checks a password and starts a new session: the login of
// the JSON API and of the HTML form alike. The caller has checked the
// request (JSON or CSRF) and spent the per-IP budget.
func (s *Server) authenticate(ctx context.Context, c *fiber.Ctx, rawEmail, password string) (accountJSON, error) {
	const op = "gateway.login"
	invalid := slicehub.Errorf(op, slicehub.KindUnauthorized, "invalid_credentials", "wrong email or password")
	email, err := normalizeEmail(rawEmail)
	if err != nil || len(password) > 4*maxPasswordLen {
		// No account can match; spend the same time as a real check anyway.
		if _, err := s.hasher.verify(ctx, password, ""); err != nil {
			return accountJSON{}, err
		}
		return accountJSON{}, invalid
	}
	// Failed attempts spend the account's budget and successes do not, so
	// guessing is slowed while a user who signs in often never notices it.
	// Once failures exhaust it, the account waits whatever the password.
	if d := s.limits.loginAccount.Wait(email); d > 0 {
		return accountJSON{}, rateLimited(op, d)
	}
	u, hash, err := s.deps.Accounts.UserByEmail(ctx, email)
	switch {
	case err == nil:
	case slicehub.KindOf(err) == slicehub.KindNotFound:
		hash = "" // verify against the dummy: same cost, same answer
	default:
		return accountJSON{}, slicehub.Wrap(op, slicehub.KindInternal, err)
	}
	ok, err := s.hasher.verify(ctx, password, hash)
	if err != nil {
		return accountJSON{}, err
	}
	if !ok {
		s.limits.loginAccount.Take(email)
		return accountJSON{}, invalid
	}
	if u.DisabledAt != nil {
		return accountJSON{}, slicehub.Errorf(op, slicehub.KindForbidden, "account_disabled", "this account is disabled")
	}

	// A previous session in this browser ends: one cookie, one session.
	if old, ok := parseToken(c.Cookies(slicehub.SessionCookie)); ok {
		_ = s.endSession(ctx, old) // best effort: the new session does not depend on it
	}
	sliceID, state := s.sliceAtLogin(ctx, u.ID)
	if err := s.startSession(ctx, c, u.ID); err != nil {
		return accountJSON{}, err
	}
	s.authLog.Info("login", "user_id", u.ID)
	return accountOf(u, sliceID, state), nil
}

// sliceAtLogin finds the user's slice, claiming one when the signup's claim
// did not bind any.
func (s *Server) sliceAtLogin(ctx context.Context, userID int64) (int64, slicehub.SliceState) {
	sl, err := s.deps.Slices.SliceForUser(ctx, userID)
	if slicehub.KindOf(err) == slicehub.KindNotFound {
		sl, err = s.deps.Slices.Claim(ctx, userID)
	}
	if err != nil {
		s.authLog.Error("slice lookup at login failed", "user_id", userID, "err", err)
		return 0, ""
	}
	return sl.ID, sl.State
}

// endSession deletes a session and forgets it here, and closes its
// WebSockets. Other replicas forget it when their cache entry expires.
func (s *Server) endSession(ctx context.Context, h tokenHash) error {
	err := s.deps.Accounts.DeleteSession(ctx, h[:])
	s.sessions.drop(h)
	for _, t := range s.tunnels.matching(func(t *tunnel) bool { return t.hash == h }) {
		t.end(closeSignedOut)
	}
	if err != nil {
		return slicehub.Wrap("gateway.end_session", slicehub.KindInternal, err)
	}
	return nil
}

func (s *Server) logout(c *fiber.Ctx) error {
	if !s.origins.Allowed(c.Context()) {
		return wire.ErrBadOrigin
	}
	// The browser forgets the cookie whatever happens below.
	s.clearSessionCookie(c)
	if h, ok := parseToken(c.Cookies(slicehub.SessionCookie)); ok {
		ctx, cancel := s.backendContext(c)
		defer cancel()
		if err := s.endSession(ctx, h); err != nil {
			return err
		}
	}
	return c.SendStatus(http.StatusNoContent)
}

func (s *Server) me(c *fiber.Ctx) error {
	sess, err := s.session(c)
	if err != nil {
		return err
	}
	c.Set(fiber.HeaderCacheControl, "no-store")
	return c.JSON(accountOf(sess.user, sess.sliceID, sess.state))
}

// requireAdmin guards /admin/*: an admin's session anywhere under it, or
// an admin API key (Authorization: Bearer) under /admin/api/ only, so that
// a key cannot drive pages meant for a person.
func (s *Server) requireAdmin(c *fiber.Ctx) error {
	if auth := c.Get(fiber.HeaderAuthorization); auth != "" && isAdminAPIPath(c.Path()) {
		return s.requireAdminKey(c, auth)
	}
	sess, err := s.session(c)
	if err != nil {
		return err
	}
	if !sess.user.IsAdmin {
		return wire.ErrForbidden
	}
	// A browser's session rides along on any request, so a state-changing
	// one must come from our own pages. A key in a header cannot be forged
	// cross-site and needs no such check.
	if !isSafeMethod(&c.Context().Request.Header) && !s.origins.Allowed(c.Context()) {
		return wire.ErrBadOrigin
	}
	c.Locals(LocalsUserID, sess.user.ID)
	return c.Next()
}

// LocalsUserID is the c.Locals key under which /admin handlers find the
// authenticated admin's user id (an int64).
const LocalsUserID = "slicehub.user_id"

// LocalsAdminKeyID is the c.Locals key of the admin API key's id (an
// int64) when the request was authenticated by a key rather than a
// session, for the audit trail of /admin handlers.
const LocalsAdminKeyID = "slicehub.admin_key_id"
