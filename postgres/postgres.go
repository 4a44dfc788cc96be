// Package postgres owns everything Slicehub keeps in PostgreSQL: the gateway
// schema and its migrations, accounts and server-side sessions, the slice
// rows with their recorded lifecycle, and the per-slice databases and roles.
package postgres

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/slicehub/slicehub/postgres/migrations"
)

// DB is the gateway database.
type DB struct {
	Pool *pgxpool.Pool
	// Server names this PostgreSQL server in slices.db_server.
	Server string
	url    string
	log    *slog.Logger
	mon    monitor
}

// Open connects to the gateway database at url (a postgres:// URL or DSN).
func Open(ctx context.Context, url string, log *slog.Logger) (*DB, error) {
	const op = "postgres.open"
	if log == nil {
		log = slog.Default()
	}
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("%s: parse url: %w", op, redact(err))
	}
	// pgx's default pool (max(4, CPUs)) is too small for a gateway that
	// serves sessions while the scheduler provisions slice databases in
	// parallel; an explicit pool_max_conns in the URL still wins.
	if !strings.Contains(url, "pool_max_conns") {
		cfg.MaxConns = 16
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("%s: ping: %w", op, err)
	}
	return &DB{Pool: pool, Server: "default", url: url, log: log.With("component", "postgres")}, nil
}

// Close releases the pool.
func (db *DB) Close() { db.Pool.Close() }

// Migrate applies the embedded migrations that are not applied yet. It is
// safe to run from several gateway replicas at once: goose takes a session
// lock in PostgreSQL.
func (db *DB) Migrate(ctx context.Context) error {
	_, err := db.MigrateVerbose(ctx)
	return err
}

// MigrateResult says what Migrate did.
type MigrateResult = migrations.Result

// MigrateVerbose is Migrate, reporting what it applied (package
// migrations, which slicectl runs too).
func (db *DB) MigrateVerbose(ctx context.Context) (MigrateResult, error) {
	sqlDB := stdlib.OpenDBFromPool(db.Pool)
	defer sqlDB.Close()
	return migrations.Up(ctx, sqlDB)
}

// redact drops a parse error's detail, which can quote the URL and so the password.
func redact(err error) error {
	return fmt.Errorf("invalid database url (%T)", err)
}
