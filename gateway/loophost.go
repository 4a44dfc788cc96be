package gateway

import (
	"net"
	"net/netip"
	"time"

	"github.com/fasthttp/websocket"
	"github.com/gofiber/fiber/v2/utils"
	"github.com/valyala/fasthttp"

	"github.com/slicehub/slicehub"
	"github.com/slicehub/slicehub/gateway/accounts"
	"github.com/slicehub/slicehub/gateway/loop"
	"github.com/slicehub/slicehub/gateway/proxy"
	"github.com/slicehub/slicehub/gateway/wire"
)

// The event loop (package loop) proxies plain /api and /socket.io requests
// without a goroutine per connection. This file is its policy: which
// requests it may take, and what it may decide alone.
//
// The loop decides only from memory: the session cache, the route table
// and the gateway-token cache. Any request it would refuse, or cannot
// route from memory twice in a row, is handed, unread, to the fasthttp
// server behind it, whose front and Fiber paths answer exactly as they
// always have.

// loopHost is the Server as the event loop sees it.
type loopHost struct{ s *Server }

// newLoop starts the event loops, which hand what they do not serve to
// handOff (the fasthttp server's listener).
func (s *Server) newLoop(handOff func(net.Conn) bool) (*loop.Engine, error) {
	cfg := loop.Config{
		ReadTimeout:             s.cfg.ReadTimeout,
		IdleTimeout:             s.cfg.IdleTimeout,
		WriteTimeout:            s.cfg.WriteTimeout,
		ProxyTimeout:            s.cfg.ProxyTimeout,
		DialTimeout:             s.cfg.DialTimeout,
		UpstreamIdleConnTimeout: s.cfg.UpstreamIdleConnTimeout,
		MaxHeaderBytes:          s.cfg.MaxHeaderBytes,
		BufferedBodyLimit:       s.cfg.BufferedBodyLimit,
		UpstreamMaxConns:        s.cfg.UpstreamMaxConns,
	}
	if srv := s.app.Server(); !srv.NoDefaultServerHeader {
		cfg.ServerName = []byte(srv.Name)
		if len(cfg.ServerName) == 0 {
			cfg.ServerName = []byte("fasthttp")
		}
	}
	m := s.metrics
	lm := loop.Metrics{
		Conns:    m.loopConns,
		HandOffs: m.loopHandOffs,
		Panics:   m.loopPanics,
		Overhead: m.overhead,
		Count:    func(class uint8, status int) { m.countRequest(routeClass(class), status) },
		Latency: func(class uint8, d time.Duration) {
			m.proxyLatency[class].Observe(d.Seconds())
		},
	}
	return loop.New(cfg, loopHost{s}, lm, s.proxyLog, func(nc net.Conn, pending []byte) bool {
		return handOff(&replayConn{Conn: nc, pending: pending})
	})
}

// Decide classifies the request parsed into ctx, from memory only. Its
// checks are front's and forward's, in the same order; where one of them
// would fail, the verdict is HandOff so that they fail there.
func (h loopHost) Decide(ctx *fasthttp.RequestCtx, d *loop.Decision) loop.Verdict {
	s := h.s
	hdr := &ctx.Request.Header
	// What front routes on: the path as fasthttp parses the URI with the
	// Host, which is empty when they do not parse (a Host with a space).
	class, ok := frontClass(ctx.URI().PathOriginal())
	if !ok || !knownMethod(hdr.Method()) || websocket.FastHTTPIsWebSocketUpgrade(ctx) {
		return loop.HandOff
	}
	d.Class = uint8(class)
	hash, ok := accounts.ParseToken(utils.UnsafeString(hdr.Cookie(slicehub.SessionCookie)))
	if !ok {
		return loop.HandOff // 401, from the server
	}
	sess := s.acc.Sessions.Get(hash, s.now())
	if sess == nil {
		client, _ := s.trusted.ClientAddr(ctx)
		d.Resolve = func() { s.loopResolve(hash, client) }
		return loop.Resolve
	}
	if !wire.SafeMethod(hdr) && !s.origins.Allowed(ctx) {
		return loop.HandOff
	}
	if sess.State != slicehub.StateAssigned {
		return loop.HandOff // 402, 502 or 503
	}
	route, ok := s.deps.Routes.Lookup(sess.SliceID)
	if !ok || route.Addr == "" || route.SliceID != sess.SliceID {
		return loop.HandOff
	}
	token, ok := s.tokens.Peek(sess.SliceID, s.now())
	if !ok {
		client, _ := s.trusted.ClientAddr(ctx)
		d.Resolve = func() { s.loopResolve(hash, client) }
		return loop.Resolve
	}
	d.SliceID, d.Addr, d.Session, d.Token = sess.SliceID, route.Addr, sess, token
	return loop.Forward
}

// Prepare rewrites the request as the server path's forward does.
func (h loopHost) Prepare(ctx *fasthttp.RequestCtx, d *loop.Decision) {
	h.s.prepareRequest(ctx, d.Session.(*accounts.Session), d.Token, d.Addr)
}

// AnswerError answers as front would.
func (h loopHost) AnswerError(ctx *fasthttp.RequestCtx, err error) {
	h.s.frontError(ctx, proxy.ClientError(err))
}

// StripResponse is the server path's (package proxy).
func (loopHost) StripResponse(hdr *fasthttp.ResponseHeader) { proxy.StripResponse(hdr) }

// loopResolve fills the caches that Decide missed, as sessionOf and
// target would, and reports nothing: the loop decides again from the
// caches, and hands the request on if they are still empty (a refused
// token, a throttled address, a database error), so that the server
// answers it, and counts a bad token, exactly once.
func (s *Server) loopResolve(hash accounts.TokenHash, client netip.Addr) {
	if s.acc.BadSession.Wait(accounts.IPKey(client)) > 0 {
		return
	}
	sess, err := s.acc.LoadSession(hash)
	if err != nil || sess.State != slicehub.StateAssigned {
		return
	}
	_, _ = s.gatewayToken(sess.SliceID)
}
