package wire

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/valyala/fasthttp"
)

// TrustedProxies are the peers whose X-Forwarded-* headers are believed:
// nginx in front of the gateway, nothing else. Fiber is configured with the
// same list (EnableTrustedProxyCheck), but the proxy hot path uses this
// parsed form: Fiber's check formats the peer address as a string on every
// call, and its X-Forwarded-For parsing takes the left-most entry, which is
// the one a client can forge when nginx appends to the header.
type TrustedProxies []netip.Prefix

func ParseTrustedProxies(list []string) (TrustedProxies, []string, error) {
	var t TrustedProxies
	var valid []string
	var bad []string
	for _, s := range list {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		if strings.Contains(s, "/") {
			p, err := netip.ParsePrefix(s)
			if err != nil {
				bad = append(bad, s)
				continue
			}
			t = append(t, p.Masked())
		} else {
			a, err := netip.ParseAddr(s)
			if err != nil {
				bad = append(bad, s)
				continue
			}
			a = a.Unmap()
			t = append(t, netip.PrefixFrom(a, a.BitLen()))
		}
		valid = append(valid, s)
	}
	if len(bad) > 0 {
		return t, valid, fmt.Errorf("invalid trusted proxies (ignored): %s", strings.Join(bad, ", "))
	}
	return t, valid, nil
}

func (t TrustedProxies) Contains(a netip.Addr) bool {
	for _, p := range t {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// PeerAddr is the address of the TCP peer, without allocating.
func PeerAddr(ctx *fasthttp.RequestCtx) netip.Addr {
	if ta, ok := ctx.RemoteAddr().(*net.TCPAddr); ok {
		if a, ok := netip.AddrFromSlice(ta.IP); ok {
			return a.Unmap()
		}
	}
	return netip.IPv4Unspecified()
}

// ClientAddr is the address of the browser. Behind a trusted proxy it is the
// right-most X-Forwarded-For entry that is not itself a trusted proxy: entries
// to its left were written by the client and prove nothing.
func (t TrustedProxies) ClientAddr(ctx *fasthttp.RequestCtx) (client netip.Addr, viaProxy bool) {
	peer := PeerAddr(ctx)
	if len(t) == 0 || !t.Contains(peer) {
		return peer, false
	}
	xff := ctx.Request.Header.Peek(fasthttp.HeaderXForwardedFor)
	for len(xff) > 0 {
		i := bytes.LastIndexByte(xff, ',')
		entry := bytes.TrimSpace(xff[i+1:])
		if i < 0 {
			xff = nil
		} else {
			xff = xff[:i]
		}
		a, err := netip.ParseAddr(string(entry))
		if err != nil {
			break // garbage: stop believing the chain
		}
		a = a.Unmap()
		if !t.Contains(a) {
			return a, true
		}
		peer = a
	}
	return peer, true
}
