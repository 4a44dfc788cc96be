package postgres

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/slicehub/slicehub"
	"github.com/slicehub/slicehub/postgres/bootstrap"
)

// Backups and restores of one database with pg_dump and pg_restore in
// custom format, streamed: the dump goes from pg_dump's stdout to the
// writer, the restore from the reader to pg_restore's stdin, so neither is
// held in memory or on the gateway's disk.

// pgToolEnv is the environment of a pg_dump or pg_restore run as the
// gateway's role: the connection settings, with the password in the
// environment, never in the arguments (which ps shows).
func (db *DB) pgToolEnv(app string) []string {
	cfg := db.Pool.Config().ConnConfig
	env := []string{}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PG") {
			env = append(env, kv)
		}
	}
	env = append(env, "PGHOST="+cfg.Host, "PGPORT="+strconv.Itoa(int(cfg.Port)), "PGUSER="+cfg.User,
		"PGCONNECT_TIMEOUT=10", "PGAPPNAME="+app)
	if cfg.Password != "" {
		env = append(env, "PGPASSWORD="+cfg.Password)
	}
	if cfg.TLSConfig != nil {
		env = append(env, "PGSSLMODE=require")
	}
	return env
}

// FindPgTool returns the newest /usr/lib/postgresql/<major>/bin/<name>, or
// name from PATH (see FindPgDump).
func FindPgTool(name string) string { return bootstrap.FindPgTool(name) }

// GatewayDatabase is the name of the database this DB is connected to.
func (db *DB) GatewayDatabase() string { return db.Pool.Config().ConnConfig.Database }

// DumpTo writes a custom-format pg_dump of database name to w. KindNotFound
// when the database does not exist. A failure after the first bytes were
// written leaves w with a truncated dump, which pg_restore refuses.
func (db *DB) DumpTo(ctx context.Context, name string, w io.Writer, pgDump string) error {
	const op = "postgres.dump"
	if err := db.DatabaseExists(ctx, name); err != nil {
		return err
	}
	if pgDump == "" {
		pgDump = FindPgTool("pg_dump")
	}
	cmd := exec.CommandContext(ctx, pgDump, "--format=custom", "--no-password", "--dbname="+name)
	cmd.Env = db.pgToolEnv("slicehub-backup")
	cmd.Stdout = w
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return wrap(op, fmt.Errorf("pg_dump %s: %w: %s", name, err, strings.TrimSpace(stderr.String())))
	}
	return nil
}

// DatabaseExists is nil when database name exists, KindNotFound when not.
func (db *DB) DatabaseExists(ctx context.Context, name string) error {
	const op = "postgres.database_exists"
	var exists bool
	if err := db.Pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, name).Scan(&exists); err != nil {
		return wrap(op, err)
	}
	if !exists {
		return slicehub.Errorf(op, slicehub.KindNotFound, "no_database", "database %s does not exist", name)
	}
	return nil
}

// RestoreSliceDatabase replaces the content of slice id's database with the
// custom-format dump read from r. The slice must not run (the caller
// suspends it): the swap ends every connection to the database.
//
// The dump is restored into a scratch database first, as the slice's own
// role (pg_restore --role, --no-owner), so that whatever the dump came from,
// the slice's role owns every object. Only when pg_restore succeeded whole
// are the two databases swapped, by two renames in one transaction, and the
// old one dropped. A dump that is corrupt, truncated or fails half-way
// therefore leaves the slice's data exactly as it was. (Restoring in place
// with --clean --single-transaction would also roll back, but it keeps
// objects the dump does not have, and holds locks on the live database for
// the whole restore.) KindInvalid when pg_restore refuses the dump.
func (db *DB) RestoreSliceDatabase(ctx context.Context, id int64, r io.Reader, pgRestore string) error {
	const op = "postgres.restore_slice_database"
	name := slicehub.DatabaseName(id)
	if err := db.DatabaseExists(ctx, name); err != nil {
		return err
	}
	scratch, old := name+"_restore", name+"_old"
	// The database and its role share the name.
	ident := pgx.Identifier{name}.Sanitize()
	role := ident
	sIdent, oIdent := pgx.Identifier{scratch}.Sanitize(), pgx.Identifier{old}.Sanitize()
	// Leftovers of an interrupted restore are never anyone's data: the swap
	// is atomic, and the old database is only dropped after it.
	for _, s := range []string{
		`DROP DATABASE IF EXISTS ` + sIdent + ` WITH (FORCE)`,
		`DROP DATABASE IF EXISTS ` + oIdent + ` WITH (FORCE)`,
		`CREATE DATABASE ` + sIdent + ` OWNER ` + role,
		`REVOKE ALL ON DATABASE ` + sIdent + ` FROM PUBLIC`,
	} {
		if _, err := db.Pool.Exec(ctx, s); err != nil {
			return wrap(op, fmt.Errorf("%s", safePgError(err)))
		}
	}
	dropScratch := func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if _, err := db.Pool.Exec(cctx, `DROP DATABASE IF EXISTS `+sIdent+` WITH (FORCE)`); err != nil {
			db.log.Warn("could not drop a scratch database of a restore", "database", scratch, "err", safePgError(err))
		}
	}
	if pgRestore == "" {
		pgRestore = FindPgTool("pg_restore")
	}
	cmd := exec.CommandContext(ctx, pgRestore, "--no-password", "--dbname="+scratch, "--role="+name,
		"--no-owner", "--no-privileges", "--exit-on-error", "--single-transaction")
	cmd.Env = db.pgToolEnv("slicehub-restore")
	cmd.Stdin = r
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		dropScratch()
		if ctx.Err() != nil {
			return wrap(op, ctx.Err())
		}
		msg := strings.TrimSpace(stderr.String())
		if len(msg) > 300 {
			msg = msg[:300] + "…"
		}
		return &slicehub.Error{Op: op, Kind: slicehub.KindInvalid, Code: "restore_failed",
			Message: "pg_restore refused the dump; the slice's data is unchanged: " + msg, Err: err}
	}
	tx, err := db.Pool.Begin(ctx)
	if err != nil {
		dropScratch()
		return wrap(op, err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	// A rename needs the database to itself; pg_terminate_backend with a
	// timeout waits for each backend to be gone.
	if _, err := tx.Exec(ctx, `SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE datname = $1`, name); err != nil {
		dropScratch()
		return wrap(op, fmt.Errorf("ending connections: %s", safePgError(err)))
	}
	for _, s := range []string{
		`ALTER DATABASE ` + ident + ` RENAME TO ` + oIdent,
		`ALTER DATABASE ` + sIdent + ` RENAME TO ` + ident,
		`GRANT CONNECT, TEMPORARY ON DATABASE ` + ident + ` TO ` + role,
	} {
		if _, err := tx.Exec(ctx, s); err != nil {
			dropScratch()
			return wrap(op, fmt.Errorf("swap: %s", safePgError(err)))
		}
	}
	if err := tx.Commit(ctx); err != nil {
		dropScratch()
		return wrap(op, err)
	}
	if _, err := db.Pool.Exec(ctx, `DROP DATABASE IF EXISTS `+oIdent+` WITH (FORCE)`); err != nil {
		// The restore is done; the old copy only takes space until the next.
		db.log.Warn("restored, but the old database was not dropped", "database", old, "err", safePgError(err))
	}
	return nil
}
