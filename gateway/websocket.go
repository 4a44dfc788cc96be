package gateway

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fasthttp/websocket"
	"github.com/gofiber/fiber/v2"
	"github.com/valyala/fasthttp"

	"github.com/slicehub/slicehub"
	"github.com/slicehub/slicehub/gateway/accounts"
	"github.com/slicehub/slicehub/gateway/proxy"
	"github.com/slicehub/slicehub/gateway/wire"
)

// WebSockets cannot go through HostClient (nor Fiber's proxy middleware):
// the gateway dials the slice as a WebSocket client first, so that a refusal
// reaches the browser as an HTTP answer, then upgrades the browser and pumps
// frames both ways. Each side gets a read limit, a read deadline kept alive
// by pings, and a write deadline on every write; a close frame from one side
// is forwarded to the other, so close codes travel end to end.

// Close codes the gateway itself sends.
const (
	closeSliceChanged = websocket.CloseServiceRestart // the user's slice moved or stopped: reconnect
	closeSignedOut    = websocket.ClosePolicyViolation
	closeShutdown     = websocket.CloseGoingAway
)

var prefixSecWebSocket = []byte("Sec-Websocket-")

func (s *Server) proxyWebSocket(c *fiber.Ctx, sess *accounts.Session) error {
	const op = "gateway.websocket"
	ctx := c.Context()
	if !s.origins.Allowed(ctx) {
		return wire.ErrBadOrigin // cross-site WebSocket hijacking: browsers send Origin on every handshake
	}
	h := &ctx.Request.Header
	if !h.IsGet() || !bytes.Equal(h.Peek("Sec-Websocket-Version"), []byte("13")) ||
		len(h.Peek("Sec-Websocket-Key")) == 0 {
		return slicehub.Errorf(op, slicehub.KindInvalid, "bad_handshake", "not a valid WebSocket handshake")
	}
	route, token, err := s.target(sess)
	if err != nil {
		return err
	}

	// No Proxy: a zero Dialer ignores HTTP_PROXY, as it must between the
	// gateway and a slice. The context bounds the whole handshake.
	dialer := websocket.Dialer{
		NetDialContext:  (&net.Dialer{Timeout: s.cfg.DialTimeout}).DialContext,
		Subprotocols:    parseTokenList(h.Peek("Sec-Websocket-Protocol")),
		ReadBufferSize:  s.cfg.WSReadBufferSize,
		WriteBufferSize: s.cfg.WSBufferSize,
		WriteBufferPool: &s.wsWritePool,
	}
	target := "ws://" + route.Addr + string(ctx.URI().PathOriginal())
	if q := ctx.URI().QueryString(); len(q) > 0 {
		target += "?" + string(q)
	}
	dctx, cancel := context.WithTimeout(context.Background(), s.cfg.ProxyTimeout)
	backend, resp, err := dialer.DialContext(dctx, target, s.backendHeader(ctx, sess, token))
	cancel()
	if err != nil {
		if resp != nil && resp.StatusCode >= 400 && resp.StatusCode < 500 {
			// The slice refused the handshake (socket.io answers 400 for an
			// unknown session id, and its client relies on seeing that).
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
			if ct := resp.Header.Get(fiber.HeaderContentType); ct != "" {
				c.Set(fiber.HeaderContentType, ct)
			}
			proxy.SetSliceAnswerPolicy(&c.Response().Header) // the slice's words, on the platform origin
			return c.Status(resp.StatusCode).Send(body)
		}
		s.wsLog.Warn("slice refused websocket", "slice_id", sess.SliceID, "addr", route.Addr, "err", err)
		if proxy.IsTimeout(err) {
			return proxy.ErrSliceTimeout
		}
		return proxy.ErrSliceFailed
	}

	subprotocols := []string{} // empty, not nil: nil would make the upgrader echo a response header
	if p := backend.Subprotocol(); p != "" {
		subprotocols = []string{p}
	}
	// Registered before the upgrade, so that a logout or an invalidation
	// racing with the handshake still finds it (its kill is buffered).
	t := &tunnel{userID: sess.User.ID, sliceID: sess.SliceID, hash: sess.Hash}
	if !s.tunnels.add(t) {
		backend.Close()
		return wire.WithRetry(op, slicehub.KindUnavailable, "draining", "the gateway is restarting", time.Second)
	}
	// 0: handshake answered, 1: tunnel running, 2: abandoned. The browser's
	// connection is hijacked only after the 101 is written; if that write
	// fails the tunnel never runs, and the slice side must not leak.
	var state atomic.Int32
	upgrader := websocket.FastHTTPUpgrader{
		ReadBufferSize:  s.cfg.WSReadBufferSize,
		WriteBufferSize: s.cfg.WSBufferSize,
		WriteBufferPool: &s.wsWritePool,
		Subprotocols:    subprotocols,
		CheckOrigin:     func(*fasthttp.RequestCtx) bool { return true }, // checked above against our own list
		Error:           func(*fasthttp.RequestCtx, int, error) {},       // answered below, as JSON
	}
	err = upgrader.Upgrade(ctx, func(client *websocket.Conn) {
		if !state.CompareAndSwap(0, 1) {
			client.Close()
			return
		}
		s.runTunnel(t, client, backend)
	})
	if err != nil {
		s.tunnels.remove(t)
		backend.Close()
		return slicehub.Errorf(op, slicehub.KindInvalid, "bad_handshake", "not a valid WebSocket handshake")
	}
	time.AfterFunc(s.cfg.WSWriteWait, func() {
		if state.CompareAndSwap(0, 2) {
			backend.Close()
			s.tunnels.remove(t)
		}
	})
	return nil
}

