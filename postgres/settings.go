package postgres

import (
	"context"
	"encoding/json"
	"errors"

	"github.com/jackc/pgx/v5"

	"github.com/slicehub/slicehub"
)

// PoolSettingsChannel is notified whenever the pool settings change.
const PoolSettingsChannel = "pool_settings"

// PoolSettings are the warm pool's settings an admin changed at runtime.
type PoolSettings struct {
	Paused bool
	// MinWarm is nil until an admin scales the pool: the configured value
	// holds.
	MinWarm *int
}

// PoolSettings returns the stored settings (the zero value when no admin
// ever changed them).
func (db *DB) PoolSettings(ctx context.Context) (PoolSettings, error) {
	const op = "postgres.pool_settings"
	var s PoolSettings
	err := db.Pool.QueryRow(ctx, `SELECT paused, min_warm FROM pool_settings`).Scan(&s.Paused, &s.MinWarm)
	if errors.Is(err, pgx.ErrNoRows) {
		return PoolSettings{}, nil
	}
	return s, wrap(op, err)
}

// SetPoolPaused stores whether the pool's refill is paused, and notifies
// every replica. Each setting is written alone, so that a pause and a scale
// on two replicas at once cannot undo each other.
func (db *DB) SetPoolPaused(ctx context.Context, paused bool, actor string) error {
	return db.setPool(ctx, "postgres.set_pool_paused", `INSERT INTO pool_settings (paused, updated_by) VALUES ($1, $2)
		ON CONFLICT (id) DO UPDATE SET paused = EXCLUDED.paused, updated_by = EXCLUDED.updated_by, updated_at = now()`, paused, actor)
}

// SetPoolMinWarm stores the pool's target, and notifies every replica.
func (db *DB) SetPoolMinWarm(ctx context.Context, minWarm int, actor string) error {
	return db.setPool(ctx, "postgres.set_pool_min_warm", `INSERT INTO pool_settings (min_warm, updated_by) VALUES ($1, $2)
		ON CONFLICT (id) DO UPDATE SET min_warm = EXCLUDED.min_warm, updated_by = EXCLUDED.updated_by, updated_at = now()`, minWarm, actor)
}

func (db *DB) setPool(ctx context.Context, op, sql string, value any, actor string) error {
	err := pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, sql, value, actor); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `SELECT pg_notify($1, '')`, PoolSettingsChannel)
		return err
	})
	return wrap(op, err)
}

// AdminAudit is one admin action in the audit table (the root package's,
// so that package admin does not import this one).
type AdminAudit = slicehub.AdminAudit

// Audit appends a to the audit table.
func (db *DB) Audit(ctx context.Context, a AdminAudit) error {
	const op = "postgres.audit"
	detail, err := json.Marshal(a.Detail)
	if err != nil || a.Detail == nil {
		detail = []byte("{}")
	}
	var key any
	if a.KeyID != 0 {
		key = a.KeyID
	}
	_, err = db.Pool.Exec(ctx, `INSERT INTO admin_audit (actor, key_id, action, target, detail) VALUES ($1, $2, $3, $4, $5)`,
		a.Actor, key, a.Action, a.Target, detail)
	return wrap(op, err)
}

// AdminAudits returns the newest limit rows of the audit table, newest
// first.
func (db *DB) AdminAudits(ctx context.Context, limit int) ([]AdminAudit, error) {
	const op = "postgres.admin_audits"
	rows, err := db.Pool.Query(ctx, `SELECT id, at, actor, coalesce(key_id, 0), action, target, detail
		FROM admin_audit ORDER BY id DESC LIMIT $1`, limit)
	if err != nil {
		return nil, wrap(op, err)
	}
	defer rows.Close()
	out := []AdminAudit{}
	for rows.Next() {
		var a AdminAudit
		if err := rows.Scan(&a.ID, &a.At, &a.Actor, &a.KeyID, &a.Action, &a.Target, &a.Detail); err != nil {
			return nil, wrap(op, err)
		}
		out = append(out, a)
	}
	return out, wrap(op, rows.Err())
}
