package wire

import (
	"bytes"
	"fmt"
	"net/url"
	"strings"

	"github.com/gofiber/fiber/v2"
	"github.com/valyala/fasthttp"
)

// Origins are the origins a state-changing request may come from: the
// allowed ones, and the gateway's own host as the browser asked for it.
type Origins struct {
	list    [][]byte
	trusted TrustedProxies
}

// NewOrigins checks requests against list (ParseOrigins's) and the
// request's own host, believing X-Forwarded-Host from trusted only.
func NewOrigins(list [][]byte, trusted TrustedProxies) *Origins {
	return &Origins{list: list, trusted: trusted}
}

// Listed reports whether origin is one of the allowed origins.
func (o *Origins) Listed(origin string) bool {
	for _, a := range o.list {
		if string(a) == origin {
			return true
		}
	}
	return false
}

// Allowed reports whether the Origin header is acceptable. A missing
// Origin is acceptable: browsers send one on every cross-origin request and
// on every WebSocket handshake, so its absence means a same-origin request
// from an older browser or a non-browser client, neither of which is CSRF.
func (o *Origins) Allowed(ctx *fasthttp.RequestCtx) bool {
	origin := ctx.Request.Header.Peek(fasthttp.HeaderOrigin)
	if len(origin) == 0 {
		return true
	}
	for _, a := range o.list {
		if bytes.EqualFold(origin, a) {
			return true
		}
	}
	// Same host as the request: scheme://host[:port] against Host.
	i := bytes.Index(origin, []byte("://"))
	if i < 0 {
		return false // includes "null", sent by sandboxed frames and file: pages
	}
	return bytes.EqualFold(origin[i+3:], o.RequestHost(ctx))
}

// RequestHost is the host the browser asked for: X-Forwarded-Host from a
// trusted proxy, otherwise Host.
func (o *Origins) RequestHost(ctx *fasthttp.RequestCtx) []byte {
	if len(o.trusted) > 0 && o.trusted.Contains(PeerAddr(ctx)) {
		if h := ctx.Request.Header.Peek(fasthttp.HeaderXForwardedHost); len(h) > 0 {
			if i := bytes.IndexByte(h, ','); i >= 0 {
				h = h[:i]
			}
			return bytes.TrimSpace(h)
		}
	}
	return ctx.Request.Header.Host()
}

// CheckJSON guards a state-changing JSON endpoint.
func (o *Origins) CheckJSON(c *fiber.Ctx) error {
	if !o.Allowed(c.Context()) {
		return ErrBadOrigin
	}
	ct := c.Context().Request.Header.ContentType()
	if i := bytes.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	if !bytes.EqualFold(bytes.TrimSpace(ct), []byte(fiber.MIMEApplicationJSON)) {
		return ErrNeedJSON
	}
	return nil
}

// ParseOrigins normalises AllowedOrigins to what browsers send in Origin:
// scheme://host[:port], lowercase, no path.
func ParseOrigins(list []string) ([][]byte, error) {
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

// SafeMethod: GET, HEAD and OPTIONS change nothing, so they need no
// Origin check.
func SafeMethod(h *fasthttp.RequestHeader) bool {
	return h.IsGet() || h.IsHead() || h.IsOptions()
}
