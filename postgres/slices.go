package postgres

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/slicehub/slicehub"
)

const sliceColumns = `id, state, coalesce(user_id, 0), coalesce(job_id, ''), db_server, db_name, restarts, created_at, updated_at, state_changed_at`

func scanSlice(row pgx.Row) (slicehub.Slice, error) {
	var s slicehub.Slice
	var state string
	var changed time.Time
	err := row.Scan(&s.ID, &state, &s.UserID, &s.JobID, &s.DBServer, &s.DBName, &s.Restarts, &s.CreatedAt, &s.UpdatedAt, &changed)
	s.State = slicehub.SliceState(state)
	s.StateChangedAt = changed
	return s, err
}

// CreateSlice inserts a slice in state provisioning, bound to userID when it
// is not 0 (an on-demand slice), and records the event. Its database is made
// later by ProvisionDatabase, outside any transaction (CREATE DATABASE cannot
// run in one).
func (db *DB) CreateSlice(ctx context.Context, userID int64, actor, reason string) (slicehub.Slice, error) {
	const op = "postgres.create_slice"
	var s slicehub.Slice
	err := pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error {
		var id int64
		if err := tx.QueryRow(ctx, `SELECT nextval('slices_id_seq')`).Scan(&id); err != nil {
			return err
		}
		var uid any
		if userID != 0 {
			uid = userID
		}
		var err error
		s, err = scanSlice(tx.QueryRow(ctx, `INSERT INTO slices (id, state, user_id, db_server, db_name)
			VALUES ($1, 'provisioning', $2, $3, $4) RETURNING `+sliceColumns, id, uid, db.Server, slicehub.DatabaseName(id)))
		if err != nil {
			return err
		}
		return insertEvent(ctx, tx, s.ID, actor, "", slicehub.StateProvisioning, reason)
	})
	if err != nil {
		if isUniqueViolation(err) {
			return s, slicehub.Errorf(op, slicehub.KindConflict, "slice_exists", "the user already has a slice")
		}
		return s, slicehub.Wrap(op, slicehub.KindInternal, err)
	}
	return s, nil
}

func insertEvent(ctx context.Context, tx pgx.Tx, id int64, actor string, from, to slicehub.SliceState, reason string) error {
	var fromArg any
	if from != "" {
		fromArg = string(from)
	}
	_, err := tx.Exec(ctx, `INSERT INTO slice_events (slice_id, actor, from_state, to_state, reason) VALUES ($1, $2, $3, $4, $5)`,
		id, actor, fromArg, string(to), reason)
	return err
}

// Transition applies c to slice id in one transaction with its event. It
// fails with KindConflict when the slice is not in one of c.From, so two
// actors racing on one slice cannot both win.
func (db *DB) Transition(ctx context.Context, id int64, c slicehub.Change) (slicehub.Slice, error) {
	const op = "postgres.transition"
	var out slicehub.Slice
	err := pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error {
		cur, err := scanSlice(tx.QueryRow(ctx, `SELECT `+sliceColumns+` FROM slices WHERE id = $1 FOR UPDATE`, id))
		if errors.Is(err, pgx.ErrNoRows) {
			return slicehub.Errorf(op, slicehub.KindNotFound, "slice_not_found", "no such slice")
		}
		if err != nil {
			return err
		}
		if !stateIn(cur.State, c.From) {
			return slicehub.Errorf(op, slicehub.KindConflict, "slice_state", "slice %d is %s", id, cur.State)
		}
		if cur.State != c.To && !slicehub.CanTransition(cur.State, c.To) {
			return slicehub.Errorf(op, slicehub.KindConflict, "slice_transition", "slice %d cannot go from %s to %s", id, cur.State, c.To)
		}
		user := any(nil)
		switch {
		case c.SetUser > 0:
			user = c.SetUser
		case c.SetUser == 0 && cur.UserID != 0:
			user = cur.UserID
		}
		job := any(nil)
		if c.SetJob != nil {
			if *c.SetJob != "" {
				job = *c.SetJob
			}
		} else if cur.JobID != "" {
			job = cur.JobID
		}
		restarts := cur.Restarts
		if c.AddRestart {
			restarts++
		}
		out, err = scanSlice(tx.QueryRow(ctx, `UPDATE slices SET state = $2, user_id = $3, job_id = $4, restarts = $5,
				updated_at = now(), state_changed_at = CASE WHEN state = $2 THEN state_changed_at ELSE now() END
			WHERE id = $1 RETURNING `+sliceColumns, id, string(c.To), user, job, restarts))
		if err != nil {
			return err
		}
		if cur.State != c.To || c.Reason != "" {
			return insertEvent(ctx, tx, id, c.Actor, cur.State, c.To, c.Reason)
		}
		return nil
	})
	if err != nil {
		var e *slicehub.Error
		if errors.As(err, &e) {
			return out, err
		}
		if isUniqueViolation(err) {
			return out, slicehub.Errorf(op, slicehub.KindConflict, "already_assigned", "the user already has a slice")
		}
		return out, slicehub.Wrap(op, slicehub.KindInternal, err)
	}
	return out, nil
}

