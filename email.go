package slicehub

import (
	"net/mail"
	"strings"
)

// NormalizeEmail trims and lowercases an email and checks that it is a
// plain address: one @, no display name, a dotted domain, and lengths the
// schema accepts. The gateway and slicectl both create accounts with it,
// so one address has one spelling.
func NormalizeEmail(s string) (string, error) {
	const op = "gateway.email"
	e := strings.ToLower(strings.TrimSpace(s))
	bad := Errorf(op, KindInvalid, "invalid_email", "enter a valid email address")
	if len(e) < 3 || len(e) > 254 || strings.Count(e, "@") != 1 {
		return "", bad
	}
	local, domain, _ := strings.Cut(e, "@")
	if local == "" || len(local) > 64 || len(domain) < 3 || !strings.Contains(domain, ".") ||
		strings.HasPrefix(domain, ".") || strings.HasSuffix(domain, ".") || strings.Contains(domain, "..") {
		return "", bad
	}
	a, err := mail.ParseAddress(e)
	if err != nil || a.Address != e || a.Name != "" {
		return "", bad
	}
	for _, r := range e {
		if r <= ' ' || r == 0x7f {
			return "", bad
		}
	}
	return e, nil
}
