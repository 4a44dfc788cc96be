package gateway

import (
	"bytes"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/valyala/fasthttp"

	"github.com/slicehub/slicehub"
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

// originAllowed reports whether the Origin header is acceptable. A missing
// Origin is acceptable: browsers send one on every cross-origin request and
// on every WebSocket handshake, so its absence means a same-origin request
// from an older browser or a non-browser client, neither of which is CSRF.
func (s *Server) originAllowed(ctx *fasthttp.RequestCtx) bool {
	origin := ctx.Request.Header.Peek(fasthttp.HeaderOrigin)
	if len(origin) == 0 {
		return true
	}
	for _, o := range s.origins {
		if bytes.EqualFold(origin, o) {
			return true
		}
	}
	// Same host as the request: scheme://host[:port] against Host.
	i := bytes.Index(origin, []byte("://"))
	if i < 0 {
		return false // includes "null", sent by sandboxed frames and file: pages
	}
	return bytes.EqualFold(origin[i+3:], s.requestHost(ctx))
}

// requestHost is the host the browser asked for: X-Forwarded-Host from a
// trusted proxy, otherwise Host.
func (s *Server) requestHost(ctx *fasthttp.RequestCtx) []byte {
	if len(s.trusted) > 0 && s.trusted.contains(peerAddr(ctx)) {
		if h := ctx.Request.Header.Peek(fasthttp.HeaderXForwardedHost); len(h) > 0 {
			if i := bytes.IndexByte(h, ','); i >= 0 {
				h = h[:i]
			}
			return bytes.TrimSpace(h)
		}
	}
	return ctx.Request.Header.Host()
}

// checkJSONRequest guards a state-changing JSON endpoint.
func (s *Server) checkJSONRequest(c *fiber.Ctx) error {
	if !s.originAllowed(c.Context()) {
		return errBadOrigin
	}
	ct := c.Context().Request.Header.ContentType()
	if i := bytes.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	if !bytes.EqualFold(bytes.TrimSpace(ct), []byte(fiber.MIMEApplicationJSON)) {
		return errNeedJSON
	}
	return nil
}

// csrfField is the form field (or X-CSRF-Token header) that must repeat the
// CSRF cookie.
const csrfField = "csrf_token"

// CSRFToken returns the double-submit token to embed in an HTML form,
// issuing the slicehub.CSRFCookie when the browser has none yet. A
// cross-site page can make the browser send the cookie but cannot read it,
// so it cannot put the same value in the form.
func (s *Server) CSRFToken(c *fiber.Ctx) string {
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
func (s *Server) VerifyCSRF(c *fiber.Ctx) error {
	const op = "gateway.csrf"
	if !s.originAllowed(c.Context()) {
		return errBadOrigin
	}
	cookie := c.Cookies(slicehub.CSRFCookie)
	sent := c.Get("X-CSRF-Token")
	if sent == "" {
		sent = c.FormValue(csrfField)
	}
	if len(cookie) != 43 || subtle.ConstantTimeCompare([]byte(cookie), []byte(sent)) != 1 {
		return slicehub.Errorf(op, slicehub.KindForbidden, "csrf", "the form has expired; reload the page")
	}
	return nil
}

// parseOrigins normalises AllowedOrigins to what browsers send in Origin:
// scheme://host[:port], lowercase, no path.
func parseOrigins(list []string) ([][]byte, error) {
	var out [][]byte
	var bad []string
	for _, o := range list {
		o = strings.ToLower(strings.TrimSuffix(strings.TrimSpace(o), "/"))
		if o == "" {
			continue
		}
		u, err := url.Parse(o)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Path != "" ||
			u.RawQuery != "" || u.User != nil {
			bad = append(bad, o)
			continue
		}
		out = append(out, []byte(o))
	}
	if len(bad) > 0 {
		return out, fmt.Errorf("invalid allowed origins (ignored): %s", strings.Join(bad, ", "))
	}
	return out, nil
}
