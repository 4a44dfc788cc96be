package accounts

import (
	"crypto/sha256"
	"strings"
	"testing"
)

// FuzzParseToken checks the session cookie's shape check: whatever it
// accepts is the one canonical spelling of 32 bytes, and the hash is that of
// those bytes, so one session has exactly one cookie value.
func FuzzParseToken(f *testing.F) {
	tok, _ := NewToken()
	for _, s := range []string{tok, "", tok[:42], tok + "A", tok[:42] + "=", tok[:42] + "+", tok[:42] + "/",
		strings.Repeat("A", 43), strings.Repeat("_", 43), strings.Repeat("-", 42) + "B", strings.Repeat("-", 42) + "A",
		tok[:20] + "\x00" + tok[21:], tok[:42] + "\n", "%2F" + tok[3:]} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		h, ok := ParseToken(s)
		if !ok {
			if h != (TokenHash{}) {
				t.Fatalf("refused %q but returned a hash", s)
			}
			return
		}
		raw, err := tokenEncoding.DecodeString(s)
		if err != nil || len(raw) != 32 {
			t.Fatalf("accepted %q, which is not 32 bytes of base64url: %v", s, err)
		}
		if h != sha256.Sum256(raw) {
			t.Fatalf("hash of %q is not SHA-256 of its bytes", s)
		}
		if canon := tokenEncoding.EncodeToString(raw); canon != s {
			t.Fatalf("accepted %q, a second spelling of %q", s, canon)
		}
	})
}
