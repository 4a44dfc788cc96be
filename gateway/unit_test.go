package gateway

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/slicehub/slicehub/gateway/wire"
)

func TestLimiter(t *testing.T) {
	clock := newFakeClock()
	l := newLimiter(Rate{Burst: 2, Every: 10 * time.Second}, clock.Now)
	for i := 0; i < 2; i++ {
		if d := l.Take("k"); d != 0 {
			t.Fatalf("take %d: wait %v, want 0 (within the burst)", i, d)
		}
	}
	if d := l.Take("k"); d != 10*time.Second {
		t.Fatalf("take past the burst: wait %v, want 10s", d)
	}
	if d := l.Take("other"); d != 0 {
		t.Fatalf("another key: wait %v, want 0", d)
	}
	clock.Advance(4 * time.Second)
	if d := l.Wait("k"); d != 6*time.Second {
		t.Fatalf("wait after 4s: %v, want 6s", d)
	}
	clock.Advance(6 * time.Second)
	if d := l.Wait("k"); d != 0 {
		t.Fatalf("wait after the refill: %v, want 0", d)
	}
	if d := l.Wait("k"); d != 0 {
		t.Fatalf("Wait spent a token: %v", d)
	}
	clock.Advance(time.Minute)
	l.Sweep()
	if n := len(l.buckets); n != 0 {
		t.Fatalf("%d buckets after the sweep, want 0 (all full again)", n)
	}

	small := newLimiter(Rate{Burst: 1, Every: time.Hour}, clock.Now)
	small.max = 3
	for _, k := range []string{"a", "b", "c", "d", "e"} {
		small.Take(k)
	}
	if n := len(small.buckets); n > 3 {
		t.Fatalf("%d buckets, want at most 3", n)
	}
	if d := newLimiter(Rate{}, clock.Now).Take("x"); d != 0 {
		t.Fatalf("a zero Rate throttles: %v", d)
	}
}

func TestIPKey(t *testing.T) {
	for in, want := range map[string]string{
		"203.0.113.9":              "203.0.113.9",
		"::ffff:203.0.113.9":       "203.0.113.9",
		"2001:db8:1:2:3:4:5:6":     "2001:db8:1:2::/64",
		"2001:db8:1:2:ffff::1":     "2001:db8:1:2::/64",
		"2001:db8:1:3:0:0:0:1":     "2001:db8:1:3::/64",
		"fe80::1234:5678:9abc:def": "fe80::/64",
	} {
		if got := ipKey(netip.MustParseAddr(in)); got != want {
			t.Errorf("ipKey(%s) = %s, want %s", in, got, want)
		}
	}
}

func TestIsReservedHeader(t *testing.T) {
	for k, want := range map[string]bool{
		"X-Slicehub-User-Id":       true,
		"x-slicehub-gateway-token": true,
		"X_SLICEHUB_USER_ID":       true,
		"X-Slicehub_Anything":      true,
		"X-Slicehub-":              true,
		"X-Slicehub":               false,
		"X-Slicehubx-User":         false,
		"X-Forwarded-For":          false,
		"Slicehub-User-Id":         false,
	} {
		if got := isReservedHeader([]byte(k)); got != want {
			t.Errorf("isReservedHeader(%q) = %v, want %v", k, got, want)
		}
	}
}

func TestClientAddr(t *testing.T) {
	trusted, _, err := wire.ParseTrustedProxies([]string{"10.0.0.0/8", "127.0.0.1"})
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
	if _, _, err := wire.ParseTrustedProxies([]string{"nginx"}); err == nil {
		t.Error("parseTrustedProxies accepted a host name")
	}
}

func TestParseToken(t *testing.T) {
	tok, h := newToken()
	got, ok := parseToken(tok)
	if !ok || got != h {
		t.Fatalf("parseToken(newToken()) = %x, %v; want %x", got, ok, h)
	}
	for _, bad := range []string{"", tok[:42], tok + "A", tok[:42] + "=", tok[:42] + "+"} {
		if _, ok := parseToken(bad); ok {
			t.Errorf("parseToken(%q) accepted", bad)
		}
	}
}

func TestNormalizeEmail(t *testing.T) {
	for in, want := range map[string]string{
		" Ada@Example.COM ":  "ada@example.com",
		"a.b+c@mail.example": "a.b+c@mail.example",
		"a@b":                "",
		"a@@example.com":     "",
		"a@example..com":     "",
		"a @example.com":     "",
		"<a@example.com>":    "",
		"a@.example.com":     "",
		"@example.com":       "",
	} {
		got, err := normalizeEmail(in)
		if (err == nil) != (want != "") || got != want {
			t.Errorf("normalizeEmail(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

func TestDefaultArgon2Params(t *testing.T) {
	// Production parameters, once: the hash verifies, and the dummy used
	// for unknown emails is made with them too.
	h := newHasher(DefaultArgon2Params, 1)
	hash, err := h.hash(t.Context(), "correct horse battery")
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := h.verify(t.Context(), "correct horse battery", hash); !ok || err != nil {
		t.Fatalf("verify = %v, %v", ok, err)
	}
	if ok, _ := h.verify(t.Context(), "wrong horse battery", hash); ok {
		t.Fatal("a wrong password verified")
	}
	if ok, _ := h.verify(t.Context(), "anything", ""); ok {
		t.Fatal("the dummy verified")
	}
}
