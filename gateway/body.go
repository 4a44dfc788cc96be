package gateway

import (
	"io"

	"github.com/gofiber/fiber/v2"
	"github.com/valyala/fasthttp"

	"github.com/slicehub/slicehub"
	"github.com/slicehub/slicehub/gateway/loop"
)

// Request bodies. fasthttp reads a body of up to BufferedBodyLimit whole
// before the handler runs, as usual; a larger one, or a chunked one, it
// hands over as a stream while it arrives (StreamRequestBody). Then:
//
//   - the proxy forwards a declared-length stream to the slice as it
//     comes, refusing one declared over BodyLimit before reading a byte, so
//     an upload costs the gateway a buffer, not its size;
//   - a chunked body has no declared length: the proxy reads it whole, up
//     to BodyLimit, as the gateway always did;
//   - the gateway's own handlers get their bodies whole, up to BodyLimit,
//     unless a route asked for the stream (StreamBody: a backup restore);
//   - the connection closes after any streamed request. A handler that
//     answers before the whole body was read (a refusal, a failed slice)
//     leaves the rest of it in the connection, where it must never be read
//     as the next request: behind nginx, that next request can be another
//     user's.

var (
	errBodyTooLarge   = slicehub.Errorf("gateway.body", slicehub.KindTooLarge, "too_large", "the request body is too large")
	errBodyUnreadable = slicehub.Errorf("gateway.body", slicehub.KindInvalid, "invalid", "the request body could not be read")
)

// streamedBody reports whether fasthttp left the body unread for the
// handler: declared over BufferedBodyLimit, or chunked.
func (s *Server) streamedBody(ctx *fasthttp.RequestCtx) bool {
	cl := ctx.Request.Header.ContentLength()
	return cl == -1 || cl > s.cfg.BufferedBodyLimit
}

// headerReceived gives a request whose body will stream UploadTimeout,
// from the end of its head, to arrive in full; every other request keeps
// ReadTimeout. A body declared over BodyLimit keeps it too, since it is
// refused before a byte of it is read, unless its route streams it (a
// restore has no size limit).
func (s *Server) headerReceived(h *fasthttp.RequestHeader) fasthttp.RequestConfig {
	cl := h.ContentLength()
	if cl != -1 && cl <= s.cfg.BufferedBodyLimit {
		return fasthttp.RequestConfig{}
	}
	if cl <= s.cfg.BodyLimit || s.streamsBody(string(h.Method()), string(loop.OriginPath(h.RequestURI()))) {
		return fasthttp.RequestConfig{ReadTimeout: s.cfg.UploadTimeout}
	}
	return fasthttp.RequestConfig{}
}

// streamsBody reports whether a route given to StreamBody takes method
// and path.
func (s *Server) streamsBody(method, path string) bool {
	for _, r := range s.streamRoutes {
		if method == r.method && r.match(path) {
			return true
		}
	}
	return false
}

// bufferBody reads a streamed body whole, up to limit, for a handler that
// wants it in memory. A declared length over limit is refused unread.
func bufferBody(ctx *fasthttp.RequestCtx, limit int) error {
	stream := ctx.RequestBodyStream()
	if stream == nil {
		return nil
	}
	if ctx.Request.Header.ContentLength() > limit {
		return errBodyTooLarge
	}
	b, err := io.ReadAll(io.LimitReader(stream, int64(limit)+1))
	if err != nil {
		return errBodyUnreadable
	}
	if len(b) > limit {
		return errBodyTooLarge
	}
	ctx.Request.SetBody(b)
	return nil
}

// StreamBody lets the gateway's own handler for method and the paths that
// match take a streamed body (c.Context().RequestBodyStream()) instead of
// one read whole. Call it before serving.
func (s *Server) StreamBody(method string, match func(path string) bool) {
	s.streamRoutes = append(s.streamRoutes, streamRoute{method, match})
}

type streamRoute struct {
	method string
	match  func(path string) bool
}

// prepareBody runs before a Fiber handler: it reads a streamed body whole
// unless the route streams it (the proxy, or one given to StreamBody).
func (s *Server) prepareBody(c *fiber.Ctx, class routeClass) error {
	ctx := c.Context()
	if !s.streamedBody(ctx) {
		return nil
	}
	ctx.SetConnectionClose()
	if class == classAPI || class == classSocketIO {
		return nil // forward has its own rules
	}
	if s.streamsBody(c.Method(), c.Path()) {
		return nil
	}
	return bufferBody(ctx, s.cfg.BodyLimit)
}

// proxyBody applies the proxy's body rules before a request is forwarded.
func (s *Server) proxyBody(ctx *fasthttp.RequestCtx) error {
	switch cl := ctx.Request.Header.ContentLength(); {
	case cl > s.cfg.BodyLimit:
		return errBodyTooLarge
	case cl == -1:
		return bufferBody(ctx, s.cfg.BodyLimit)
	}
	return nil
}
