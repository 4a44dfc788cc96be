package proxy

import (
	"bytes"

	"github.com/valyala/fasthttp"

	"github.com/slicehub/slicehub"
)

// Header hygiene between a browser and its slice. A slice trusts the
// X-Slicehub-* headers because only the gateway can set them, so no client
// copy may pass; the session cookie is the gateway's alone; hop-by-hop
// headers describe one connection and die with it; X-Forwarded-* and friends
// are rewritten from what the gateway knows, never passed through.

// droppedRequestHeaders never reach a slice as the client sent them.
var droppedRequestHeaders = [][]byte{
	[]byte("Connection"), []byte("Keep-Alive"), []byte("Proxy-Connection"),
	[]byte("Proxy-Authenticate"), []byte("Proxy-Authorization"), []byte("Te"),
	[]byte("Trailer"), []byte("Transfer-Encoding"), []byte("Upgrade"),
	// The gateway has read the whole body already; a slice must not answer 100.
	[]byte("Expect"),
	[]byte("Forwarded"), []byte("X-Forwarded-For"), []byte("X-Forwarded-Proto"),
	[]byte("X-Forwarded-Host"), []byte("X-Forwarded-Port"), []byte("X-Forwarded-Ssl"),
	[]byte("X-Real-Ip"),
}

// droppedResponseHeaders are hop-by-hop on the way back.
var droppedResponseHeaders = []string{
	"Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate", "Te", "Trailer", "Upgrade",
}

// reservedPrefix is the namespace of headers only the gateway may set.
const reservedPrefix = "x-slicehub-"

// IsReservedHeader reports whether k is in the X-Slicehub- namespace,
// case-insensitively and with '_' read as '-': some servers map both to the
// same variable, so X_Slicehub_User_Id must not slip through either.
func IsReservedHeader(k []byte) bool {
	if len(k) < len(reservedPrefix) {
		return false
	}
	for i := 0; i < len(reservedPrefix); i++ {
		c := k[i]
		switch {
		case c == '_':
			c = '-'
		case 'A' <= c && c <= 'Z':
			c += 'a' - 'A'
		}
		if c != reservedPrefix[i] {
			return false
		}
	}
	return true
}

func IsDroppedRequestHeader(k []byte) bool {
	for _, d := range droppedRequestHeaders {
		if bytes.EqualFold(k, d) {
			return true
		}
	}
	return IsReservedHeader(k)
}

// KeySet collects header names to delete after a VisitAll (deleting during
// the visit would corrupt it). It lives on the caller's stack; when it is
// full, the caller deletes what it has and visits again.
type KeySet struct {
	buf      [512]byte
	used     int
	ends     [16]uint16
	n        int
	overflow bool
	// long holds names that could never fit in buf. Without it a single
	// X-Slicehub-<600 bytes> header overflowed every pass with nothing
	// deleted, and stripRequest spun for ever on one request.
	long [][]byte
}

func (s *KeySet) Add(k []byte) {
	if len(k) > len(s.buf) {
		s.long = append(s.long, append([]byte(nil), k...)) // rare: an allocation is fine
		return
	}
	if s.n == len(s.ends) || s.used+len(k) > len(s.buf) {
		s.overflow = true
		return
	}
	s.used += copy(s.buf[s.used:], k)
	s.ends[s.n] = uint16(s.used)
	s.n++
}

func (s *KeySet) Each(f func(k []byte)) {
	start := 0
	for i := 0; i < s.n; i++ {
		end := int(s.ends[i])
		f(s.buf[start:end])
		start = end
	}
	for _, k := range s.long {
		f(k)
	}
}

// AddConnectionTokens adds the headers that a Connection header names as
// hop-by-hop (RFC 9110 7.6.1).
func (s *KeySet) AddConnectionTokens(v []byte) {
	for len(v) > 0 {
		var tok []byte
		if i := bytes.IndexByte(v, ','); i >= 0 {
			tok, v = v[:i], v[i+1:]
		} else {
			tok, v = v, nil
		}
		tok = bytes.TrimSpace(tok)
		if len(tok) == 0 || bytes.EqualFold(tok, []byte("close")) || bytes.EqualFold(tok, []byte("keep-alive")) ||
			bytes.EqualFold(tok, []byte("upgrade")) {
			continue
		}
		s.Add(tok)
	}
}

