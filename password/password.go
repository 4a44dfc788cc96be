// Package password owns how account passwords are checked and stored: the
// policy (length, not the account's own name) and the argon2id hash with
// its parameters. The gateway (signup, login, resets) and slicectl (the
// first admin) both use it, so a password slicectl sets is one the gateway
// accepts; it links argon2id and nothing of the server.
package password

import (
	"strings"
	"unicode/utf8"

	"github.com/alexedwards/argon2id"

	"github.com/slicehub/slicehub"
)

// DefaultParams follow OWASP's argon2id baseline (19 MiB, 2 passes,
// 1 lane). The library's own default takes 64 MiB per hash, which on a
// 2-core gateway turns a burst of logins into a memory spike.
var DefaultParams = &argon2id.Params{Memory: 19 * 1024, Iterations: 2, Parallelism: 1, SaltLength: 16, KeyLength: 32}

// Policy: length, not the account's own name. Length is counted in
// characters, and the cap keeps a hash's input (and a request) small.
const (
	MinLen = 10
	MaxLen = 128
)

// Check refuses a password the policy does not accept for the account
// email (normalised: slicehub.NormalizeEmail), as KindInvalid "weak_password".
func Check(pw, email string) error {
	const op = "gateway.password"
	if !utf8.ValidString(pw) {
		return slicehub.Errorf(op, slicehub.KindInvalid, "weak_password", "the password is not valid text")
	}
	n := utf8.RuneCountInString(pw)
	if n < MinLen || n > MaxLen {
		return slicehub.Errorf(op, slicehub.KindInvalid, "weak_password",
			"the password must be %d to %d characters long", MinLen, MaxLen)
	}
	p := strings.ToLower(strings.TrimSpace(pw))
	local, _, _ := strings.Cut(email, "@")
	if p == email || p == local {
		return slicehub.Errorf(op, slicehub.KindInvalid, "weak_password", "the password must not be your email address")
	}
	return nil
}

// Hash checks pw against the policy for email and returns its argon2id
// hash with DefaultParams: what is stored in users.password_hash.
func Hash(pw, email string) (string, error) {
	if err := Check(pw, email); err != nil {
		return "", err
	}
	return argon2id.CreateHash(pw, DefaultParams)
}
