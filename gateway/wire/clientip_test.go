package wire

import (
	"net"
	"testing"

	"github.com/valyala/fasthttp"
)

func TestClientAddr(t *testing.T) {
	trusted, _, err := ParseTrustedProxies([]string{"10.0.0.0/8", "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		peer, xff string
		want      string
		viaProxy  bool
	}{
		{"198.51.100.1", "1.2.3.4", "198.51.100.1", false}, // untrusted peer: its XFF is ignored
		{"127.0.0.1", "", "127.0.0.1", true},
		{"127.0.0.1", "203.0.113.5", "203.0.113.5", true},
		{"127.0.0.1", "6.6.6.6, 203.0.113.5", "203.0.113.5", true},  // the left entry is the client's claim
		{"127.0.0.1", "203.0.113.5, 10.1.1.1", "203.0.113.5", true}, // a trusted hop is skipped
		{"127.0.0.1", "10.1.1.1, 10.2.2.2", "10.1.1.1", true},       // all trusted: the farthest
		{"127.0.0.1", "garbage, 203.0.113.5", "203.0.113.5", true},
		{"127.0.0.1", "203.0.113.5, garbage", "127.0.0.1", true}, // garbage ends belief
		{"127.0.0.1", "2001:db8::1", "2001:db8::1", true},
	} {
		var ctx fasthttp.RequestCtx
		ctx.Init(&fasthttp.Request{}, &net.TCPAddr{IP: net.ParseIP(tc.peer), Port: 1234}, nil)
		if tc.xff != "" {
			ctx.Request.Header.Set("X-Forwarded-For", tc.xff)
		}
		got, via := trusted.ClientAddr(&ctx)
		if got.String() != tc.want || via != tc.viaProxy {
			t.Errorf("peer %s, XFF %q: got %s (via proxy %v), want %s (%v)", tc.peer, tc.xff, got, via, tc.want, tc.viaProxy)
		}
	}
	if _, _, err := ParseTrustedProxies([]string{"nginx"}); err == nil {
		t.Error("parseTrustedProxies accepted a host name")
	}
}