// backendHeader is the handshake header for the slice: the browser's own
// headers minus hop-by-hop, Sec-WebSocket-* (the dialer makes its own) and
// anything spoofable, the cookies minus the gateway's own, then the gateway's headers.
func (s *Server) backendHeader(ctx *fasthttp.RequestCtx, sess *accounts.Session, token []byte) http.Header {
	h := &ctx.Request.Header
	var hostBuf [256]byte
	fwd := s.forwardedOf(ctx, hostBuf[:0])
	out := make(http.Header, 16)
	h.VisitAll(func(k, v []byte) {
		if proxy.IsDroppedRequestHeader(k) || hasPrefixFold(k, prefixSecWebSocket) ||
			bytes.EqualFold(k, []byte("Cookie")) || bytes.EqualFold(k, []byte("Host")) ||
			bytes.EqualFold(k, []byte("Content-Length")) {
			return
		}
		key := textproto.CanonicalMIMEHeaderKey(string(k))
		out[key] = append(out[key], string(v))
	})
	var cookies []byte
	h.VisitAllCookie(func(k, v []byte) {
		if proxy.IsGatewayCookie(k, v) {
			return
		}
		if len(cookies) > 0 {
			cookies = append(cookies, "; "...)
		}
		cookies = append(append(append(cookies, k...), '='), v...)
	})
	if len(cookies) > 0 {
		out["Cookie"] = []string{string(cookies)}
	}
	if len(fwd.host) > 0 {
		out["Host"] = []string{string(fwd.host)}
	}
	out[slicehub.HeaderGatewayToken] = []string{string(token)}
	out[slicehub.HeaderUserID] = []string{string(sess.UserIDHeader)}
	out[fasthttp.HeaderXForwardedFor] = []string{fwd.client.String()}
	out[fasthttp.HeaderXForwardedProto] = []string{string(fwd.proto)}
	if len(fwd.host) > 0 {
		out[fasthttp.HeaderXForwardedHost] = []string{string(fwd.host)}
	}
	return out
}

func hasPrefixFold(b, prefix []byte) bool {
	return len(b) >= len(prefix) && bytes.EqualFold(b[:len(prefix)], prefix)
}

// parseTokenList splits a comma-separated header value.
func parseTokenList(v []byte) []string {
	var out []string
	for _, p := range bytes.Split(v, []byte(",")) {
		if p = bytes.TrimSpace(p); len(p) > 0 {
			out = append(out, string(p))
		}
	}
	return out
}

// tunnel is one proxied WebSocket, known to the server so that an
// invalidation, a logout or a shutdown can end it.
type tunnel struct {
	userID  int64
	sliceID int64
	hash    accounts.TokenHash

	mu     sync.Mutex
	killed int            // close code asked for; 0: none yet
	onKill func(code int) // set while the tunnel runs
}

// end asks the tunnel to close with code; the first request wins. A request
// that comes during the handshake is kept and acted on once the tunnel runs.
func (t *tunnel) end(code int) {
	t.mu.Lock()
	if t.killed != 0 {
		t.mu.Unlock()
		return
	}
	t.killed = code
	f := t.onKill
	t.mu.Unlock()
	if f != nil {
		f(code)
	}
}

type tunnels struct {
	mu     sync.Mutex
	m      map[*tunnel]struct{}
	wg     sync.WaitGroup
	closed bool
}

