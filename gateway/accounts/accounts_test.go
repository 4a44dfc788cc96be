package accounts

import (
	"net/netip"
	"testing"
	"time"
)

func TestLimiter(t *testing.T) {
	// The limiter's clock, moved by hand: no test waits.
	now := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	l := NewLimiter(Rate{Burst: 2, Every: 10 * time.Second}, clock)
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
	now = now.Add(4 * time.Second)
	if d := l.Wait("k"); d != 6*time.Second {
		t.Fatalf("wait after 4s: %v, want 6s", d)
	}
	now = now.Add(6 * time.Second)
	if d := l.Wait("k"); d != 0 {
		t.Fatalf("wait after the refill: %v, want 0", d)
	}
	if d := l.Wait("k"); d != 0 {
		t.Fatalf("Wait spent a token: %v", d)
	}
	now = now.Add(time.Minute)
	l.Sweep()
	if n := len(l.buckets); n != 0 {
		t.Fatalf("%d buckets after the sweep, want 0 (all full again)", n)
	}

	small := NewLimiter(Rate{Burst: 1, Every: time.Hour}, clock)
	small.max = 3
	for _, k := range []string{"a", "b", "c", "d", "e"} {
		small.Take(k)
	}
	if n := len(small.buckets); n > 3 {
		t.Fatalf("%d buckets, want at most 3", n)
	}
	if d := NewLimiter(Rate{}, clock).Take("x"); d != 0 {
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
		if got := IPKey(netip.MustParseAddr(in)); got != want {
			t.Errorf("ipKey(%s) = %s, want %s", in, got, want)
		}
	}
}

func TestParseToken(t *testing.T) {
	tok, h := NewToken()
	got, ok := ParseToken(tok)
	if !ok || got != h {
		t.Fatalf("parseToken(newToken()) = %x, %v; want %x", got, ok, h)
	}
	for _, bad := range []string{"", tok[:42], tok + "A", tok[:42] + "=", tok[:42] + "+"} {
		if _, ok := ParseToken(bad); ok {
			t.Errorf("parseToken(%q) accepted", bad)
		}
	}
}

func TestDefaultArgon2Params(t *testing.T) {
	// Production parameters, once: the hash verifies, and the dummy used
	// for unknown emails is made with them too.
	h := NewHasher(DefaultArgon2Params, 1)
	hash, err := h.Hash(t.Context(), "correct horse battery")
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := h.Verify(t.Context(), "correct horse battery", hash); !ok || err != nil {
		t.Fatalf("verify = %v, %v", ok, err)
	}
	if ok, _ := h.Verify(t.Context(), "wrong horse battery", hash); ok {
		t.Fatal("a wrong password verified")
	}
	if ok, _ := h.Verify(t.Context(), "anything", ""); ok {
		t.Fatal("the dummy verified")
	}
}
