package gateway

import (
	"bytes"
	"errors"
	"net/netip"
	"time"

	"github.com/fasthttp/websocket"
	"github.com/gofiber/fiber/v2/utils"
	"github.com/valyala/fasthttp"

	"github.com/slicehub/slicehub"
)

// The event loop (loop_linux.go) proxies plain /api and /socket.io requests
// without a goroutine per connection. This file is its policy, shared with
// no I/O: which requests it may take, and what it may decide alone.
//
// The loop decides only from memory: the session cache, the route table
// and the gateway-token cache. It never answers a refusal itself. Any
// request it would refuse, or cannot route from memory twice in a row, is
// handed, unread, to the fasthttp server behind it, whose front and Fiber
// paths answer exactly as they always have. So the loop adds speed to the
// path that works and no new way of saying no.

// loopVerdict is what the loop does with one parsed request.
type loopVerdict uint8

const (
	// loopForward: every cache hit; send it to the slice.
	loopForward loopVerdict = iota
	// loopResolve: a session or token cache miss; fill the caches off the
	// loop and decide again.
	loopResolve
	// loopHandOff: anything else; the connection goes to the fasthttp server.
	loopHandOff
)

// loopDecision is a forward's target, or the token a miss must resolve.
type loopDecision struct {
	sess  *session
	route slicehub.Route
	token []byte
	class routeClass
	hash  tokenHash
}

// loopDecide classifies the request parsed into ctx, from memory only.
// Its checks are front's and forward's, in the same order; where one of
// them would fail, the verdict is loopHandOff so that they fail there.
func (s *Server) loopDecide(ctx *fasthttp.RequestCtx, d *loopDecision) loopVerdict {
	h := &ctx.Request.Header
	class, ok := frontClass(originPath(h.RequestURI()))
	if !ok || !knownMethod(h.Method()) || websocket.FastHTTPIsWebSocketUpgrade(ctx) {
		return loopHandOff
	}
	d.class = class
	hash, ok := parseToken(utils.UnsafeString(h.Cookie(slicehub.SessionCookie)))
	if !ok {
		return loopHandOff // 401, from the server
	}
	d.hash = hash
	sess := s.sessions.get(hash, s.now())
	if sess == nil {
		return loopResolve
	}
	if !isSafeMethod(h) && !s.originAllowed(ctx) {
		return loopHandOff
	}
	if sess.state != slicehub.StateAssigned {
		return loopHandOff // 402, 502 or 503
	}
	route, ok := s.deps.Routes.Lookup(sess.sliceID)
	if !ok || route.Addr == "" || route.SliceID != sess.sliceID {
		return loopHandOff
	}
	token, ok := s.tokens.peek(sess.sliceID, s.now())
	if !ok {
		return loopResolve
	}
	d.sess, d.route, d.token = sess, route, token
	return loopForward
}

// loopResolve fills the caches that loopDecide missed, as sessionOf and
// target would, and reports nothing: the loop decides again from the
// caches, and hands the request on if they are still empty (a refused
// token, a throttled address, a database error), so that the server
// answers it, and counts a bad token, exactly once.
func (s *Server) loopResolve(hash tokenHash, client netip.Addr) {
	if s.badSession.Wait(ipKey(client)) > 0 {
		return
	}
	sess, err := s.loadSession(hash)
	if err != nil || sess.state != slicehub.StateAssigned {
		return
	}
	_, _ = s.gatewayToken(sess.sliceID)
}

// peek is the cached token for sliceID, without filling a miss.
func (t *tokenCache) peek(sliceID int64, now time.Time) ([]byte, bool) {
	t.mu.RLock()
	e, ok := t.m[sliceID]
	t.mu.RUnlock()
	if !ok || !now.Before(e.expires) {
		return nil, false
	}
	return e.token, true
}

// chunkScanner follows a chunked body (RFC 9112 7.1) as it passes through
// unchanged, to find where it ends: the loop relays a slice's chunks as
// they come and must know when the answer is over and the connection free.
type chunkScanner struct {
	state   uint8
	digits  uint8
	size    int64 // bytes left in the current chunk, once its size is read
	trailer int   // bytes of trailer fields so far
}

