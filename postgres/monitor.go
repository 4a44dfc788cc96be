package postgres

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/slicehub/slicehub"
)

// A slice role owns its database: it can create any object there, set the
// database's search_path, and plant a view named like a catalog view whose
// function runs as whoever reads it. So gateway-side code never reads inside
// a slice database as the gateway's role. It logs in as the monitoring role,
// which can do nothing worth stealing (no CREATEROLE, no CREATEDB, CONNECT
// only on slice databases, nothing granted in the gateway database), with
// search_path pinned to pg_catalog in the startup packet (which overrides
// what the database's owner set), and every name in its queries qualified.
// SET ROLE would not do: a planted function could RESET ROLE.

// Limits every slice role gets, so that one tenant cannot starve the server
// that all share. statement_timeout and idle_in_transaction_session_timeout
// are the role's defaults (a session may change them: they protect against
// runaway queries, not against a hostile slice); CONNECTION LIMIT and
// temp_file_limit (superuser-only to change) bind whatever the slice does.
const (
	SliceConnectionLimit  = 8
	SliceStatementTimeout = "60s"
	SliceIdleInTxTimeout  = "5min"
	SliceTempFileLimit    = "1GB"
)

// sliceRoleLimits are the statements that put the limits on role ident.
// temp_file_limit may be set by a superuser, or (PostgreSQL 15) a role
// granted SET ON PARAMETER temp_file_limit: jobs/README.md says so.
func sliceRoleLimits(ident string) []string {
	return []string{
		fmt.Sprintf(`ALTER ROLE %s NOCREATEDB NOCREATEROLE CONNECTION LIMIT %d`, ident, SliceConnectionLimit),
		fmt.Sprintf(`ALTER ROLE %s SET statement_timeout = '%s'`, ident, SliceStatementTimeout),
		fmt.Sprintf(`ALTER ROLE %s SET idle_in_transaction_session_timeout = '%s'`, ident, SliceIdleInTxTimeout),
		fmt.Sprintf(`ALTER ROLE %s SET temp_file_limit = '%s'`, ident, SliceTempFileLimit),
	}
}

// monitor caches the monitoring role once it is ensured.
type monitor struct {
	mu       sync.Mutex
	role     string
	password string
}

// MonitorRoleName is the monitoring role of the gateway database named
// gatewayDB. Roles belong to the server, not to a database, so each
// gateway database (tests run many on one server) gets its own.
func MonitorRoleName(gatewayDB string) string {
	h := sha256.Sum256([]byte(gatewayDB))
	return "slicehub_monitor_" + hex.EncodeToString(h[:6])
}

// MonitorRole creates the monitoring role once (its password is kept in
// the gateway database, so every replica logs in with the same one) and
// returns its name and password.
func (db *DB) MonitorRole(ctx context.Context) (role, password string, err error) {
	const op = "postgres.monitor_role"
	db.mon.mu.Lock()
	defer db.mon.mu.Unlock()
	if db.mon.role != "" {
		return db.mon.role, db.mon.password, nil
	}
	var gw string
	if err := db.Pool.QueryRow(ctx, `SELECT current_database()`).Scan(&gw); err != nil {
		return "", "", wrap(op, err)
	}
	role = MonitorRoleName(gw)
	if _, err := db.Pool.Exec(ctx, `INSERT INTO monitor_role (rolname, password) VALUES ($1, $2) ON CONFLICT DO NOTHING`,
		role, randomHex(24)); err != nil {
		return "", "", wrap(op, err)
	}
	if err := db.Pool.QueryRow(ctx, `SELECT rolname, password FROM monitor_role`).Scan(&role, &password); err != nil {
		return "", "", wrap(op, err)
	}
	ident := pgx.Identifier{role}.Sanitize()
	// The password is hex; DDL takes no bind parameters.
	stmts := []string{
		fmt.Sprintf(`CREATE ROLE %s LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT CONNECTION LIMIT 16`, ident),
		fmt.Sprintf(`ALTER ROLE %s LOGIN NOCREATEDB NOCREATEROLE NOINHERIT PASSWORD '%s'`, ident, password),
		fmt.Sprintf(`ALTER ROLE %s SET search_path = pg_catalog`, ident),
		fmt.Sprintf(`ALTER ROLE %s SET statement_timeout = '5s'`, ident),
	}
	for _, s := range stmts {
		if _, err := db.Pool.Exec(ctx, s); err != nil {
			var pgErr *pgconn.PgError
			if errors.As(err, &pgErr) && (pgErr.Code == "42710" || pgErr.Code == "23505") {
				continue // exists (another replica made it meanwhile)
			}
			return "", "", wrap(op, fmt.Errorf("monitor role: %s", safePgError(err)))
		}
	}
	db.mon.role, db.mon.password = role, password
	return role, password, nil
}

// SecureSliceDatabases brings every slice database that still exists to
// the current rules: its role's limits, CONNECT revoked from PUBLIC and
// granted to the monitoring role. The daemon runs it at start, so slices
// provisioned by an older release get them too.
func (db *DB) SecureSliceDatabases(ctx context.Context) error {
	const op = "postgres.secure_slice_databases"
	mon, _, err := db.MonitorRole(ctx)
	if err != nil {
		return err
	}
	rows, err := db.Pool.Query(ctx, `SELECT d.datname FROM pg_catalog.pg_database d JOIN slices s ON s.db_name = d.datname
		JOIN pg_catalog.pg_roles r ON r.rolname = d.datname WHERE s.db_dropped_at IS NULL`)
	if err != nil {
		return wrap(op, err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return wrap(op, err)
	}
	for _, name := range names {
		ident := pgx.Identifier{name}.Sanitize()
		for _, s := range append(sliceRoleLimits(ident), databaseGrants(ident, pgx.Identifier{mon}.Sanitize())...) {
			if _, err := db.Pool.Exec(ctx, s); err != nil {
				return wrap(op, fmt.Errorf("%s: %s", name, safePgError(err)))
			}
		}
	}
	if len(names) > 0 {
		db.log.Info("slice databases brought to the current rules", "databases", len(names))
	}
	return nil
}

// databaseGrants: only the slice's own role and the monitoring role may
// open database ident.
func databaseGrants(ident, monitor string) []string {
	return []string{
		fmt.Sprintf(`REVOKE ALL ON DATABASE %s FROM PUBLIC`, ident),
		fmt.Sprintf(`GRANT CONNECT, TEMPORARY ON DATABASE %s TO %s`, ident, ident),
		fmt.Sprintf(`GRANT CONNECT ON DATABASE %s TO %s`, ident, monitor),
	}
}

// monitorConn opens a connection to slice id's database as the monitoring
// role, search_path pinned in the startup packet.
func (db *DB) monitorConn(ctx context.Context, id int64) (*pgx.Conn, error) {
	role, password, err := db.MonitorRole(ctx)
	if err != nil {
		return nil, err
	}
	cfg := db.Pool.Config().ConnConfig.Copy()
	cfg.Database = slicehub.DatabaseName(id)
	cfg.User, cfg.Password = role, password
	cfg.RuntimeParams["application_name"] = "slicehub-telemetry"
	cfg.RuntimeParams["search_path"] = "pg_catalog"
	return pgx.ConnectConfig(ctx, cfg)
}
