package pages

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/slicehub/slicehub"
	"github.com/slicehub/slicehub/gateway/accounts"
	"github.com/slicehub/slicehub/gateway/wire"
	"github.com/slicehub/slicehub/password"
)

// Password reset by emailed link. The rules:
//   - the answer to "send me a link" is the same, and as fast, whether or
//     not the address has an account: the lookup, the token and the mail
//     happen after the answer, in the background;
//   - the token is 256 random bits, stored as SHA-256, valid for
//     Config.ResetTokenTTL and for one use (the database redeems it in one
//     locked transaction);
//   - a reset ends every session of the account, on every replica;
//   - the link's host comes from Config.PublicURL, or from the request only
//     when that host is an allowed origin or loopback, so a forged Host
//     header cannot send a user's token to an attacker's site.

// resetMailTimeout bounds one background lookup-and-send.
const resetMailTimeout = 30 * time.Second

func (s *Service) resetPage(c *fiber.Ctx) error {
	return s.render(c, http.StatusOK, "reset", &pageData{Title: "Reset your password", CSRF: s.CSRFToken(c)})
}

func (s *Service) resetForm(c *fiber.Ctx) error {
	const op = "gateway.reset"
	d := &pageData{Title: "Reset your password", Email: formValue(c, "email")}
	if s.formTooLarge(c) {
		return s.formError(c, "reset", &pageData{Title: d.Title}, errFormTooLarge)
	}
	if err := s.VerifyCSRF(c); err != nil {
		return s.formError(c, "reset", d, err)
	}
	if err := s.acc.ThrottleIP(op, s.resetIP, c); err != nil {
		return s.formError(c, "reset", d, err)
	}
	email, err := slicehub.NormalizeEmail(formValue(c, "email"))
	if err != nil {
		return s.formError(c, "reset", d, err)
	}
	// Keyed by the address asked for, account or not: the throttle itself
	// reveals nothing, and nobody can flood one inbox.
	if err := accounts.Spend(op, s.resetAccount, email); err != nil {
		return s.formError(c, "reset", d, err)
	}
	if base, ok := s.linkBase(c); ok {
		s.sendResetLater(email, base)
	} else {
		s.authLog.Error("password reset: no public URL to build the link with; set the gateway's public URL",
			"host", string(s.origins.RequestHost(c.Context())))
	}
	d.Email = email
	d.Notice = fmt.Sprintf("If %s has an account, a link to choose a new password is on its way. "+
		"It works for %s, once.", email, humanDuration(s.cfg.ResetTokenTTL))
	d.CSRF = s.CSRFToken(c)
	return s.render(c, http.StatusOK, "reset", d)
}

// sendResetLater looks the address up and mails a link if it has an
// account, after the answer has gone. At most cap(mailSem) run at once;
// beyond that a request is dropped (and logged) rather than queued without
// bound: the per-IP and per-address throttles make that rare.
func (s *Service) sendResetLater(email, base string) {
	select {
	case s.mailSem <- struct{}{}:
	default:
		s.authLog.Warn("password reset mail dropped: too many in flight")
		return
	}
	s.mailWG.Add(1)
	go func() {
		defer s.mailWG.Done()
		defer func() { <-s.mailSem }()
		ctx, cancel := context.WithTimeout(context.Background(), resetMailTimeout)
		defer cancel()
		if err := s.sendReset(ctx, email, base); err != nil {
			s.authLog.Error("password reset mail failed", "err", err)
		}
	}()
}

func (s *Service) sendReset(ctx context.Context, email, base string) error {
	u, _, err := s.deps.Accounts.UserByEmail(ctx, email)
	switch {
	case slicehub.KindOf(err) == slicehub.KindNotFound:
		s.authLog.Info("password reset asked for an address without an account")
		return nil
	case err != nil:
		return err
	case u.DisabledAt != nil:
		s.authLog.Info("password reset asked for a disabled account", "user_id", u.ID)
		return nil
	}
	tok, h := accounts.NewToken()
	if err := s.deps.Accounts.CreateResetToken(ctx, u.ID, h[:], s.now().Add(s.cfg.ResetTokenTTL)); err != nil {
		return err
	}
	link := base + "/reset/confirm?token=" + tok
	err = s.mailer.Send(ctx, Mail{
		To:      u.Email,
		Subject: "Reset your Slicehub password",
		Text: "Someone, hopefully you, asked to reset the password of your Slicehub account.\n\n" +
			"To choose a new password, open this link within " + humanDuration(s.cfg.ResetTokenTTL) + ":\n\n" +
			link + "\n\n" +
			"If you did not ask for this, ignore this message: your password stays as it is.\n",
	})
	if err != nil {
		return err
	}
	s.authLog.Info("password reset mail sent", "user_id", u.ID)
	return nil
}

// linkBase is scheme://host for links in mail.
func (s *Service) linkBase(c *fiber.Ctx) (string, bool) {
	if s.cfg.PublicURL != "" {
		return strings.TrimSuffix(s.cfg.PublicURL, "/"), true
	}
	host := strings.ToLower(string(s.origins.RequestHost(c.Context())))
	origin := c.Protocol() + "://" + host
	if s.origins.Listed(origin) {
		return origin, true
	}
	if isLoopbackHost(host) {
		return origin, true
	}
	return "", false
}

func isLoopbackHost(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(strings.Trim(host, "[]"))
	return ip != nil && ip.IsLoopback()
}

func humanDuration(d time.Duration) string {
	switch {
	case d >= time.Hour && d%time.Hour == 0:
		if d == time.Hour {
			return "1 hour"
		}
		return fmt.Sprintf("%d hours", d/time.Hour)
	case d >= time.Minute:
		return fmt.Sprintf("%d minutes", d/time.Minute)
	}
	return d.String()
}

