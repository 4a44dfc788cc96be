package postgres

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/slicehub/slicehub"
	"github.com/slicehub/slicehub/postgres/bootstrap"
)

// Accounts: users and their server-side sessions. The gateway normalises
// and validates emails and hashes passwords; this file stores what it is
// given and enforces what only the database can (uniqueness, expiry).

const userColumns = bootstrap.UserColumns

var scanUser = bootstrap.ScanUser

// CreateUser stores a new account. An email already taken is KindConflict
// with code "email_taken".
func (db *DB) CreateUser(ctx context.Context, email, passwordHash string) (slicehub.User, error) {
	const op = "postgres.create_user"
	u, err := scanUser(db.Pool.QueryRow(ctx,
		`INSERT INTO users (email, password_hash) VALUES ($1, $2) RETURNING `+userColumns, email, passwordHash))
	if err != nil {
		if isUniqueViolation(err) {
			return u, slicehub.Errorf(op, slicehub.KindConflict, "email_taken", "an account with this email already exists")
		}
		return u, wrap(op, err)
	}
	return u, nil
}

// UserByEmail returns the account and its password hash, or KindNotFound.
// Disabled accounts are returned too: telling "disabled" from "wrong
// password" is the caller's decision, made after the password check.
func (db *DB) UserByEmail(ctx context.Context, email string) (slicehub.User, string, error) {
	const op = "postgres.user_by_email"
	var hash string
	u, err := scanUser(db.Pool.QueryRow(ctx,
		`SELECT `+userColumns+`, password_hash FROM users WHERE email = $1`, email), &hash)
	if errors.Is(err, pgx.ErrNoRows) {
		return u, "", slicehub.Errorf(op, slicehub.KindNotFound, "user_not_found", "no such account")
	}
	if err != nil {
		return u, "", wrap(op, err)
	}
	return u, hash, nil
}

// CreateSession stores the SHA-256 of a new session token.
func (db *DB) CreateSession(ctx context.Context, userID int64, tokenHash []byte, expiresAt time.Time) error {
	const op = "postgres.create_session"
	if len(tokenHash) != 32 {
		return slicehub.Errorf(op, slicehub.KindInvalid, "", "a token hash is 32 bytes, not %d", len(tokenHash))
	}
	_, err := db.Pool.Exec(ctx,
		`INSERT INTO sessions (token_hash, user_id, expires_at) VALUES ($1, $2, $3)`, tokenHash, userID, expiresAt)
	if err != nil {
		return wrap(op, err)
	}
	return nil
}

// SessionUser returns the user of a live session: not past expires_at, not
// idle for longer than idle, and its user not disabled. Anything else is
// KindUnauthorized, without saying which (the cookie is simply no good).
//
// It records activity, but at most once a minute per session: every cache
// miss of every gateway replica lands here, and a write per read would turn
// the sessions table into a hot spot of dead tuples.
func (db *DB) SessionUser(ctx context.Context, tokenHash []byte, idle time.Duration) (slicehub.User, error) {
	const op = "postgres.session_user"
	// One round trip. A data-modifying CTE runs whether or not the outer
	// query reads it; its WHERE repeats the liveness test so that a dead
	// session is never touched back to life.
	u, err := scanUser(db.Pool.QueryRow(ctx, `
		WITH live AS (
			SELECT s.user_id FROM sessions s
			WHERE s.token_hash = $1 AND s.expires_at > now()
			  AND s.last_seen_at > now() - make_interval(secs => $2)
		), touch AS (
			UPDATE sessions SET last_seen_at = now()
			WHERE token_hash = $1 AND last_seen_at < now() - interval '1 minute'
			  AND expires_at > now() AND last_seen_at > now() - make_interval(secs => $2)
		)
		SELECT `+userColumns+` FROM live JOIN users ON users.id = live.user_id
		WHERE disabled_at IS NULL`, tokenHash, idle.Seconds()))
	if errors.Is(err, pgx.ErrNoRows) {
		return u, slicehub.Errorf(op, slicehub.KindUnauthorized, "no_session", "sign in first")
	}
	if err != nil {
		return u, wrap(op, err)
	}
	return u, nil
}

// DeleteSession ends a session. Ending one that does not exist is not an
// error: logging out twice is fine.
func (db *DB) DeleteSession(ctx context.Context, tokenHash []byte) error {
	const op = "postgres.delete_session"
	if _, err := db.Pool.Exec(ctx, `DELETE FROM sessions WHERE token_hash = $1`, tokenHash); err != nil {
		return wrap(op, err)
	}
	return nil
}

