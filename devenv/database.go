package devenv

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// EnsureDatabase creates database name (owned by the superuser) unless it
// exists, and returns its URL. The dev platform keeps the gateway schema in
// a database of its own rather than in the maintenance database "postgres",
// which it locks down like every database a slice must not open.
func (p *Postgres) EnsureDatabase(ctx context.Context, name string) (string, error) {
	conn, err := pgx.Connect(ctx, p.URL)
	if err != nil {
		return "", fmt.Errorf("devenv.ensure_database: %w", err)
	}
	defer conn.Close(ctx)
	var exists bool
	if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, name).Scan(&exists); err != nil {
		return "", fmt.Errorf("devenv.ensure_database: %w", err)
	}
	if !exists {
		if _, err := conn.Exec(ctx, `CREATE DATABASE `+pgx.Identifier{name}.Sanitize()); err != nil {
			return "", fmt.Errorf("devenv.ensure_database: %w", err)
		}
	}
	return p.DatabaseURL(name), nil
}
