package gateway

import (
	"testing"

	"github.com/slicehub/slicehub"
)

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
		got, err := slicehub.NormalizeEmail(in)
		if (err == nil) != (want != "") || got != want {
			t.Errorf("slicehub.NormalizeEmail(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}
