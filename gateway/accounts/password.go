package accounts

import (
	"context"
	"time"

	"github.com/alexedwards/argon2id"

	"github.com/slicehub/slicehub"
	"github.com/slicehub/slicehub/gateway/wire"
	"github.com/slicehub/slicehub/password"
)

// DefaultArgon2Params are the argon2id parameters of every stored
// password (package password, which slicectl uses too).
var DefaultArgon2Params = password.DefaultParams

// Hasher runs argon2id with bounded concurrency: each hash holds its memory
// cost for its duration, so unbounded parallel logins could exhaust memory.
type Hasher struct {
	params *argon2id.Params
	slots  chan struct{}
	// dummy is a hash of nothing anyone knows. A login for an unknown email
	// is checked against it, so it takes as long as one for a known email
	// and the timing does not tell which emails have accounts.
	dummy string
}

func NewHasher(params *argon2id.Params, concurrency int) *Hasher {
	h := &Hasher{params: params, slots: make(chan struct{}, concurrency)}
	tok, _ := NewToken()
	dummy, err := argon2id.CreateHash(tok, params)
	if err != nil {
		panic(err) // only fails when crypto/rand does
	}
	h.dummy = dummy
	return h
}

func (h *Hasher) acquire(ctx context.Context) error {
	select {
	case h.slots <- struct{}{}:
		return nil
	case <-ctx.Done():
		return wire.WithRetry("gateway.hash", slicehub.KindUnavailable, "busy", "the service is busy; try again", time.Second)
	}
}

func (h *Hasher) release() { <-h.slots }

func (h *Hasher) Hash(ctx context.Context, password string) (string, error) {
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

// Verify reports whether password matches hash; an empty hash means the
// account does not exist and is checked against the dummy.
func (h *Hasher) Verify(ctx context.Context, password, hash string) (bool, error) {
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

// normalizeEmail is the domain's (slicehub.NormalizeEmail).
func normalizeEmail(s string) (string, error) { return slicehub.NormalizeEmail(s) }

// The password policy is package password's, shared with slicectl.
const (
	minPasswordLen = password.MinLen
	maxPasswordLen = password.MaxLen
)

func checkPassword(pw, email string) error { return password.Check(pw, email) }