// ResetCookie carries the reset token from the mailed link to the form.
// The link's URL holds the token; the page at that URL would hand it to
// whatever it loads as a Referer, and a Referrer-Policy strict enough to
// prevent that also makes the browser send "Origin: null" with the form,
// which the CSRF check rightly refuses. So the link only moves the token
// into this cookie, scoped to the form's path, and redirects to the form
// at a URL without it.
const ResetCookie = "slicehub_reset"

func (s *Service) setResetCookie(c *fiber.Ctx, tok string, maxAge time.Duration) {
	expires := s.now().Add(maxAge)
	if maxAge < 0 {
		expires = time.Unix(0, 0)
	}
	c.Cookie(&fiber.Cookie{
		Name:     ResetCookie,
		Value:    tok,
		Path:     "/reset/confirm",
		Expires:  expires,
		MaxAge:   int(maxAge / time.Second),
		Secure:   s.cfg.CookieSecure,
		HTTPOnly: true,
		SameSite: fiber.CookieSameSiteLaxMode,
	})
}

// resetConfirmPage is where the mailed link lands, and the form for the
// new password after the hop that moves the token into resetCookie.
func (s *Service) resetConfirmPage(c *fiber.Ctx) error {
	if tok := c.Query("token"); tok != "" {
		s.setResetCookie(c, tok, s.cfg.ResetTokenTTL)
		c.Set(fiber.HeaderReferrerPolicy, "no-referrer")
		return redirect(c, "/reset/confirm")
	}
	d := &pageData{Title: "Choose a new password"}
	u, err := s.resetTokenUser(c, c.Cookies(ResetCookie))
	if err != nil {
		d.Error = sentence(slicehub.MessageOf(err))
		return s.render(c, wire.Status(err), "reset_confirm", d)
	}
	d.ResetForm, d.Email, d.CSRF = true, u.Email, s.CSRFToken(c)
	return s.render(c, http.StatusOK, "reset_confirm", d)
}

// resetTokenUser checks a token's shape for free, then asks the database.
// Unknown tokens spend the same per-address budget as unknown session
// cookies: a token cannot be guessed, but each guess is a query.
func (s *Service) resetTokenUser(c *fiber.Ctx, tok string) (slicehub.User, error) {
	const op = "gateway.reset_token"
	invalid := slicehub.Errorf(op, slicehub.KindInvalid, "invalid_token",
		"This reset link is invalid or has expired. Ask for a new one.")
	ip, _ := s.trusted.ClientAddr(c.Context())
	key := accounts.IPKey(ip)
	if d := s.acc.BadSession.Wait(key); d > 0 {
		return slicehub.User{}, accounts.RateLimited(op, d)
	}
	h, ok := accounts.ParseToken(tok)
	if !ok {
		s.acc.BadSession.Take(key)
		return slicehub.User{}, invalid
	}
	ctx, cancel := s.acc.BackendContext(c)
	defer cancel()
	u, err := s.deps.Accounts.ResetTokenUser(ctx, h[:])
	if err != nil {
		if k := slicehub.KindOf(err); k == slicehub.KindInvalid || k == slicehub.KindNotFound {
			s.acc.BadSession.Take(key)
			return slicehub.User{}, invalid
		}
		return slicehub.User{}, slicehub.Wrap(op, slicehub.KindInternal, err)
	}
	return u, nil
}

func (s *Service) resetConfirmForm(c *fiber.Ctx) error {
	const op = "gateway.reset_confirm"
	tok := c.Cookies(ResetCookie)
	d := &pageData{Title: "Choose a new password", ResetForm: true}
	fail := func(err error) error {
		d.Error = sentence(slicehub.MessageOf(err))
		d.CSRF = s.CSRFToken(c)
		if wire.Status(err) >= 500 {
			s.log.Error("password reset failed", "err", err)
		}
		return s.render(c, wire.Status(err), "reset_confirm", d)
	}
	if s.formTooLarge(c) {
		return fail(errFormTooLarge)
	}
	if err := s.VerifyCSRF(c); err != nil {
		return fail(err)
	}
	u, err := s.resetTokenUser(c, tok)
	if err != nil {
		d.ResetForm = false // nothing to retry with: the form becomes a link to ask again
		return fail(err)
	}
	d.Email = u.Email
	pw := formValue(c, "password")
	if pw != formValue(c, "password2") {
		return fail(slicehub.Errorf(op, slicehub.KindInvalid, "password_mismatch", "The two passwords are not the same."))
	}
	if err := password.Check(pw, u.Email); err != nil {
		return fail(err)
	}
	ctx, cancel := s.acc.BackendContext(c)
	defer cancel()
	hash, err := s.acc.Hasher.Hash(ctx, pw)
	if err != nil {
		return fail(err)
	}
	h, _ := accounts.ParseToken(tok)
	u, err = s.deps.Accounts.ResetPassword(ctx, h[:], hash)
	if err != nil {
		if slicehub.KindOf(err) == slicehub.KindInvalid {
			d.ResetForm = false
		}
		return fail(slicehub.Wrap(op, slicehub.KindInternal, err))
	}
	// The database ended every session of the account and told the other
	// replicas; this one forgets at once, and this browser drops its cookies.
	s.invalidate(u.ID)
	s.acc.ClearSessionCookie(c)
	s.setResetCookie(c, "", -1)
	s.authLog.Info("password reset", "user_id", u.ID)
	return redirect(c, "/login?done=reset")
}
