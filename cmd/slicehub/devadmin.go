package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/slicehub/slicehub"
	"github.com/slicehub/slicehub/gateway"
)

// The development admin: `slicehub dev` makes one admin account the first
// time it runs on a state directory, and prints its login on every run, so
// that /admin works on `make run` without a manual step. The login is kept
// in <state dir>/dev-admin.json (mode 0600), beside the database it opens;
// removing the state directory removes both.

const (
	devAdminEmail = "admin@example.com"
	devAdminFile  = "dev-admin.json"
)

type devAdminLogin struct {
	Email    string `json:"email"`
	Password string `json:"password"`
}

// ensureDevAdmin returns the development admin's login, creating the
// account (and its file) if this state directory has none yet.
func ensureDevAdmin(ctx context.Context, dir string, db interface {
	CreateAdmin(ctx context.Context, email, passwordHash string) (slicehub.User, error)
}) (devAdminLogin, error) {
	file := filepath.Join(dir, devAdminFile)
	var login devAdminLogin
	if b, err := os.ReadFile(file); err == nil {
		if err := json.Unmarshal(b, &login); err == nil && login.Email != "" && login.Password != "" {
			return login, nil
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return login, err
	}
	var pw [18]byte
	_, _ = rand.Read(pw[:])
	login = devAdminLogin{Email: devAdminEmail, Password: base64.RawURLEncoding.EncodeToString(pw[:])}
	hash, err := gateway.HashPassword(login.Password, login.Email)
	if err != nil {
		return login, err
	}
	if _, err := db.CreateAdmin(ctx, login.Email, hash); err != nil {
		if slicehub.KindOf(err) == slicehub.KindConflict {
			return devAdminLogin{}, fmt.Errorf("%s exists but %s is gone: `slicectl users create-admin --promote` or a password reset gives you access", devAdminEmail, file)
		}
		return login, err
	}
	b, _ := json.MarshalIndent(login, "", "  ")
	if err := os.WriteFile(file, append(b, '\n'), 0o600); err != nil {
		return login, fmt.Errorf("the development admin was created, but its login could not be saved: %w", err)
	}
	return login, nil
}
