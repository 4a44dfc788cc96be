package postgres

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/slicehub/slicehub"
)

// Accounts: users and their server-side sessions. The gateway normalises
// and validates emails and hashes passwords; this file stores what it is
// given and enforces what only the database can (uniqueness, expiry).

const userColumns = `id, email, is_admin, created_at, disabled_at`

func scanUser(row pgx.Row, extra ...any) (slicehub.User, error) {
	var u slicehub.User
	err := row.Scan(append([]any{&u.ID, &u.Email, &u.IsAdmin, &u.CreatedAt, &u.DisabledAt}, extra...)...)
	return u, err
}

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
		return u, slicehub.Wrap(op, slicehub.KindInternal, err)
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
		return u, "", slicehub.Wrap(op, slicehub.KindInternal, err)
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
		return slicehub.Wrap(op, slicehub.KindInternal, err)
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
		return u, slicehub.Wrap(op, slicehub.KindInternal, err)
	}
	return u, nil
}

// DeleteSession ends a session. Ending one that does not exist is not an
// error: logging out twice is fine.
func (db *DB) DeleteSession(ctx context.Context, tokenHash []byte) error {
	const op = "postgres.delete_session"
	if _, err := db.Pool.Exec(ctx, `DELETE FROM sessions WHERE token_hash = $1`, tokenHash); err != nil {
		return slicehub.Wrap(op, slicehub.KindInternal, err)
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
		return 0, slicehub.Wrap(op, slicehub.KindInternal, err)
	}
	return tag.RowsAffected(), nil
}