func (ts *tunnels) add(t *tunnel) bool {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if ts.closed {
		return false
	}
	if ts.m == nil {
		ts.m = make(map[*tunnel]struct{})
	}
	ts.m[t] = struct{}{}
	ts.wg.Add(1)
	return true
}

func (ts *tunnels) remove(t *tunnel) {
	ts.mu.Lock()
	delete(ts.m, t)
	ts.mu.Unlock()
	ts.wg.Done()
}

// matching returns the open tunnels for which f is true.
func (ts *tunnels) matching(f func(*tunnel) bool) []*tunnel {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	var out []*tunnel
	for t := range ts.m {
		if f(t) {
			out = append(out, t)
		}
	}
	return out
}

// closeAll ends every tunnel, including those whose handshake is still
// being answered, and refuses new ones.
func (ts *tunnels) closeAll(code int) {
	ts.mu.Lock()
	ts.closed = true
	for t := range ts.m {
		t.end(code)
	}
	ts.mu.Unlock()
}

// runTunnel pumps frames both ways until either side closes, on the
// hijacked connection's own goroutine plus one more. Pings, a kill and the
// close grace are timers rather than a third goroutine with a select: an
// idle tunnel is mostly its goroutines' stacks and its buffers, and with
// thousands of idle WebSockets that difference is tens of megabytes.
func (s *Server) runTunnel(t *tunnel, client, backend *websocket.Conn) {
	cfg := &s.cfg
	defer s.tunnels.remove(t)
	s.metrics.wsOpen.Inc()
	defer s.metrics.wsOpen.Dec()

	for _, conn := range []*websocket.Conn{client, backend} {
		conn.SetReadLimit(cfg.WSReadLimit)
		_ = conn.SetReadDeadline(time.Now().Add(cfg.WSPongWait))
		conn.SetPongHandler(func(string) error { return conn.SetReadDeadline(time.Now().Add(cfg.WSPongWait)) })
		// No automatic echo: the pump forwards a close frame to the other
		// side, and that side's answer comes back the same way.
		conn.SetCloseHandler(func(int, string) error { return nil })
	}

	// Once a side has closed (or the tunnel is killed), the other side has
	// WSCloseGrace to answer; then both connections are closed, which ends
	// whichever pump still waits.
	var graceOnce sync.Once
	var grace *time.Timer
	var graceMu sync.Mutex
	startGrace := func() {
		graceOnce.Do(func() {
			graceMu.Lock()
			grace = time.AfterFunc(cfg.WSCloseGrace, func() {
				client.Close()
				backend.Close()
			})
			graceMu.Unlock()
		})
	}
	// WriteControl may be called concurrently with the pumps' writes.
	var ping *time.Timer
	var pingMu sync.Mutex
	pingMu.Lock()
	ping = time.AfterFunc(cfg.WSPingInterval, func() {
		deadline := time.Now().Add(cfg.WSWriteWait)
		_ = client.WriteControl(websocket.PingMessage, nil, deadline)
		_ = backend.WriteControl(websocket.PingMessage, nil, deadline)
		pingMu.Lock()
		if ping != nil {
			ping.Reset(cfg.WSPingInterval)
		}
		pingMu.Unlock()
	})
	pingMu.Unlock()
	kill := func(code int) {
		deadline := time.Now().Add(cfg.WSWriteWait)
		_ = client.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, ""), deadline)
		_ = backend.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseGoingAway, ""), deadline)
		startGrace()
	}
	t.mu.Lock()
	t.onKill = kill
	pending := t.killed
	t.mu.Unlock()
	if pending != 0 {
		kill(pending) // asked for during the handshake
	}

	// Whichever pump ends first has forwarded a close: the other side has
	// the grace to answer it.
	done := make(chan struct{})
	go func() {
		s.pump(backend, client)
		startGrace()
		close(done)
	}()
	s.pump(client, backend)
	startGrace()
	<-done

	pingMu.Lock()
	ping.Stop()
	ping = nil
	pingMu.Unlock()
	startGrace()
	graceMu.Lock()
	grace.Stop()
	graceMu.Unlock()
	t.mu.Lock()
	t.onKill = nil
	t.mu.Unlock()
	// Whoever has not had a close frame yet gets one (ErrCloseSent otherwise),
	// so no peer is left to report 1006.
	deadline := time.Now().Add(cfg.WSWriteWait)
	_ = client.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseGoingAway, ""), deadline)
	_ = backend.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseGoingAway, ""), deadline)
	client.Close()
	backend.Close()
}