// StripRequest removes from req everything a slice must not receive from a
// client: hop-by-hop headers, forwarding headers, X-Slicehub-* and the
// gateway's cookies (the session, and the CSRF token whose secrecy the
// double-submit check relies on). Other cookies pass unchanged.
func StripRequest(h *fasthttp.RequestHeader) {
	h.DelCookie(slicehub.SessionCookie)
	h.DelCookie(slicehub.CSRFCookie)
	nameless := false
	h.VisitAllCookie(func(k, v []byte) { nameless = nameless || len(k) == 0 && IsGatewayCookie(k, v) })
	if nameless {
		h.DelCookie("") // nameless cookies are off-spec; all of them go
	}
	for {
		var ks KeySet
		h.VisitAll(func(k, v []byte) {
			if IsDroppedRequestHeader(k) {
				ks.Add(k)
				if bytes.EqualFold(k, droppedRequestHeaders[0]) { // Connection
					ks.AddConnectionTokens(v)
				}
			}
		})
		ks.Each(func(k []byte) { h.DelBytes(k) })
		if !ks.overflow {
			return
		}
	}
}

// IsGatewayCookie reports whether a cookie, as a slice reads it once
// fasthttp has written it out again, is one of the gateway's. fasthttp keeps
// a nameless cookie (a bare "slicehub_session", or "=slicehub_session=x")
// with an empty key and writes it back as its value alone, which the slice
// then parses as a cookie of that name.
func IsGatewayCookie(k, v []byte) bool {
	if len(k) == 0 {
		k, _, _ = bytes.Cut(v, []byte("="))
		k = bytes.TrimSpace(k)
	}
	return string(k) == slicehub.SessionCookie || string(k) == slicehub.CSRFCookie
}

// droppedSliceHeaders are headers a slice's answer may not carry to the
// browser, because they act on the platform origin beyond that one answer:
// cookies (every one, whatever its name: a nameless "=slicehub_session=x"
// is read by browsers as the session cookie), site-wide data wiping,
// service-worker scope and HSTS (the edge's to set).
var droppedSliceHeaders = []string{
	"Set-Cookie2", "Clear-Site-Data", "Service-Worker-Allowed", "Strict-Transport-Security",
}

// SliceAnswerCSP is the Content-Security-Policy of every answer a slice
// gives through the gateway. Slice answers are served on the platform
// origin, beside /admin and the shared app, and a slice is not trusted
// (README, "Request flow"): an HTML answer opened as a page must not run
// with the origin's privileges. sandbox makes such a page an opaque origin
// with no scripts, forms, popups or plug-ins; default-src 'none' stops it
// loading anything; frame-ancestors 'none' keeps it out of frames. A CSP
// applies to the document it arrives with, so the app at /app/ (served by
// the gateway or the edge, never by a slice), which fetches /api JSON and
// opens /socket.io WebSockets, is not restricted by it: fetch, XHR,
// EventSource and WebSocket answers are data, not documents.
const SliceAnswerCSP = "sandbox; default-src 'none'; frame-ancestors 'none'"

// SetSliceAnswerPolicy sets, replacing every copy the slice sent, the
// headers that confine a slice's answer on the platform origin
// (sliceAnswerCSP, and nosniff so that a browser takes the declared type
// at its word and never runs a text answer as a script or a style sheet).
// Del first: Set replaces only the first of several same-named headers.
func SetSliceAnswerPolicy(h *fasthttp.ResponseHeader) {
	h.Del(fasthttp.HeaderContentSecurityPolicy)
	h.Del(fasthttp.HeaderXContentTypeOptions)
	h.Set(fasthttp.HeaderContentSecurityPolicy, SliceAnswerCSP)
	h.Set(fasthttp.HeaderXContentTypeOptions, "nosniff")
}

// StripResponse makes a slice's answer fit for the browser: hop-by-hop
// headers go, every cookie goes (the gateway's and the slice's alike: the
// origin's cookies are the gateway's alone), so do droppedSliceHeaders,
// and the answer gets setSliceAnswerPolicy. Both proxy paths (forward and
// the event loop) answer through it.
func StripResponse(h *fasthttp.ResponseHeader) {
	if v := h.Peek(fasthttp.HeaderConnection); len(v) > 0 {
		var ks KeySet
		ks.AddConnectionTokens(v)
		ks.Each(func(k []byte) { h.DelBytes(k) })
	}
	for _, k := range droppedResponseHeaders {
		h.Del(k)
	}
	h.DelAllCookies()
	for _, k := range droppedSliceHeaders {
		h.Del(k)
	}
	SetSliceAnswerPolicy(h)
}
