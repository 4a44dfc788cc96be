package gateway

import (
	"bytes"
	"fmt"
	"runtime/debug"
	"time"

	"github.com/fasthttp/websocket"
	"github.com/valyala/fasthttp"

	"github.com/slicehub/slicehub"
)

// front is the public listener's handler, in front of Fiber: it forwards
// plain proxied requests itself and hands everything else to Fiber.
//
// Why: a proxied request is the one the browser sends on every keystroke,
// and Fiber's per-request work (its context, the router's walk over every
// route, the middleware chain) is a fifth of the gateway's CPU for it. The
// proxy needs none of it; it reads a cookie, two caches and the route
// table, all on the fasthttp request. Measured on the proxy comparison
// (gateway/compare_test.go): see the README's figures.
//
// front takes a request only when Fiber would have routed it to s.proxy
// anyway, so the two paths answer alike: the raw path (what Fiber routes
// on) under /api or /socket.io in the exact case, a method Fiber knows,
// and no WebSocket upgrade (those stay with Fiber's handler, which hijacks
// the connection). Every error is written by the same writeError, through
// a Fiber context borrowed for that moment only.
func (s *Server) front(next fasthttp.RequestHandler) fasthttp.RequestHandler {
	return func(ctx *fasthttp.RequestCtx) {
		class, ok := frontClass(ctx.URI().PathOriginal())
		if !ok || !knownMethod(ctx.Method()) || websocket.FastHTTPIsWebSocketUpgrade(ctx) {
			next(ctx)
			return
		}
		start := time.Now()
		defer func() {
			if r := recover(); r != nil {
				ctx.Response.Reset()
				s.frontError(ctx, &slicehub.Error{Op: "gateway.panic", Kind: slicehub.KindInternal,
					Err: fmt.Errorf("panic: %v\n%s", r, debug.Stack())})
				s.metrics.countRequest(class, ctx.Response.StatusCode())
			}
		}()
		if s.streamedBody(ctx) {
			ctx.SetConnectionClose() // see body.go
		}
		sess, err := s.acc.SessionOf(ctx)
		if err == nil {
			err = s.forward(ctx, sess, class, start)
		}
		if err != nil {
			s.frontError(ctx, err)
		}
		s.metrics.countRequest(class, ctx.Response.StatusCode())
	}
}

// frontError answers err exactly as a Fiber handler's error would be.
func (s *Server) frontError(ctx *fasthttp.RequestCtx, err error) {
	c := s.app.AcquireCtx(ctx)
	defer s.app.ReleaseCtx(c)
	if werr := s.writeError(c, err); werr != nil {
		s.proxyLog.Error("writing an error answer", "err", werr)
	}
}

var (
	prefixAPI      = []byte("/api")
	prefixSocketIO = []byte("/socket.io")
)

// frontClass tells whether front may take a request for path, the raw
// path as sent, which is what Fiber's router matches: "/api", "/api/...",
// "/socket.io", "/socket.io/...". Anything else, including another case
// or a path that only normalises to one of these, goes through Fiber.
func frontClass(path []byte) (routeClass, bool) {
	switch {
	case under(path, prefixAPI):
		return classAPI, true
	case under(path, prefixSocketIO):
		return classSocketIO, true
	}
	return 0, false
}

func under(path, prefix []byte) bool {
	return bytes.HasPrefix(path, prefix) && (len(path) == len(prefix) || path[len(prefix)] == '/')
}

// knownMethod is the set of methods Fiber routes; it answers any other
// with 501 before a handler runs, and front must not forward what Fiber
// would refuse.
func knownMethod(m []byte) bool {
	switch string(m) {
	case fasthttp.MethodGet, fasthttp.MethodHead, fasthttp.MethodPost, fasthttp.MethodPut,
		fasthttp.MethodDelete, fasthttp.MethodPatch, fasthttp.MethodOptions, fasthttp.MethodConnect, fasthttp.MethodTrace:
		return true
	}
	return false
}
