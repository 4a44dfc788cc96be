// Package bootstrap is the part of the gateway database that slicectl
// needs before any gateway runs: the first admin and its API key, and
// where the PostgreSQL client tools are (the schema migrations are package
// migrations). Package postgres (the gateway's store) calls the same
// functions, so there is one implementation of each; this package stays
// small (pgx, no telemetry, no server) so that the ops CLI can link it.
package bootstrap

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/slicehub/slicehub"
)

// Connect opens one connection to the gateway database at url (a
// postgres:// URL or DSN), for a command that runs before any gateway.
func Connect(ctx context.Context, url string) (*pgx.Conn, error) {
	const op = "postgres.open"
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		// The parse error can quote the URL, and so the password.
		return nil, fmt.Errorf("%s: parse url: invalid database url (%T)", op, err)
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	return conn, nil
}

// Querier is a pgx pool, connection or transaction.
type Querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// UserColumns are the users columns ScanUser reads, in its order.
const UserColumns = `id, email, is_admin, created_at, disabled_at`

// ScanUser reads UserColumns, then extra.
func ScanUser(row pgx.Row, extra ...any) (slicehub.User, error) {
	var u slicehub.User
	err := row.Scan(append([]any{&u.ID, &u.Email, &u.IsAdmin, &u.CreatedAt, &u.DisabledAt}, extra...)...)
	return u, err
}

// AdminKeyColumns are the admin_keys columns ScanAdminKey reads.
const AdminKeyColumns = `id, name, created_by, created_at, last_used_at, revoked_at`

// ScanAdminKey reads AdminKeyColumns, then extra.
func ScanAdminKey(row pgx.Row, extra ...any) (slicehub.AdminKey, error) {
	var k slicehub.AdminKey
	err := row.Scan(append([]any{&k.ID, &k.Name, &k.CreatedBy, &k.CreatedAt, &k.LastUsedAt, &k.RevokedAt}, extra...)...)
	return k, err
}

// IsUniqueViolation reports a unique constraint that refused a row.
func IsUniqueViolation(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "23505"
}

// CreateAdmin stores a new account that is an admin from the start. An
// email already taken is KindConflict "email_taken" (use PromoteAdmin).
func CreateAdmin(ctx context.Context, q Querier, email, passwordHash string) (slicehub.User, error) {
	const op = "postgres.create_admin"
	u, err := ScanUser(q.QueryRow(ctx,
		`INSERT INTO users (email, password_hash, is_admin) VALUES ($1, $2, true) RETURNING `+UserColumns,
		email, passwordHash))
	if err != nil {
		if IsUniqueViolation(err) {
			return u, slicehub.Errorf(op, slicehub.KindConflict, "email_taken", "an account with this email already exists")
		}
		return u, slicehub.Wrap(op, slicehub.KindInternal, err)
	}
	return u, nil
}

// PromoteAdmin makes an existing account an admin (or, with admin false,
// an ordinary user again), or KindNotFound. Every replica hears of it
// through the users trigger.
func PromoteAdmin(ctx context.Context, q Querier, email string, admin bool) (slicehub.User, error) {
	const op = "postgres.promote_admin"
	u, err := ScanUser(q.QueryRow(ctx,
		`UPDATE users SET is_admin = $2 WHERE email = $1 RETURNING `+UserColumns, email, admin))
	if errors.Is(err, pgx.ErrNoRows) {
		return u, slicehub.Errorf(op, slicehub.KindNotFound, "user_not_found", "no such account")
	}
	if err != nil {
		return u, slicehub.Wrap(op, slicehub.KindInternal, err)
	}
	return u, nil
}

// CreateAdminKey stores the SHA-256 of a new key made by admin createdBy.
func CreateAdminKey(ctx context.Context, q Querier, name string, keyHash []byte, createdBy int64) (slicehub.AdminKey, error) {
	const op = "postgres.create_admin_key"
	if len(keyHash) != 32 {
		return slicehub.AdminKey{}, slicehub.Errorf(op, slicehub.KindInvalid, "", "a key hash is 32 bytes, not %d", len(keyHash))
	}
	k, err := ScanAdminKey(q.QueryRow(ctx, `INSERT INTO admin_keys (name, key_hash, created_by)
		VALUES ($1, $2, $3) RETURNING `+AdminKeyColumns, name, keyHash, createdBy))
	if err != nil {
		return k, slicehub.Wrap(op, slicehub.KindInternal, err)
	}
	return k, nil
}

// FindPgTool returns the newest /usr/lib/postgresql/<major>/bin/<name>, or
// name from PATH.
func FindPgTool(name string) string {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin/" + name)
	best, bestMajor := "", -1
	for _, d := range dirs {
		major, err := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(d))))
		if err == nil && major > bestMajor {
			best, bestMajor = d, major
		}
	}
	if best != "" {
		return best
	}
	return name
}
