package gateway

import (
	"bytes"
	"context"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/fasthttp/websocket"
	"github.com/gofiber/fiber/v2"
	"github.com/valyala/fasthttp"

	"github.com/slicehub/slicehub"
	"github.com/slicehub/slicehub/gateway/accounts"
	"github.com/slicehub/slicehub/gateway/proxy"
	"github.com/slicehub/slicehub/gateway/wire"
)

// The proxy's hot path, per request:
//
//	cookie -> SHA-256 -> session cache (sharded, read-locked map)
//	slice id -> Routes.Lookup (the consul package's in-memory table)
//	slice id -> gateway token cache
//	address -> pooled fasthttp.HostClient
//	strip and set headers in place on the request Fiber already parsed
//	HostClient.Do(request, response) on the RequestCtx itself: no copy of
//	the request, and the response body streams from the slice's connection
//	to the browser's as fasthttp writes it.
//
// Nothing on it allocates in the common case or touches the database; a
// cache miss costs one read of PostgreSQL per token and per TTL, shared by
// concurrent requests.

var (
	hdrGatewayToken   = []byte(slicehub.HeaderGatewayToken)
	hdrUserID         = []byte(slicehub.HeaderUserID)
	hdrForwardedFor   = []byte(fasthttp.HeaderXForwardedFor)
	hdrForwardedProto = []byte(fasthttp.HeaderXForwardedProto)
	hdrForwardedHost  = []byte(fasthttp.HeaderXForwardedHost)
	protoHTTP         = []byte("http")
	protoHTTPS        = []byte("https")
)

// proxy forwards /api/* and /socket.io/* to the caller's own slice. Most
// such requests never get here: front takes them before Fiber does. This
// handler serves what front hands on, the WebSocket upgrades and any
// path Fiber routes here that front's exact match did not take.
func (s *Server) proxy(c *fiber.Ctx) error {
	sess, err := s.acc.Session(c)
	if err != nil {
		return err
	}
	if websocket.FastHTTPIsWebSocketUpgrade(c.Context()) {
		return s.proxyWebSocket(c, sess)
	}
	return s.forward(c.Context(), sess, classOf(c.Path()), time.Now())
}

// forward sends one plain HTTP request to sess's slice and the answer back.
func (s *Server) forward(ctx *fasthttp.RequestCtx, sess *accounts.Session, class routeClass, start time.Time) error {
	if !wire.SafeMethod(&ctx.Request.Header) && !s.origins.Allowed(ctx) {
		return wire.ErrBadOrigin
	}
	route, token, err := s.target(sess)
	if err != nil {
		return err
	}
	if err := s.proxyBody(ctx); err != nil {
		return err
	}
	up := s.upstreams.Get(route.Addr, start)
	s.prepareRequest(ctx, sess, token, route.Addr)
	s.metrics.overhead.Observe(time.Since(start).Seconds())
	resp := &ctx.Response
	if err := up.HC.DoTimeout(&ctx.Request, resp, s.cfg.ProxyTimeout); err != nil {
		resp.Reset()
		s.proxyLog.Warn("slice request failed", "slice_id", sess.SliceID, "addr", route.Addr, "err", err)
		return proxy.ClientError(err)
	}
	proxy.StripResponse(&resp.Header)
	if resp.IsBodyStream() && resp.Header.ContentLength() < 0 {
		// An event stream may send headers long before its first event; the
		// browser must see them now, not with the first chunk.
		resp.ImmediateHeaderFlush = true
	}
	s.metrics.proxyLatency[class].Observe(time.Since(start).Seconds())
	return nil
}

// target is where sess's requests go, or why they cannot go anywhere now.
func (s *Server) target(sess *accounts.Session) (slicehub.Route, []byte, error) {
	switch sess.State {
	case slicehub.StateAssigned:
	case slicehub.StateSuspended:
		return slicehub.Route{}, nil, proxy.ErrSuspended
	case slicehub.StateFailed, slicehub.StateRetired:
		return slicehub.Route{}, nil, proxy.ErrSliceDown
	case slicehub.StateProvisioning, slicehub.StateWarm:
		// Not yet bound and healthy (a slice is warm only until its claim
		// commits): it is on its way.
		return slicehub.Route{}, nil, proxy.ErrSliceStarting
	default:
		// Only "no slice yet" leaves every case above unnamed: the
		// exhaustive analyzer (make lint) makes a new state name itself
		// here rather than fall into this branch.
		if sess.SliceID == 0 {
			return slicehub.Route{}, nil, proxy.ErrSlicePending
		}
		s.proxyLog.Error("slice in a state the gateway does not know", "slice_id", sess.SliceID, "state", sess.State)
		return slicehub.Route{}, nil, proxy.ErrSliceDown
	}
	route, ok := s.deps.Routes.Lookup(sess.SliceID)
	if !ok || route.Addr == "" {
		return slicehub.Route{}, nil, proxy.ErrSliceStarting // dispatched, not yet passing its check
	}
	if route.SliceID != sess.SliceID {
		// The route table is keyed by slice id; a mismatch is a bug there, and
		// following it would hand this user someone else's workspace.
		s.proxyLog.Error("route table returned another slice", "want", sess.SliceID, "got", route.SliceID)
		return slicehub.Route{}, nil, proxy.ErrSliceStarting
	}
	token, err := s.gatewayToken(sess.SliceID)
	if err != nil {
		return slicehub.Route{}, nil, err
	}
	return route, token, nil
}

