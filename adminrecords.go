package slicehub

import "time"

// What the admin API reads and writes through its store (postgres), as
// plain values, so that package admin declares its Store and Auditor
// without importing postgres.

// UserRow is an account as the admin users list shows it: with the slice
// bound to it, if any (0 otherwise).
type UserRow struct {
	User
	SliceID int64
}

// AdminAudit is one admin action in the audit table.
type AdminAudit struct {
	ID     int64
	At     time.Time
	Actor  string // "admin:3"
	KeyID  int64  // the admin API key, 0 for a dashboard session
	Action string // "disable_user", "pool_scale", "slice_restore", …
	Target string // "user:12", "slice:4", "pool", "gateway"
	Detail map[string]any
}
