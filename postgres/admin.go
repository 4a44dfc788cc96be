package postgres

import (
	"context"
	"errors"

	"github.com/jackc/pgx/v5"

	"github.com/slicehub/slicehub"
)

// Queries of the admin API that no other part of the platform needs.

// UserRow is an account as the admin users list shows it (the root
// package's, so that package admin does not import this one).
type UserRow = slicehub.UserRow

// AdminUsers lists every account, oldest first, with its slice.
func (db *DB) AdminUsers(ctx context.Context) ([]UserRow, error) {
	const op = "postgres.admin_users"
	rows, err := db.Pool.Query(ctx, `SELECT u.id, u.email, u.is_admin, u.created_at, u.disabled_at, coalesce(s.id, 0)
		FROM users u LEFT JOIN slices s ON s.user_id = u.id ORDER BY u.id`)
	if err != nil {
		return nil, wrap(op, err)
	}
	defer rows.Close()
	out := []UserRow{}
	for rows.Next() {
		var r UserRow
		if r.User, err = scanUser(rows, &r.SliceID); err != nil {
			return nil, wrap(op, err)
		}
		out = append(out, r)
	}
	return out, wrap(op, rows.Err())
}

// UserByID returns one account, or KindNotFound.
func (db *DB) UserByID(ctx context.Context, id int64) (slicehub.User, error) {
	const op = "postgres.user_by_id"
	u, err := scanUser(db.Pool.QueryRow(ctx, `SELECT `+userColumns+` FROM users WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return u, slicehub.Errorf(op, slicehub.KindNotFound, "user_not_found", "no such account")
	}
	if err != nil {
		return u, wrap(op, err)
	}
	return u, nil
}