// DeleteExpiredSessions removes sessions past their absolute expiry or idle
// for longer than idle, and returns how many. Lookups already refuse them;
// this only keeps the table small. Run it now and then from one place.
func (db *DB) DeleteExpiredSessions(ctx context.Context, idle time.Duration) (int64, error) {
	const op = "postgres.delete_expired_sessions"
	tag, err := db.Pool.Exec(ctx,
		`DELETE FROM sessions WHERE expires_at <= now() OR last_seen_at <= now() - make_interval(secs => $1)`,
		idle.Seconds())
	if err != nil {
		return 0, wrap(op, err)
	}
	return tag.RowsAffected(), nil
}

// Bootstrap of the first admin. The ops CLI calls these directly on the
// database, because there is no admin yet to call the admin API with.

// CreateAdmin stores a new account that is an admin from the start. An
// email already taken is KindConflict "email_taken" (use PromoteAdmin).
func (db *DB) CreateAdmin(ctx context.Context, email, passwordHash string) (slicehub.User, error) {
	return bootstrap.CreateAdmin(ctx, db.Pool, email, passwordHash)
}

// PromoteAdmin makes an existing account an admin (or, with admin false,
// an ordinary user again), or KindNotFound.
func (db *DB) PromoteAdmin(ctx context.Context, email string, admin bool) (slicehub.User, error) {
	return bootstrap.PromoteAdmin(ctx, db.Pool, email, admin)
}

// SetUserDisabled disables (or enables again) an account. Its sessions stay
// in the table but are refused by SessionUser, and the users trigger tells
// every replica to drop what it cached, so the user is out within the time
// of one notification.
func (db *DB) SetUserDisabled(ctx context.Context, userID int64, disabled bool) (slicehub.User, error) {
	const op = "postgres.set_user_disabled"
	u, err := scanUser(db.Pool.QueryRow(ctx, `UPDATE users
		SET disabled_at = CASE WHEN $2 THEN coalesce(disabled_at, now()) ELSE NULL END
		WHERE id = $1 RETURNING `+userColumns, userID, disabled))
	if errors.Is(err, pgx.ErrNoRows) {
		return u, slicehub.Errorf(op, slicehub.KindNotFound, "user_not_found", "no such account")
	}
	if err != nil {
		return u, wrap(op, err)
	}
	return u, nil
}

// Password reset.

// CreateResetToken stores the SHA-256 of a new reset token for userID. It
// also forgets the user's tokens that are used or expired, so the table
// holds only what could still be redeemed.
func (db *DB) CreateResetToken(ctx context.Context, userID int64, tokenHash []byte, expiresAt time.Time) error {
	const op = "postgres.create_reset_token"
	if len(tokenHash) != 32 {
		return slicehub.Errorf(op, slicehub.KindInvalid, "", "a token hash is 32 bytes, not %d", len(tokenHash))
	}
	err := pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `DELETE FROM password_resets
			WHERE user_id = $1 AND (used_at IS NOT NULL OR expires_at <= now())`, userID); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `INSERT INTO password_resets (token_hash, user_id, expires_at) VALUES ($1, $2, $3)`,
			tokenHash, userID, expiresAt)
		return err
	})
	if err != nil {
		return wrap(op, err)
	}
	return nil
}

// ResetTokenUser returns the user of a reset token that could be redeemed
// now, so that the form can name the account; KindInvalid "invalid_token"
// otherwise.
func (db *DB) ResetTokenUser(ctx context.Context, tokenHash []byte) (slicehub.User, error) {
	const op = "postgres.reset_token_user"
	u, err := scanUser(db.Pool.QueryRow(ctx, `SELECT u.id, u.email, u.is_admin, u.created_at, u.disabled_at
		FROM password_resets r JOIN users u ON u.id = r.user_id
		WHERE r.token_hash = $1 AND r.used_at IS NULL AND r.expires_at > now() AND u.disabled_at IS NULL`, tokenHash))
	if errors.Is(err, pgx.ErrNoRows) {
		return u, slicehub.Errorf(op, slicehub.KindInvalid, "invalid_token",
			"this reset link is invalid or has expired; ask for a new one")
	}
	if err != nil {
		return u, wrap(op, err)
	}
	return u, nil
}

