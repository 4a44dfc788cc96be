package gateway

import (
	"testing"

	"github.com/slicehub/slicehub"
)

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