// readErr remembers a read error so that pump can tell a failing source
// from a failing destination inside io.Copy.
type readErr struct {
	r   io.Reader
	err error
}

func (r *readErr) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if err != nil && err != io.EOF {
		r.err = err
	}
	return n, err
}

// pump copies messages from src to dst until src closes or fails, then
// forwards the close. A message streams through frame by frame: nothing is
// buffered beyond each connection's own buffers, and the read limit bounds
// a message.
//
// The read deadline follows the messages, but pushing it is a timer update
// in the runtime's poller (3% of the gateway's CPU in the echo benchmark's
// profile, with the clock reads): it is pushed only once an eighth of
// WSPongWait has passed since the last push, so a silent peer is cut
// between 7/8 of WSPongWait and WSPongWait after its last message. The
// write deadline is only stored here (the library applies it to each
// write), and one clock read serves both.
func (s *Server) pump(src, dst *websocket.Conn) {
	cfg := &s.cfg
	var pushed time.Time
	for {
		mt, r, err := src.NextReader()
		if err != nil {
			_ = dst.WriteControl(websocket.CloseMessage, closeFrameFor(err), time.Now().Add(cfg.WSWriteWait))
			return
		}
		now := time.Now()
		if now.Sub(pushed) >= cfg.WSPongWait/8 {
			_ = src.SetReadDeadline(now.Add(cfg.WSPongWait))
			pushed = now
		}
		_ = dst.SetWriteDeadline(now.Add(cfg.WSWriteWait))
		w, err := dst.NextWriter(mt)
		if err != nil {
			_ = src.WriteControl(websocket.CloseMessage, closeFrameFor(err), time.Now().Add(cfg.WSWriteWait))
			return
		}
		rr := readErr{r: r}
		if _, err = io.Copy(w, &rr); err == nil {
			err = w.Close()
		}
		if rr.err != nil {
			// Leave the partial message unfinished: the close frame below ends it.
			_ = dst.WriteControl(websocket.CloseMessage, closeFrameFor(rr.err), time.Now().Add(cfg.WSWriteWait))
			return
		}
		if err != nil {
			_ = src.WriteControl(websocket.CloseMessage, closeFrameFor(err), time.Now().Add(cfg.WSWriteWait))
			return
		}
	}
}

// closeFrameFor is the close frame that tells the other side how this side
// ended. 1005 and 1006 are codes a peer reports locally and must never be
// sent: a close without status becomes 1000, a vanished peer 1001.
func closeFrameFor(err error) []byte {
	var ce *websocket.CloseError
	if errors.As(err, &ce) {
		switch ce.Code {
		case websocket.CloseNoStatusReceived:
			return websocket.FormatCloseMessage(websocket.CloseNormalClosure, "")
		case websocket.CloseAbnormalClosure, websocket.CloseTLSHandshake:
			return websocket.FormatCloseMessage(websocket.CloseGoingAway, "")
		default:
			return websocket.FormatCloseMessage(ce.Code, ce.Text)
		}
	}
	return websocket.FormatCloseMessage(websocket.CloseGoingAway, "")
}

// recheckTunnels re-reads the slice of each tunnel matching f, and ends
// those whose user no longer has that slice assigned. Invalidations come for
// any change of the slice row, most of which (a restart count, a timestamp)
// must not cut a live connection.
func (s *Server) recheckTunnels(f func(*tunnel) bool) {
	list := s.tunnels.matching(f)
	if len(list) == 0 {
		return
	}
	go func() {
		for _, t := range list {
			ctx, cancel := context.WithTimeout(context.Background(), s.cfg.BackendTimeout)
			// The session first: a logout or a disable on another replica
			// reaches this one as an invalidation of the user, and the
			// WebSockets of a session that ended must end with it.
			u, err := s.deps.Accounts.SessionUser(ctx, t.hash[:], s.cfg.SessionIdle)
			if k := slicehub.KindOf(err); err != nil && (k == slicehub.KindUnauthorized || k == slicehub.KindNotFound) ||
				err == nil && u.DisabledAt != nil {
				cancel()
				t.end(closeSignedOut)
				continue
			}
			sl, err := s.deps.Slices.SliceForUser(ctx, t.userID)
			cancel()
			switch {
			case err != nil && slicehub.KindOf(err) != slicehub.KindNotFound:
				s.wsLog.Warn("recheck of websocket failed; keeping it", "user_id", t.userID, "err", err)
			case err != nil, sl.ID != t.sliceID, sl.State != slicehub.StateAssigned:
				t.end(closeSliceChanged)
			}
		}
	}()
}