func stateIn(s slicehub.SliceState, set []slicehub.SliceState) bool {
	for _, v := range set {
		if v == s {
			return true
		}
	}
	return false
}

// ClaimWarm binds userID to the oldest warm slice, atomically: concurrent
// claims skip each other's locked rows instead of waiting or double-binding.
// It returns KindNotFound when no warm slice is free.
func (db *DB) ClaimWarm(ctx context.Context, userID int64, actor string) (slicehub.Slice, error) {
	return db.claim(ctx, userID, actor, slicehub.StateWarm, slicehub.StateAssigned, "claimed from the warm pool")
}

// ClaimProvisioning binds userID to the oldest unbound slice that is still
// starting; it becomes assigned when healthy. KindNotFound when none.
func (db *DB) ClaimProvisioning(ctx context.Context, userID int64, actor string) (slicehub.Slice, error) {
	return db.claim(ctx, userID, actor, slicehub.StateProvisioning, slicehub.StateProvisioning, "claimed while starting")
}

func (db *DB) claim(ctx context.Context, userID int64, actor string, from, to slicehub.SliceState, reason string) (slicehub.Slice, error) {
	const op = "postgres.claim"
	var out slicehub.Slice
	err := pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error {
		var err error
		out, err = scanSlice(tx.QueryRow(ctx, `UPDATE slices SET state = $2, user_id = $3, updated_at = now(),
				state_changed_at = CASE WHEN state = $2 THEN state_changed_at ELSE now() END
			WHERE id = (SELECT id FROM slices WHERE state = $1 AND user_id IS NULL ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)
			RETURNING `+sliceColumns, string(from), string(to), userID))
		if errors.Is(err, pgx.ErrNoRows) {
			return slicehub.Errorf(op, slicehub.KindNotFound, "pool_empty", "no free slice")
		}
		if err != nil {
			return err
		}
		return insertEvent(ctx, tx, out.ID, actor, from, to, reason)
	})
	if err != nil {
		var e *slicehub.Error
		if errors.As(err, &e) {
			return out, err
		}
		if isUniqueViolation(err) {
			return out, slicehub.Errorf(op, slicehub.KindConflict, "already_assigned", "the user already has a slice")
		}
		return out, slicehub.Wrap(op, slicehub.KindInternal, err)
	}
	return out, nil
}

