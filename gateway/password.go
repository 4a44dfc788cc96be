package gateway

import (
	"context"
	"net/mail"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/alexedwards/argon2id"

	"github.com/slicehub/slicehub"
)

// DefaultArgon2Params follow OWASP's argon2id baseline (19 MiB, 2 passes,
// 1 lane). The library's own default takes 64 MiB per hash, which on a
// 2-core gateway turns a burst of logins into a memory spike.
var DefaultArgon2Params = &argon2id.Params{Memory: 19 * 1024, Iterations: 2, Parallelism: 1, SaltLength: 16, KeyLength: 32}

// hasher runs argon2id with bounded concurrency: each hash holds its memory
// cost for its duration, so unbounded parallel logins could exhaust memory.
type hasher struct {
	params *argon2id.Params
	slots  chan struct{}
	// dummy is a hash of nothing anyone knows. A login for an unknown email
	// is checked against it, so it takes as long as one for a known email
	// and the timing does not tell which emails have accounts.
	dummy string
}

func newHasher(params *argon2id.Params, concurrency int) *hasher {
	h := &hasher{params: params, slots: make(chan struct{}, concurrency)}
	tok, _ := newToken()
	dummy, err := argon2id.CreateHash(tok, params)
	if err != nil {
		panic(err) // only fails when crypto/rand does
	}
	h.dummy = dummy
	return h
}

func (h *hasher) acquire(ctx context.Context) error {
	select {
	case h.slots <- struct{}{}:
		return nil
	case <-ctx.Done():
		return withRetry("gateway.hash", slicehub.KindUnavailable, "busy", "the service is busy; try again", time.Second)
	}
}

func (h *hasher) release() { <-h.slots }

func (h *hasher) hash(ctx context.Context, password string) (string, error) {
	if err := h.acquire(ctx); err != nil {
		return "", err
	}
	defer h.release()
	hash, err := argon2id.CreateHash(password, h.params)
	if err != nil {
		return "", slicehub.Wrap("gateway.hash", slicehub.KindInternal, err)
	}
	return hash, nil
}

// verify reports whether password matches hash; an empty hash means the
// account does not exist and is checked against the dummy.
func (h *hasher) verify(ctx context.Context, password, hash string) (bool, error) {
	if err := h.acquire(ctx); err != nil {
		return false, err
	}
	defer h.release()
	if hash == "" {
		_, _ = argon2id.ComparePasswordAndHash(password, h.dummy)
		return false, nil
	}
	ok, err := argon2id.ComparePasswordAndHash(password, hash)
	if err != nil {
		return false, slicehub.Wrap("gateway.verify", slicehub.KindInternal, err)
	}
	return ok, nil
}

// normalizeEmail trims and lowercases an email and checks that it is a
// plain address: one @, no display name, a dotted domain, and lengths the
// schema accepts.
func normalizeEmail(s string) (string, error) {
	const op = "gateway.email"
	e := strings.ToLower(strings.TrimSpace(s))
	bad := slicehub.Errorf(op, slicehub.KindInvalid, "invalid_email", "enter a valid email address")
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

// Password policy: length, not the account's own name. Length is counted in
// characters, and the cap keeps a hash's input (and a request) small.
const (
	minPasswordLen = 10
	maxPasswordLen = 128
)

func checkPassword(pw, email string) error {
	const op = "gateway.password"
	if !utf8.ValidString(pw) {
		return slicehub.Errorf(op, slicehub.KindInvalid, "weak_password", "the password is not valid text")
	}
	n := utf8.RuneCountInString(pw)
	if n < minPasswordLen || n > maxPasswordLen {
		return slicehub.Errorf(op, slicehub.KindInvalid, "weak_password",
			"the password must be %d to %d characters long", minPasswordLen, maxPasswordLen)
	}
	p := strings.ToLower(strings.TrimSpace(pw))
	local, _, _ := strings.Cut(email, "@")
	if p == email || p == local {
		return slicehub.Errorf(op, slicehub.KindInvalid, "weak_password", "the password must not be your email address")
	}
	return nil
}