// forwarded is what the gateway tells a slice about the browser's request.
type forwarded struct {
	client netip.Addr
	proto  []byte
	host   []byte
}

// forwardedOf reads the browser's address, scheme and host, believing
// X-Forwarded-* only from a trusted proxy. host is copied into buf, because
// stripping headers afterwards moves the bytes that Peek points at.
func (s *Server) forwardedOf(ctx *fasthttp.RequestCtx, buf []byte) forwarded {
	h := &ctx.Request.Header
	client, viaProxy := s.trusted.ClientAddr(ctx)
	f := forwarded{client: client, proto: protoHTTP, host: append(buf, h.Host()...)}
	if ctx.IsTLS() {
		f.proto = protoHTTPS
	}
	if viaProxy {
		if p := h.Peek(fasthttp.HeaderXForwardedProto); bytes.EqualFold(p, protoHTTPS) {
			f.proto = protoHTTPS
		} else if bytes.EqualFold(p, protoHTTP) {
			f.proto = protoHTTP
		}
		if fh := h.Peek(fasthttp.HeaderXForwardedHost); len(fh) > 0 {
			if i := bytes.IndexByte(fh, ','); i >= 0 {
				fh = fh[:i]
			}
			f.host = append(buf, bytes.TrimSpace(fh)...)
		}
	}
	return f
}

// prepareRequest rewrites the browser's request, in place, into the slice's.
// X-Forwarded-For carries the one client address the gateway resolved, not
// the chain: the slice has no proxies of its own to tell apart.
func (s *Server) prepareRequest(ctx *fasthttp.RequestCtx, sess *accounts.Session, token []byte, addr string) {
	h := &ctx.Request.Header
	scratch := scratchPool.Get().(*[]byte)
	defer scratchPool.Put(scratch)
	fwd := s.forwardedOf(ctx, (*scratch)[:0])

	proxy.StripRequest(h)
	if !h.IsHTTP11() {
		// nginx speaks HTTP/1.0 upstream unless told otherwise; forwarding
		// 1.0 would close every connection to the slice after one request.
		h.SetProtocol("HTTP/1.1")
	}
	h.ResetConnectionClose()
	if len(h.Host()) == 0 {
		h.SetHost(addr)
	}
	// Keep the Host the browser sent even for an absolute request-target.
	ctx.Request.UseHostHeader = true

	h.SetCanonical(hdrGatewayToken, token)
	h.SetCanonical(hdrUserID, sess.UserIDHeader)
	h.SetCanonical(hdrForwardedFor, fwd.client.AppendTo(fwd.host[len(fwd.host):]))
	h.SetCanonical(hdrForwardedProto, fwd.proto)
	if len(fwd.host) > 0 {
		h.SetCanonical(hdrForwardedHost, fwd.host)
	}
}

// scratchPool holds the buffers prepareRequest formats header values in.
// fasthttp copies the values, but its setters make any buffer passed to
// them escape, so a stack array would be a heap allocation per request.
var scratchPool = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// gatewayToken returns the token to present to sliceID.
func (s *Server) gatewayToken(sliceID int64) ([]byte, error) {
	const op = "gateway.gateway_token"
	t := s.tokens
	if tok, ok := t.Peek(sliceID, s.now()); ok {
		return tok, nil
	}
	v, err, _ := t.Flight().Do(strconv.FormatInt(sliceID, 10), func() (any, error) {
		started, seq := s.now(), s.acc.Sessions.Snapshot()
		ctx, cancel := context.WithTimeout(context.Background(), s.cfg.BackendTimeout)
		defer cancel()
		tok, err := s.deps.Slices.GatewayToken(ctx, sliceID)
		if err != nil {
			return nil, slicehub.Wrap(op, slicehub.KindInternal, err)
		}
		if tok == "" {
			return nil, slicehub.Errorf(op, slicehub.KindInternal, "", "slice %d has no gateway token", sliceID)
		}
		b := []byte(tok)
		if !s.acc.Sessions.StaleSince(seq, 0, sliceID) {
			t.Put(sliceID, b, started.Add(t.TTL()))
		}
		return b, nil
	})
	if err != nil {
		return nil, err
	}
	return v.([]byte), nil
}