// Slice returns one slice.
func (db *DB) Slice(ctx context.Context, id int64) (slicehub.Slice, error) {
	const op = "postgres.slice"
	s, err := scanSlice(db.Pool.QueryRow(ctx, `SELECT `+sliceColumns+` FROM slices WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return s, slicehub.Errorf(op, slicehub.KindNotFound, "slice_not_found", "no such slice")
	}
	return s, slicehub.Wrap(op, slicehub.KindInternal, err)
}

// SliceForUser returns the slice bound to userID.
func (db *DB) SliceForUser(ctx context.Context, userID int64) (slicehub.Slice, error) {
	const op = "postgres.slice_for_user"
	s, err := scanSlice(db.Pool.QueryRow(ctx, `SELECT `+sliceColumns+` FROM slices WHERE user_id = $1`, userID))
	if errors.Is(err, pgx.ErrNoRows) {
		return s, slicehub.Errorf(op, slicehub.KindNotFound, "no_slice", "no slice is bound to this account")
	}
	return s, slicehub.Wrap(op, slicehub.KindInternal, err)
}

// Slices lists the slices in the given states (all when none), by id.
func (db *DB) Slices(ctx context.Context, states ...slicehub.SliceState) ([]slicehub.Slice, error) {
	const op = "postgres.slices"
	names := make([]string, len(states))
	for i, s := range states {
		names[i] = string(s)
	}
	rows, err := db.Pool.Query(ctx, `SELECT `+sliceColumns+` FROM slices WHERE cardinality($1::text[]) = 0 OR state = ANY($1) ORDER BY id`, names)
	if err != nil {
		return nil, slicehub.Wrap(op, slicehub.KindInternal, err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (slicehub.Slice, error) { return scanSlice(r) })
	return out, slicehub.Wrap(op, slicehub.KindInternal, err)
}

// SliceEvents returns a slice's recorded transitions, oldest first.
func (db *DB) SliceEvents(ctx context.Context, id int64) ([]slicehub.SliceEvent, error) {
	const op = "postgres.slice_events"
	rows, err := db.Pool.Query(ctx, `SELECT id, slice_id, at, actor, coalesce(from_state, ''), to_state, reason
		FROM slice_events WHERE slice_id = $1 ORDER BY id`, id)
	if err != nil {
		return nil, slicehub.Wrap(op, slicehub.KindInternal, err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (slicehub.SliceEvent, error) {
		var e slicehub.SliceEvent
		var from, to string
		err := r.Scan(&e.ID, &e.SliceID, &e.At, &e.Actor, &from, &to, &e.Reason)
		e.From, e.To = slicehub.SliceState(from), slicehub.SliceState(to)
		return e, err
	})
	return out, slicehub.Wrap(op, slicehub.KindInternal, err)
}

// ProvisionDatabase creates the slice's own login role and database, once:
// a second call finds them and only makes sure the grants are right. The
// role's password and the gateway token are generated here and stored in
// slice_secrets, apart from the slice row. CONNECT is revoked from PUBLIC so
// that no other slice's role can open this database.
func (db *DB) ProvisionDatabase(ctx context.Context, id int64) error {
	const op = "postgres.provision_database"
	name := slicehub.DatabaseName(id)
	ident := pgx.Identifier{name}.Sanitize()

	password, token := randomHex(24), randomHex(32)
	// Keep the first secrets if an earlier attempt stored them.
	if _, err := db.Pool.Exec(ctx, `INSERT INTO slice_secrets (slice_id, db_role, db_password, gateway_token)
		VALUES ($1, $2, $3, $4) ON CONFLICT (slice_id) DO NOTHING`, id, name, password, token); err != nil {
		return slicehub.Wrap(op, slicehub.KindInternal, err)
	}
	if err := db.Pool.QueryRow(ctx, `SELECT db_password FROM slice_secrets WHERE slice_id = $1`, id).Scan(&password); err != nil {
		return slicehub.Wrap(op, slicehub.KindInternal, err)
	}

	var roleExists, dbExists bool
	if err := db.Pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1),
		EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, name).Scan(&roleExists, &dbExists); err != nil {
		return slicehub.Wrap(op, slicehub.KindInternal, err)
	}
	// INHERIT (the default) matters: the database owner reaches the public
	// schema through the implicit pg_database_owner role. The password is
	// hex, so quoting it as a literal is exact; DDL takes no
	// bind parameters. The statements are never logged.
	stmts := []string{}
	if !roleExists {
		stmts = append(stmts, fmt.Sprintf(`CREATE ROLE %s LOGIN CONNECTION LIMIT 8 PASSWORD '%s'`, ident, password))
	} else {
		stmts = append(stmts, fmt.Sprintf(`ALTER ROLE %s LOGIN PASSWORD '%s'`, ident, password))
	}
	if !dbExists {
		stmts = append(stmts, fmt.Sprintf(`CREATE DATABASE %s OWNER %s`, ident, ident))
	}
	stmts = append(stmts,
		fmt.Sprintf(`REVOKE ALL ON DATABASE %s FROM PUBLIC`, ident),
		fmt.Sprintf(`GRANT CONNECT, TEMPORARY ON DATABASE %s TO %s`, ident, ident),
	)
	for _, s := range stmts {
		if _, err := db.Pool.Exec(ctx, s); err != nil {
			var pgErr *pgconn.PgError
			// A concurrent provisioner may have won the race; that is fine.
			if errors.As(err, &pgErr) && (pgErr.Code == "42710" || pgErr.Code == "42P04") {
				continue
			}
			return slicehub.Wrap(op, slicehub.KindInternal, fmt.Errorf("provision %s: %s", name, safePgError(err)))
		}
	}
	return nil
}

// DropDatabase removes a slice's database and role (after retention).
func (db *DB) DropDatabase(ctx context.Context, id int64) error {
	const op = "postgres.drop_database"
	ident := pgx.Identifier{slicehub.DatabaseName(id)}.Sanitize()
	for _, s := range []string{`DROP DATABASE IF EXISTS ` + ident + ` WITH (FORCE)`, `DROP ROLE IF EXISTS ` + ident} {
		if _, err := db.Pool.Exec(ctx, s); err != nil {
			return slicehub.Wrap(op, slicehub.KindInternal, err)
		}
	}
	return nil
}

// LockDownPublicConnect revokes CONNECT from PUBLIC on the gateway database
// and on the maintenance database, so that a slice role can open nothing but
// its own database.
func (db *DB) LockDownPublicConnect(ctx context.Context) error {
	const op = "postgres.lock_down"
	var gw string
	if err := db.Pool.QueryRow(ctx, `SELECT current_database()`).Scan(&gw); err != nil {
		return slicehub.Wrap(op, slicehub.KindInternal, err)
	}
	for _, name := range []string{gw, "postgres"} {
		if _, err := db.Pool.Exec(ctx, `REVOKE CONNECT ON DATABASE `+pgx.Identifier{name}.Sanitize()+` FROM PUBLIC`); err != nil {
			return slicehub.Wrap(op, slicehub.KindInternal, err)
		}
	}
	return nil
}

// SliceCredentials returns what slice id needs to start: its database URL,
// pointing at this server with its own role, and its gateway token.
func (db *DB) SliceCredentials(ctx context.Context, id int64, dbHost string) (slicehub.SliceCredentials, error) {
	const op = "postgres.slice_credentials"
	var role, password, token string
	err := db.Pool.QueryRow(ctx, `SELECT db_role, db_password, gateway_token FROM slice_secrets WHERE slice_id = $1`, id).Scan(&role, &password, &token)
	if errors.Is(err, pgx.ErrNoRows) {
		return slicehub.SliceCredentials{}, slicehub.Errorf(op, slicehub.KindUnavailable, "not_provisioned", "the slice database is not ready")
	}
	if err != nil {
		return slicehub.SliceCredentials{}, slicehub.Wrap(op, slicehub.KindInternal, err)
	}
	cfg := db.Pool.Config().ConnConfig
	host := cfg.Host
	if dbHost != "" {
		host = dbHost
	}
	u := url.URL{Scheme: "postgres", User: url.UserPassword(role, password), Host: fmt.Sprintf("%s:%d", host, cfg.Port),
		Path: "/" + slicehub.DatabaseName(id), RawQuery: "sslmode=prefer&pool_max_conns=3"}
	return slicehub.SliceCredentials{DatabaseURL: u.String(), GatewayToken: token}, nil
}

// GatewayToken returns the secret the gateway presents to slice id.
func (db *DB) GatewayToken(ctx context.Context, id int64) (string, error) {
	const op = "postgres.gateway_token"
	var token string
	err := db.Pool.QueryRow(ctx, `SELECT gateway_token FROM slice_secrets WHERE slice_id = $1`, id).Scan(&token)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", slicehub.Errorf(op, slicehub.KindUnavailable, "not_provisioned", "the slice is not ready")
	}
	return token, slicehub.Wrap(op, slicehub.KindInternal, err)
}

// ClaimBootstrap records that allocID fetched slice id's credentials. Each
// allocation may do so once: a second claim is KindConflict.
func (db *DB) ClaimBootstrap(ctx context.Context, allocID string, id int64) error {
	const op = "postgres.claim_bootstrap"
	tag, err := db.Pool.Exec(ctx, `INSERT INTO slice_bootstraps (alloc_id, slice_id) VALUES ($1, $2) ON CONFLICT DO NOTHING`, allocID, id)
	if err != nil {
		return slicehub.Wrap(op, slicehub.KindInternal, err)
	}
	if tag.RowsAffected() == 0 {
		return slicehub.Errorf(op, slicehub.KindConflict, "already_bootstrapped", "this allocation has already fetched its credentials")
	}
	return nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return hex.EncodeToString(b)
}

func isUniqueViolation(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "23505"
}

// safePgError keeps a PostgreSQL error's code and message but never the
// statement, which for role DDL contains a password.
func safePgError(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code + " " + pgErr.Message
	}
	return err.Error()
}