const (
	chSize = iota
	chExt
	chSizeLF
	chData
	chDataCR
	chDataLF
	chTrailer
	chTrailerLine
	chTrailerLF
	chEndLF
)

var errBadChunk = errors.New("malformed chunked body")

// scan reads p, the next bytes of the body, and returns how many belong to
// it (all of p unless the body ends inside it) and whether it has ended.
// Trailers may take maxTrailer bytes.
func (s *chunkScanner) scan(p []byte, maxTrailer int) (n int, done bool, err error) {
	for n < len(p) {
		if s.state == chData {
			k := min(int64(len(p)-n), s.size)
			n += int(k)
			if s.size -= k; s.size == 0 {
				s.state = chDataCR
			}
			continue
		}
		b := p[n]
		n++
		switch s.state {
		case chSize:
			switch v := unhex(b); {
			case v >= 0:
				if s.digits == 15 { // 16 hex digits would overflow int64
					return n, false, errBadChunk
				}
				s.size = s.size<<4 | int64(v)
				s.digits++
			case s.digits == 0:
				return n, false, errBadChunk
			case b == ';' || b == ' ' || b == '\t':
				s.state = chExt
			case b == '\r':
				s.state = chSizeLF
			default:
				return n, false, errBadChunk
			}
		case chExt:
			switch b {
			case '\r':
				s.state = chSizeLF
			case '\n':
				return n, false, errBadChunk
			}
		case chSizeLF:
			if b != '\n' {
				return n, false, errBadChunk
			}
			s.digits = 0
			if s.size == 0 {
				s.state = chTrailer
			} else {
				s.state = chData
			}
		case chDataCR:
			if b != '\r' {
				return n, false, errBadChunk
			}
			s.state = chDataLF
		case chDataLF:
			if b != '\n' {
				return n, false, errBadChunk
			}
			s.state, s.size = chSize, 0
		case chTrailer, chTrailerLine:
			if b == '\r' {
				if s.state == chTrailer {
					s.state = chEndLF
				} else {
					s.state = chTrailerLF
				}
				break
			}
			if b == '\n' {
				return n, false, errBadChunk
			}
			s.state = chTrailerLine
			if s.trailer++; s.trailer > maxTrailer {
				return n, false, errBadChunk
			}
		case chTrailerLF:
			if b != '\n' {
				return n, false, errBadChunk
			}
			s.state = chTrailer
		case chEndLF:
			if b != '\n' {
				return n, false, errBadChunk
			}
			*s = chunkScanner{}
			return n, true, nil
		}
	}
	return n, false, nil
}

func unhex(b byte) int {
	switch {
	case '0' <= b && b <= '9':
		return int(b - '0')
	case 'a' <= b && b <= 'f':
		return int(b-'a') + 10
	case 'A' <= b && b <= 'F':
		return int(b-'A') + 10
	}
	return -1
}

// originPath is the path of an origin-form request target ("/api/x?q"),
// which is what front's URI().PathOriginal() is for it, without parsing a
// URI; nil for any other form (absolute, authority, "*"), which the loop
// leaves to the server.
func originPath(target []byte) []byte {
	if len(target) == 0 || target[0] != '/' {
		return nil
	}
	if i := bytes.IndexAny(target, "?#"); i >= 0 {
		return target[:i]
	}
	return target
}

// sliceTarget is the request target the server path sends a slice for the
// origin-form target t: fasthttp writes URI().RequestURI(), the raw path
// (path normalising is off, upstream.go) and the query, so the fragment
// goes, and so does a '?' that begins an empty query. The loop forwards
// the same.
func sliceTarget(t []byte) []byte {
	if i := bytes.IndexByte(t, '#'); i >= 0 {
		t = t[:i]
	}
	if n := len(t); n > 0 && bytes.IndexByte(t, '?') == n-1 {
		t = t[:n-1]
	}
	return t
}
