package slicehub

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"time"
)

// AdminKey is an API key of the ops CLI. Only the SHA-256 of the key is
// stored; the key itself is shown once, when it is created. A key acts for
// the admin who created it, and only while that account is an enabled
// admin, so demoting or disabling an admin also ends their keys.
type AdminKey struct {
	ID         int64      `json:"id"`
	Name       string     `json:"name"`
	CreatedBy  int64      `json:"created_by"`
	CreatedAt  time.Time  `json:"created_at"`
	LastUsedAt *time.Time `json:"last_used_at"`
	RevokedAt  *time.Time `json:"revoked_at"`
}

// AdminKeyPrefix starts every admin API key: "shk_" and 256 random bits,
// base64url without padding.
const AdminKeyPrefix = "shk_"

// NewAdminKey returns a new admin API key and the SHA-256 of its random
// part, which is what the database keeps. The gateway makes keys with it
// (and checks them against that hash), and slicectl the first one.
func NewAdminKey() (key string, hash []byte) {
	var raw [32]byte
	_, _ = rand.Read(raw[:]) // crypto/rand.Read never fails (Go 1.24+)
	sum := sha256.Sum256(raw[:])
	return AdminKeyPrefix + base64.RawURLEncoding.EncodeToString(raw[:]), sum[:]
}