// ResetPassword redeems a reset token: if it is unused, unexpired and its
// user enabled, the password is replaced, every reset token of the user is
// spent, and every session of the user ends (whoever knew the old password
// is signed out everywhere). One transaction, the token row locked, so a
// token works once even when submitted twice at the same moment. Anything
// else is KindInvalid "invalid_token", without saying why.
func (db *DB) ResetPassword(ctx context.Context, tokenHash []byte, passwordHash string) (slicehub.User, error) {
	const op = "postgres.reset_password"
	var u slicehub.User
	invalid := slicehub.Errorf(op, slicehub.KindInvalid, "invalid_token",
		"this reset link is invalid or has expired; ask for a new one")
	err := pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error {
		var userID int64
		err := tx.QueryRow(ctx, `SELECT user_id FROM password_resets
			WHERE token_hash = $1 AND used_at IS NULL AND expires_at > now() FOR UPDATE`, tokenHash).Scan(&userID)
		if errors.Is(err, pgx.ErrNoRows) {
			return invalid
		}
		if err != nil {
			return err
		}
		u, err = scanUser(tx.QueryRow(ctx, `UPDATE users SET password_hash = $2
			WHERE id = $1 AND disabled_at IS NULL RETURNING `+userColumns, userID, passwordHash))
		if errors.Is(err, pgx.ErrNoRows) {
			return invalid
		}
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `UPDATE password_resets SET used_at = now()
			WHERE user_id = $1 AND used_at IS NULL`, userID); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `DELETE FROM sessions WHERE user_id = $1`, userID)
		return err
	})
	if err != nil {
		return slicehub.User{}, wrap(op, err)
	}
	return u, nil
}

// Admin API keys.

const adminKeyColumns = bootstrap.AdminKeyColumns

var scanAdminKey = bootstrap.ScanAdminKey

// CreateAdminKey stores the SHA-256 of a new key made by admin createdBy.
func (db *DB) CreateAdminKey(ctx context.Context, name string, keyHash []byte, createdBy int64) (slicehub.AdminKey, error) {
	return bootstrap.CreateAdminKey(ctx, db.Pool, name, keyHash, createdBy)
}

// AdminKeys lists every key, revoked ones included (they are the audit
// trail), newest first.
func (db *DB) AdminKeys(ctx context.Context) ([]slicehub.AdminKey, error) {
	const op = "postgres.admin_keys"
	rows, err := db.Pool.Query(ctx, `SELECT `+adminKeyColumns+` FROM admin_keys ORDER BY id DESC`)
	if err != nil {
		return nil, wrap(op, err)
	}
	defer rows.Close()
	out := []slicehub.AdminKey{}
	for rows.Next() {
		k, err := scanAdminKey(rows)
		if err != nil {
			return nil, wrap(op, err)
		}
		out = append(out, k)
	}
	return out, wrap(op, rows.Err())
}

// RevokeAdminKey ends a key for good. Revoking a revoked key is fine; an
// unknown id is KindNotFound.
func (db *DB) RevokeAdminKey(ctx context.Context, id int64) error {
	const op = "postgres.revoke_admin_key"
	tag, err := db.Pool.Exec(ctx, `UPDATE admin_keys SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1`, id)
	if err != nil {
		return wrap(op, err)
	}
	if tag.RowsAffected() == 0 {
		return slicehub.Errorf(op, slicehub.KindNotFound, "key_not_found", "no such key")
	}
	return nil
}

// AdminKeyUser returns the key and the account it acts for, if the key is
// not revoked; KindUnauthorized otherwise. Whether that account is still an
// enabled admin is the caller's check. Like SessionUser, it records use at
// most once a minute.
func (db *DB) AdminKeyUser(ctx context.Context, keyHash []byte) (slicehub.User, slicehub.AdminKey, error) {
	const op = "postgres.admin_key_user"
	var k slicehub.AdminKey
	u, err := scanUser(db.Pool.QueryRow(ctx, `
		WITH touch AS (
			UPDATE admin_keys SET last_used_at = now()
			WHERE key_hash = $1 AND revoked_at IS NULL
			  AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')
		)
		SELECT u.id, u.email, u.is_admin, u.created_at, u.disabled_at,
		       k.id, k.name, k.created_by, k.created_at, k.last_used_at, k.revoked_at
		FROM admin_keys k JOIN users u ON u.id = k.created_by
		WHERE k.key_hash = $1 AND k.revoked_at IS NULL`, keyHash),
		&k.ID, &k.Name, &k.CreatedBy, &k.CreatedAt, &k.LastUsedAt, &k.RevokedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return u, k, slicehub.Errorf(op, slicehub.KindUnauthorized, "invalid_key", "the API key is not valid")
	}
	if err != nil {
		return u, k, wrap(op, err)
	}
	return u, k, nil
}
