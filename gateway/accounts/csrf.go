package accounts

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/slicehub/slicehub"
	"github.com/slicehub/slicehub/gateway/wire"
)

// Cross-site request forgery, in layers:
//   - the session cookie is SameSite=Lax, so a cross-site POST, fetch or
//     WebSocket does not carry it in current browsers;
//   - JSON endpoints demand Content-Type application/json, which a cross-site
//     HTML form cannot send and a cross-site fetch cannot send without a CORS
//     preflight that the gateway never grants;
//   - Origin, when the browser sends one, must be an allowed origin or the
//     gateway's own host. WebSocket handshakes are GETs, which CSRF
//     middleware skips, so they are checked the same way;
//   - HTML forms, when the gateway serves some, use the double-submit cookie
//     below.

// CSRFField is the form field (or X-CSRF-Token header) that must repeat the
// CSRF cookie.
const CSRFField = "csrf_token"

// CSRFToken returns the double-submit token to embed in an HTML form,
// issuing the slicehub.CSRFCookie when the browser has none yet. A
// cross-site page can make the browser send the cookie but cannot read it,
// so it cannot put the same value in the form.
func (s *Service) CSRFToken(c *fiber.Ctx) string {
	if v := c.Cookies(slicehub.CSRFCookie); len(v) == 43 {
		return strings.Clone(v)
	}
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand does not fail on supported platforms
	}
	tok := base64.RawURLEncoding.EncodeToString(b[:])
	c.Cookie(&fiber.Cookie{
		Name:     slicehub.CSRFCookie,
		Value:    tok,
		Path:     "/",
		MaxAge:   int((12 * time.Hour).Seconds()),
		Secure:   s.cfg.CookieSecure,
		HTTPOnly: true, // the server renders it into the form; scripts never need it
		SameSite: fiber.CookieSameSiteLaxMode,
	})
	return tok
}

// VerifyCSRF checks an HTML form post: the csrf_token field, or the
// X-CSRF-Token header, must equal the CSRF cookie.
func (s *Service) VerifyCSRF(c *fiber.Ctx) error {
	const op = "gateway.csrf"
	if !s.origins.Allowed(c.Context()) {
		return wire.ErrBadOrigin
	}
	cookie := c.Cookies(slicehub.CSRFCookie)
	sent := c.Get("X-CSRF-Token")
	if sent == "" {
		sent = c.FormValue(CSRFField)
	}
	if len(cookie) != 43 || subtle.ConstantTimeCompare([]byte(cookie), []byte(sent)) != 1 {
		return slicehub.Errorf(op, slicehub.KindForbidden, "csrf", "the form has expired; reload the page")
	}
	return nil
}
