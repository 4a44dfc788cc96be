// Package migrations holds the gateway schema (the goose migrations in this
// directory, embedded) and applies it. Package postgres migrates at every
// gateway start and for `slicehub migrate`; slicectl does not link it (nor
// goose).
package migrations

import (
	"context"
	"database/sql"
	"embed"
	"fmt"

	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"
)

//go:embed *.sql
var files embed.FS

// Result says what Up did.
type Result struct {
	Applied int   // migrations applied by this call
	Version int64 // schema version afterwards
}

// Up applies the embedded migrations that are not applied yet. It is
// safe to run from several gateway replicas at once: goose takes a session
// lock in PostgreSQL.
func Up(ctx context.Context, db *sql.DB) (Result, error) {
	const op = "postgres.migrate"
	locker, err := lock.NewPostgresSessionLocker()
	if err != nil {
		return Result{}, fmt.Errorf("%s: %w", op, err)
	}
	provider, err := goose.NewProvider(goose.DialectPostgres, db, files, goose.WithSessionLocker(locker))
	if err != nil {
		return Result{}, fmt.Errorf("%s: %w", op, err)
	}
	results, err := provider.Up(ctx)
	if err != nil {
		return Result{}, fmt.Errorf("%s: %w", op, err)
	}
	version, err := provider.GetDBVersion(ctx)
	if err != nil {
		return Result{}, fmt.Errorf("%s: %w", op, err)
	}
	return Result{Applied: len(results), Version: version}, nil
}
