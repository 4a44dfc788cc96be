package slicehub

import "time"

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
