package postgres

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/slicehub/slicehub"
	"github.com/slicehub/slicehub/postgres/bootstrap"
)

const sliceColumns = `id, state, coalesce(user_id, 0), coalesce(job_id, ''), db_server, db_name, restarts, created_at, updated_at, state_changed_at,
	coalesce(alloc_id, ''), coalesce(alloc_addr, '')`

func scanSlice(row pgx.Row) (slicehub.Slice, error) {
	var s slicehub.Slice
	var state string
	var changed time.Time
	err := row.Scan(&s.ID, &state, &s.UserID, &s.JobID, &s.DBServer, &s.DBName, &s.Restarts, &s.CreatedAt, &s.UpdatedAt, &changed,
		&s.AllocID, &s.AllocAddr)
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
		return s, wrap(op, err)
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
	var out slicehub.Slice
	err := pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error {
		var err error
		out, err = TransitionTx(ctx, tx, id, c)
		return err
	})
	return out, err
}

// TransitionTx is Transition inside the caller's transaction, so that a
// slice's change commits or rolls back with the caller's own writes (a
// billing event and the suspension it causes, say). Nomad is not touched:
// the reconciler makes Nomad follow the new state.
func TransitionTx(ctx context.Context, tx pgx.Tx, id int64, c slicehub.Change) (slicehub.Slice, error) {
	const op = "postgres.transition"
	var out slicehub.Slice
	err := func() error {
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
		if c.To == slicehub.StateWarm && user != nil {
			// A user claimed the slice while it was starting, after the
			// caller read it: warm is for unclaimed slices only (the table's
			// check says so too). The caller re-reads and assigns instead.
			return slicehub.Errorf(op, slicehub.KindConflict, "slice_claimed", "slice %d was claimed by a user", id)
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
		// dispatched_at follows job_id: it says since when the current job
		// exists, for the progress a waiting user sees.
		out, err = scanSlice(tx.QueryRow(ctx, `UPDATE slices SET state = $2, user_id = $3, job_id = $4, restarts = $5,
				updated_at = now(), state_changed_at = CASE WHEN state = $2 THEN state_changed_at ELSE now() END,
				dispatched_at = CASE WHEN $4::text IS NULL THEN NULL
					WHEN $4::text IS DISTINCT FROM job_id THEN now() ELSE dispatched_at END,
				alloc_id = CASE WHEN $4::text IS DISTINCT FROM job_id THEN NULL ELSE alloc_id END,
				alloc_addr = CASE WHEN $4::text IS DISTINCT FROM job_id THEN NULL ELSE alloc_addr END
			WHERE id = $1 RETURNING `+sliceColumns, id, string(c.To), user, job, restarts))
		if err != nil {
			return err
		}
		if cur.State != c.To || c.Reason != "" {
			return insertEvent(ctx, tx, id, c.Actor, cur.State, c.To, c.Reason)
		}
		return nil
	}()
	return out, assignmentError(op, err)
}

// assignmentError classifies an error of a transaction that binds users to
// slices: the platform's own errors pass through, the unique index on
// slices.user_id becomes a conflict, anything else is internal.
func assignmentError(op string, err error) error {
	if err == nil {
		return nil
	}
	var e *slicehub.Error
	if errors.As(err, &e) {
		return err
	}
	if isUniqueViolation(err) {
		return slicehub.Errorf(op, slicehub.KindConflict, "already_assigned", "the user already has a slice")
	}
	return wrap(op, err)
}

// stateNames are states as a text[] parameter (state = ANY($1)).
func stateNames(states []slicehub.SliceState) []string {
	names := make([]string, len(states))
	for i, s := range states {
		names[i] = string(s)
	}
	return names
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
	return out, assignmentError(op, err)
}

// Slice returns one slice.
func (db *DB) Slice(ctx context.Context, id int64) (slicehub.Slice, error) {
	const op = "postgres.slice"
	s, err := scanSlice(db.Pool.QueryRow(ctx, `SELECT `+sliceColumns+` FROM slices WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return s, slicehub.Errorf(op, slicehub.KindNotFound, "slice_not_found", "no such slice")
	}
	return s, wrap(op, err)
}

// SliceForUser returns the slice bound to userID.
func (db *DB) SliceForUser(ctx context.Context, userID int64) (slicehub.Slice, error) {
	const op = "postgres.slice_for_user"
	s, err := scanSlice(db.Pool.QueryRow(ctx, `SELECT `+sliceColumns+` FROM slices WHERE user_id = $1`, userID))
	if errors.Is(err, pgx.ErrNoRows) {
		return s, slicehub.Errorf(op, slicehub.KindNotFound, "no_slice", "no slice is bound to this account")
	}
	return s, wrap(op, err)
}

// Slices lists the slices in the given states (all when none), by id.
func (db *DB) Slices(ctx context.Context, states ...slicehub.SliceState) ([]slicehub.Slice, error) {
	const op = "postgres.slices"
	rows, err := db.Pool.Query(ctx, `SELECT `+sliceColumns+` FROM slices WHERE cardinality($1::text[]) = 0 OR state = ANY($1) ORDER BY id`,
		stateNames(states))
	if err != nil {
		return nil, wrap(op, err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (slicehub.Slice, error) { return scanSlice(r) })
	return out, wrap(op, err)
}

// SliceEvents returns a slice's recorded transitions, oldest first.
func (db *DB) SliceEvents(ctx context.Context, id int64) ([]slicehub.SliceEvent, error) {
	const op = "postgres.slice_events"
	rows, err := db.Pool.Query(ctx, `SELECT id, slice_id, at, actor, coalesce(from_state, ''), to_state, reason
		FROM slice_events WHERE slice_id = $1 ORDER BY id`, id)
	if err != nil {
		return nil, wrap(op, err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (slicehub.SliceEvent, error) {
		var e slicehub.SliceEvent
		var from, to string
		err := r.Scan(&e.ID, &e.SliceID, &e.At, &e.Actor, &from, &to, &e.Reason)
		e.From, e.To = slicehub.SliceState(from), slicehub.SliceState(to)
		return e, err
	})
	return out, wrap(op, err)
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

	// Two provisioners of one slice (a retry overlapping a slow first try)
	// would race on the catalogs: CREATE ROLE and CREATE DATABASE then fail
	// with a unique violation on pg_authid or pg_database, not with
	// "already exists". A session advisory lock per slice serialises them;
	// everything below runs on the connection that holds it.
	conn, err := db.Pool.Acquire(ctx)
	if err != nil {
		return wrap(op, err)
	}
	defer conn.Release()
	const lockClass = 0x51CE // "slice": the advisory lock namespace of provisioning
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock($1, ($2 % 2147483647)::int)`, lockClass, id); err != nil {
		return wrap(op, err)
	}
	defer func() {
		// A fresh context: the caller's may be done, and the lock must not
		// stay with a connection that returns to the pool.
		uctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := conn.Exec(uctx, `SELECT pg_advisory_unlock($1, ($2 % 2147483647)::int)`, lockClass, id); err != nil {
			conn.Conn().Close(uctx) // drops the session and with it the lock
		}
	}()

	password, token := randomHex(24), randomHex(32)
	// Keep the first secrets if an earlier attempt stored them.
	if _, err := conn.Exec(ctx, `INSERT INTO slice_secrets (slice_id, db_role, db_password, gateway_token)
		VALUES ($1, $2, $3, $4) ON CONFLICT (slice_id) DO NOTHING`, id, name, password, token); err != nil {
		return wrap(op, err)
	}
	if err := conn.QueryRow(ctx, `SELECT db_password FROM slice_secrets WHERE slice_id = $1`, id).Scan(&password); err != nil {
		return wrap(op, err)
	}

	var roleExists, dbExists bool
	if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1),
		EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, name).Scan(&roleExists, &dbExists); err != nil {
		return wrap(op, err)
	}
	mon, _, err := db.MonitorRole(ctx)
	if err != nil {
		return err
	}
	// INHERIT (the default) matters: the database owner reaches the public
	// schema through the implicit pg_database_owner role. The password is
	// hex, so quoting it as a literal is exact; DDL takes no bind
	// parameters. The statements are never logged.
	stmts := []string{}
	if !roleExists {
		stmts = append(stmts, fmt.Sprintf(`CREATE ROLE %s LOGIN PASSWORD '%s'`, ident, password))
	} else {
		stmts = append(stmts, fmt.Sprintf(`ALTER ROLE %s LOGIN PASSWORD '%s'`, ident, password))
	}
	stmts = append(stmts, sliceRoleLimits(ident)...)
	if !dbExists {
		stmts = append(stmts, fmt.Sprintf(`CREATE DATABASE %s OWNER %s`, ident, ident))
	}
	stmts = append(stmts, databaseGrants(ident, pgx.Identifier{mon}.Sanitize())...)
	for _, s := range stmts {
		if _, err := conn.Exec(ctx, s); err != nil {
			var pgErr *pgconn.PgError
			// A concurrent provisioner may have won the race; that is fine.
			if errors.As(err, &pgErr) && (pgErr.Code == "42710" || pgErr.Code == "42P04") {
				continue
			}
			return wrap(op, fmt.Errorf("provision %s: %s", name, safePgError(err)))
		}
	}
	// The first completed provisioning is the "database ready" stage.
	if _, err := conn.Exec(ctx, `UPDATE slices SET db_ready_at = now() WHERE id = $1 AND db_ready_at IS NULL`, id); err != nil {
		return wrap(op, err)
	}
	return nil
}

// RecordPlacement records allocID, at addr, as the current allocation of
// slice id, provided jobID is still the slice's job. It reports whether
// anything changed; a change is announced on slice_changed (the slices
// trigger), on which every replica's route table reloads its placements.
func (db *DB) RecordPlacement(ctx context.Context, id int64, jobID, allocID, addr string) (bool, error) {
	const op = "postgres.record_placement"
	tag, err := db.Pool.Exec(ctx, `UPDATE slices SET alloc_id = $3, alloc_addr = NULLIF($4, '')
		WHERE id = $1 AND job_id = $2 AND (alloc_id IS DISTINCT FROM $3 OR alloc_addr IS DISTINCT FROM NULLIF($4, ''))`,
		id, jobID, allocID, addr)
	if err != nil {
		return false, slicehub.Wrap(op, slicehub.KindUnavailable, err)
	}
	return tag.RowsAffected() > 0, nil
}

// Placements returns the recorded current allocation of every slice that
// has one and is not retired: what the route table may route to.
func (db *DB) Placements(ctx context.Context) (map[int64]slicehub.Placement, error) {
	const op = "postgres.placements"
	rows, err := db.Pool.Query(ctx, `SELECT id, alloc_id, coalesce(alloc_addr, '') FROM slices
		WHERE alloc_id IS NOT NULL AND state = ANY($1)`, stateNames(slicehub.StatesWhere(slicehub.SliceState.Live)))
	if err != nil {
		return nil, slicehub.Wrap(op, slicehub.KindUnavailable, err)
	}
	out := map[int64]slicehub.Placement{}
	var id int64
	var p slicehub.Placement
	if _, err := pgx.ForEachRow(rows, []any{&id, &p.AllocID, &p.Addr}, func() error {
		out[id] = p
		return nil
	}); err != nil {
		return nil, slicehub.Wrap(op, slicehub.KindUnavailable, err)
	}
	return out, nil
}

// DropDatabase removes a slice's database and role (after retention).
func (db *DB) DropDatabase(ctx context.Context, id int64) error {
	const op = "postgres.drop_database"
	ident := pgx.Identifier{slicehub.DatabaseName(id)}.Sanitize()
	for _, s := range []string{`DROP DATABASE IF EXISTS ` + ident + ` WITH (FORCE)`, `DROP ROLE IF EXISTS ` + ident} {
		if _, err := db.Pool.Exec(ctx, s); err != nil {
			return wrap(op, err)
		}
	}
	return nil
}

// LockDownPublicConnect revokes CONNECT from PUBLIC on the gateway database,
// on the maintenance database and on template1, so that a slice role can
// open nothing but its own database. (template1 matters beyond its emptiness:
// whatever a role could create there would be copied into every database
// created later. CREATE DATABASE by the superuser is not affected.)
func (db *DB) LockDownPublicConnect(ctx context.Context) error {
	const op = "postgres.lock_down"
	var gw string
	if err := db.Pool.QueryRow(ctx, `SELECT current_database()`).Scan(&gw); err != nil {
		return wrap(op, err)
	}
	for _, name := range []string{gw, "postgres", "template1"} {
		if _, err := db.Pool.Exec(ctx, `REVOKE CONNECT ON DATABASE `+pgx.Identifier{name}.Sanitize()+` FROM PUBLIC`); err != nil {
			return wrap(op, err)
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
		return slicehub.SliceCredentials{}, wrap(op, err)
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
	return token, wrap(op, err)
}

// ClaimBootstrap records that allocID fetched slice id's credentials and
// returns them, freshly rotated: every allocation gets a new database
// password and a new gateway token, in the transaction that records its
// claim, so the previous allocation's are worthless from the commit on (the
// gateway's replicas drop the cached token on slice_changed). The previous
// allocation's database sessions are then ended. Each allocation may claim
// once: a second claim is KindConflict.
func (db *DB) ClaimBootstrap(ctx context.Context, allocID string, id int64, dbHost string) (slicehub.SliceCredentials, error) {
	const op = "postgres.claim_bootstrap"
	var role string
	err := pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `INSERT INTO slice_bootstraps (alloc_id, slice_id) VALUES ($1, $2) ON CONFLICT DO NOTHING`, allocID, id)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return slicehub.Errorf(op, slicehub.KindConflict, "already_bootstrapped", "this allocation has already fetched its credentials")
		}
		password, token := randomHex(24), randomHex(32)
		err = tx.QueryRow(ctx, `UPDATE slice_secrets SET db_password = $2, gateway_token = $3 WHERE slice_id = $1 RETURNING db_role`,
			id, password, token).Scan(&role)
		if errors.Is(err, pgx.ErrNoRows) {
			return slicehub.Errorf(op, slicehub.KindUnavailable, "not_provisioned", "the slice database is not ready")
		}
		if err != nil {
			return err
		}
		// Role DDL is transactional: the password changes at the commit,
		// with the claim. Hex needs no quoting beyond the literal's.
		if _, err := tx.Exec(ctx, fmt.Sprintf(`ALTER ROLE %s PASSWORD '%s'`, pgx.Identifier{role}.Sanitize(), password)); err != nil {
			return fmt.Errorf("rotate the password: %s", safePgError(err))
		}
		_, err = tx.Exec(ctx, `SELECT pg_notify('slice_changed', $1)`, strconv.FormatInt(id, 10))
		return err
	})
	if err != nil {
		var e *slicehub.Error
		if errors.As(err, &e) {
			return slicehub.SliceCredentials{}, err
		}
		return slicehub.SliceCredentials{}, wrap(op, err)
	}
	// Sessions opened with the old password outlive it: end them. The new
	// allocation has not connected yet (it gets its password from this
	// call); a failure here is logged, not returned, as the claim stands.
	if n, err := db.EndSessions(ctx, role); err != nil {
		db.log.Error("cannot end the previous allocation's database sessions", "slice_id", id, "err", err)
	} else if n > 0 {
		db.log.Info("ended the previous allocation's database sessions", "slice_id", id, "sessions", n)
	}
	return db.SliceCredentials(ctx, id, dbHost)
}

// EndSessions terminates every session of role and returns how many.
func (db *DB) EndSessions(ctx context.Context, role string) (int, error) {
	var n int
	err := db.Pool.QueryRow(ctx, `SELECT count(*) FILTER (WHERE pg_catalog.pg_terminate_backend(pid))
		FROM pg_catalog.pg_stat_activity WHERE usename = $1`, role).Scan(&n)
	return n, err
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return hex.EncodeToString(b)
}

func isUniqueViolation(err error) bool { return bootstrap.IsUniqueViolation(err) }

// safePgError keeps a PostgreSQL error's code and message but never the
// statement, which for role DDL contains a password.
func safePgError(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code + " " + pgErr.Message
	}
	return err.Error()
}

// CountSlices returns how many slices are in each state, for the gauges.
func (db *DB) CountSlices(ctx context.Context) (map[slicehub.SliceState]int, error) {
	const op = "postgres.count_slices"
	rows, err := db.Pool.Query(ctx, `SELECT state, count(*) FROM slices GROUP BY state`)
	if err != nil {
		return nil, wrap(op, err)
	}
	defer rows.Close()
	out := map[slicehub.SliceState]int{}
	for rows.Next() {
		var state string
		var n int
		if err := rows.Scan(&state, &n); err != nil {
			return nil, wrap(op, err)
		}
		out[slicehub.SliceState(state)] = n
	}
	return out, wrap(op, rows.Err())
}

// SliceProgress returns the stages of userID's slice that PostgreSQL knows:
// its state, whether its database is ready and since when its current job
// exists. The scheduler adds what Nomad and Consul know. KindNotFound when
// no slice is bound to the user.
func (db *DB) SliceProgress(ctx context.Context, userID int64) (slicehub.SliceProgress, error) {
	const op = "postgres.slice_progress"
	var p slicehub.SliceProgress
	var state string
	var dbReady, dispatched *time.Time
	err := db.Pool.QueryRow(ctx, `SELECT id, state, coalesce(job_id, ''), db_ready_at, dispatched_at
		FROM slices WHERE user_id = $1`, userID).Scan(&p.SliceID, &state, &p.JobID, &dbReady, &dispatched)
	if errors.Is(err, pgx.ErrNoRows) {
		return p, slicehub.Errorf(op, slicehub.KindNotFound, "no_slice", "no slice is bound to this account")
	}
	if err != nil {
		return p, wrap(op, err)
	}
	p.State = slicehub.SliceState(state)
	p.Stage = slicehub.StageQueued
	if dbReady != nil {
		p.DatabaseReadyAt = *dbReady
		p.Stage = slicehub.StageDatabase
	}
	if dispatched != nil && p.JobID != "" {
		p.DispatchedAt = *dispatched
		p.Stage = slicehub.StageDispatched
	}
	return p, nil
}

// RecordFailures records that Nomad now counts observed failures (task
// restarts plus failed allocations) for slice id's job jobID, and returns
// how many of them are new: observed minus the highest count recorded
// before for that job. Calling it again with the same count adds nothing,
// so a new leader re-reading Nomad does not count old failures twice.
func (db *DB) RecordFailures(ctx context.Context, id int64, jobID string, observed int, reason string, at time.Time) (int, error) {
	const op = "postgres.record_failures"
	if observed <= 0 {
		return 0, nil
	}
	var added int
	err := db.Pool.QueryRow(ctx, `WITH prev AS (
			SELECT coalesce(max(observed), 0) AS m FROM slice_failures WHERE slice_id = $1 AND job_id = $2)
		INSERT INTO slice_failures (slice_id, job_id, at, observed, added, reason)
		SELECT $1, $2, $3, $4, $4 - m, $5 FROM prev WHERE $4 > m
		RETURNING added`, id, jobID, at, observed, reason).Scan(&added)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, wrap(op, err)
	}
	return added, nil
}

// RecordRepair records one failure that the scheduler repaired itself (the
// job was lost, or the slice did not turn healthy in time, and it was
// dispatched again).
func (db *DB) RecordRepair(ctx context.Context, id int64, jobID, reason string, at time.Time) error {
	const op = "postgres.record_repair"
	_, err := db.Pool.Exec(ctx, `INSERT INTO slice_failures (slice_id, job_id, at, observed, added, reason)
		VALUES ($1, $2, $3, 0, 1, $4)`, id, jobID, at, reason)
	return wrap(op, err)
}

// RecentFailures returns how many failures of slice id were recorded after
// since: what counts against its restart budget.
func (db *DB) RecentFailures(ctx context.Context, id int64, since time.Time) (int, error) {
	const op = "postgres.recent_failures"
	var n int
	err := db.Pool.QueryRow(ctx, `SELECT coalesce(sum(added), 0) FROM slice_failures WHERE slice_id = $1 AND at > $2`, id, since).Scan(&n)
	return n, wrap(op, err)
}

// ResetFailures forgets slice id's failures: an operator restarted or
// resumed it, and its budget starts over. The events keep the history.
func (db *DB) ResetFailures(ctx context.Context, id int64) error {
	const op = "postgres.reset_failures"
	_, err := db.Pool.Exec(ctx, `DELETE FROM slice_failures WHERE slice_id = $1`, id)
	return wrap(op, err)
}

// Retire moves slice id to retired if it is in one of from, in one
// transaction with its event: it releases its user (who may get a new
// slice later) and records whether its database must be dumped before it
// is dropped. KindConflict when the slice is not in one of from, so a
// retirement never races a claim: whichever commits first wins.
func (db *DB) Retire(ctx context.Context, id int64, from []slicehub.SliceState, actor, reason string, needsDump bool) (slicehub.Slice, error) {
	const op = "postgres.retire"
	var out slicehub.Slice
	err := pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error {
		cur, err := scanSlice(tx.QueryRow(ctx, `SELECT `+sliceColumns+` FROM slices WHERE id = $1 FOR UPDATE`, id))
		if errors.Is(err, pgx.ErrNoRows) {
			return slicehub.Errorf(op, slicehub.KindNotFound, "slice_not_found", "no such slice")
		}
		if err != nil {
			return err
		}
		if !stateIn(cur.State, from) || !slicehub.CanTransition(cur.State, slicehub.StateRetired) {
			return slicehub.Errorf(op, slicehub.KindConflict, "slice_state", "slice %d is %s", id, cur.State)
		}
		out, err = scanSlice(tx.QueryRow(ctx, `UPDATE slices SET state = 'retired', user_id = NULL, needs_dump = $2,
				updated_at = now(), state_changed_at = now()
			WHERE id = $1 RETURNING `+sliceColumns, id, needsDump))
		if err != nil {
			return err
		}
		if cur.UserID != 0 {
			reason = fmt.Sprintf("%s (user %d released)", reason, cur.UserID)
		}
		return insertEvent(ctx, tx, id, actor, cur.State, slicehub.StateRetired, reason)
	})
	if err != nil {
		var e *slicehub.Error
		if errors.As(err, &e) {
			return out, err
		}
		return out, wrap(op, err)
	}
	return out, nil
}

// Retirements lists the retired slices whose database still exists.
func (db *DB) Retirements(ctx context.Context) ([]slicehub.Retirement, error) {
	const op = "postgres.retirements"
	rows, err := db.Pool.Query(ctx, `SELECT id, state_changed_at, coalesce(job_id, ''), needs_dump, coalesce(dump_path, '')
		FROM slices WHERE state = 'retired' AND db_dropped_at IS NULL ORDER BY id`)
	if err != nil {
		return nil, wrap(op, err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (slicehub.Retirement, error) {
		var x slicehub.Retirement
		err := r.Scan(&x.SliceID, &x.RetiredAt, &x.JobID, &x.NeedsDump, &x.DumpPath)
		return x, err
	})
	return out, wrap(op, err)
}

// MarkDumped records where the final dump of retired slice id was written.
func (db *DB) MarkDumped(ctx context.Context, id int64, path, actor string) error {
	const op = "postgres.mark_dumped"
	return db.retiredStep(ctx, op, id, actor, "final dump written to "+path,
		`UPDATE slices SET dump_path = $2, updated_at = now() WHERE id = $1 AND state = 'retired'`, path)
}

// MarkDropped records that retired slice id's database and role are gone.
func (db *DB) MarkDropped(ctx context.Context, id int64, actor, reason string) error {
	const op = "postgres.mark_dropped"
	return db.retiredStep(ctx, op, id, actor, reason,
		`UPDATE slices SET db_dropped_at = now(), updated_at = now() WHERE id = $1 AND state = 'retired' AND db_dropped_at IS NULL`)
}

// retiredStep runs one bookkeeping update of a retired slice with its event
// (retired -> retired, the reason saying what was done).
func (db *DB) retiredStep(ctx context.Context, op string, id int64, actor, reason, update string, args ...any) error {
	err := pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, update, append([]any{id}, args...)...)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return nil // already done, or not retired: nothing to record
		}
		return insertEvent(ctx, tx, id, actor, slicehub.StateRetired, slicehub.StateRetired, reason)
	})
	return wrap(op, err)
}

// DumpDatabase writes a pg_dump (custom format) of slice id's database into
// dir and returns the file's path. The file appears under its final name
// only once complete, readable by its owner only. pgDump is the pg_dump
// program; empty finds the newest installed one (a newer pg_dump can dump an
// older server, not the other way round). The superuser's password reaches
// pg_dump through its environment, never its arguments. KindNotFound when
// the database does not exist.
func (db *DB) DumpDatabase(ctx context.Context, id int64, dir, pgDump string) (string, error) {
	const op = "postgres.dump_database"
	if dir == "" {
		return "", slicehub.Errorf(op, slicehub.KindInvalid, "no_dump_dir", "no dump directory is configured")
	}
	name := slicehub.DatabaseName(id)
	var exists bool
	if err := db.Pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, name).Scan(&exists); err != nil {
		return "", wrap(op, err)
	}
	if !exists {
		return "", slicehub.Errorf(op, slicehub.KindNotFound, "no_database", "database %s does not exist", name)
	}
	if pgDump == "" {
		pgDump = FindPgDump()
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", wrap(op, err)
	}
	final := filepath.Join(dir, fmt.Sprintf("%s-%s.dump", name, time.Now().UTC().Format("20060102T150405.000Z")))
	tmp := final + ".partial"
	cmd := exec.CommandContext(ctx, pgDump, "--format=custom", "--no-password", "--file="+tmp, "--dbname="+name)
	cmd.Env = db.pgToolEnv("slicehub-final-dump")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		_ = os.Remove(tmp)
		return "", wrap(op, fmt.Errorf("pg_dump %s: %w: %s", name, err, strings.TrimSpace(stderr.String())))
	}
	if err := os.Chmod(tmp, 0o600); err != nil {
		return "", wrap(op, err)
	}
	if err := os.Rename(tmp, final); err != nil {
		return "", wrap(op, err)
	}
	return final, nil
}

// FindPgDump returns the newest /usr/lib/postgresql/<major>/bin/pg_dump, or
// "pg_dump" from PATH. Debian's /usr/bin/pg_dump is a wrapper that picks a
// version by cluster configuration, which a private server does not have.
func FindPgDump() string { return FindPgTool("pg_dump") }

// Reassign binds slice sliceID to userID, in one transaction, for an admin:
//   - the slice's previous user, if any, is left without a slice (their next
//     claim gets a new one);
//   - the user's previous slice, if any, is released and parked as
//     suspended (its job stopped, its data kept) until an admin reassigns or
//     retires it; it cannot go back to the warm pool, which only holds
//     slices that never served anyone;
//   - a warm slice becomes assigned; a provisioning, assigned or suspended
//     one keeps its state.
//
// Each slice touched gets an event with the actor. Binding a slice to the
// user it already has does nothing. Both rows are locked in id order, so
// two concurrent reassignments cannot deadlock.
func (db *DB) Reassign(ctx context.Context, sliceID, userID int64, actor string) (slicehub.Slice, error) {
	const op = "postgres.reassign"
	var out slicehub.Slice
	err := pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error {
		var other int64
		err := tx.QueryRow(ctx, `SELECT id FROM slices WHERE user_id = $1`, userID).Scan(&other)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		ids := []int64{sliceID}
		if other != 0 && other != sliceID {
			ids = append(ids, other)
		}
		rows, err := tx.Query(ctx, `SELECT `+sliceColumns+` FROM slices WHERE id = ANY($1) ORDER BY id FOR UPDATE`, ids)
		if err != nil {
			return err
		}
		locked, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (slicehub.Slice, error) { return scanSlice(r) })
		if err != nil {
			return err
		}
		var target, prev *slicehub.Slice
		for i := range locked {
			switch locked[i].ID {
			case sliceID:
				target = &locked[i]
			case other:
				prev = &locked[i]
			}
		}
		if target == nil {
			return slicehub.Errorf(op, slicehub.KindNotFound, "slice_not_found", "no such slice")
		}
		if target.UserID == userID {
			out = *target
			return nil
		}
		if !target.State.Bindable() {
			return slicehub.Errorf(op, slicehub.KindConflict, "slice_state", "slice %d is %s", sliceID, target.State)
		}
		if prev != nil && prev.UserID != userID {
			// The user's slice changed between the lookup and the lock.
			return slicehub.Errorf(op, slicehub.KindConflict, "concurrent_change", "the user's slice changed; try again")
		}
		if prev != nil {
			to := prev.State
			if park := slicehub.Suspend(actor, ""); park.StartsFrom(prev.State) {
				to = park.To
			}
			if _, err := tx.Exec(ctx, `UPDATE slices SET user_id = NULL, state = $2, updated_at = now(),
					state_changed_at = CASE WHEN state = $2 THEN state_changed_at ELSE now() END WHERE id = $1`,
				prev.ID, string(to)); err != nil {
				return err
			}
			if err := insertEvent(ctx, tx, prev.ID, actor, prev.State, to,
				fmt.Sprintf("user %d moved to slice %d; this slice is parked", userID, sliceID)); err != nil {
				return err
			}
		}
		to := target.State
		if to == slicehub.StateWarm {
			to = slicehub.StateAssigned
		}
		out, err = scanSlice(tx.QueryRow(ctx, `UPDATE slices SET user_id = $2, state = $3, updated_at = now(),
				state_changed_at = CASE WHEN state = $3 THEN state_changed_at ELSE now() END
			WHERE id = $1 RETURNING `+sliceColumns, sliceID, userID, string(to)))
		if err != nil {
			return err
		}
		why := fmt.Sprintf("reassigned to user %d", userID)
		if target.UserID != 0 {
			why = fmt.Sprintf("reassigned from user %d to user %d", target.UserID, userID)
		}
		return insertEvent(ctx, tx, sliceID, actor, target.State, to, why)
	})
	if err != nil {
		var e *slicehub.Error
		if errors.As(err, &e) {
			return out, err
		}
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "23503" {
			return out, slicehub.Errorf(op, slicehub.KindNotFound, "user_not_found", "no such user")
		}
		if isUniqueViolation(err) {
			return out, slicehub.Errorf(op, slicehub.KindConflict, "already_assigned", "the user already has a slice")
		}
		return out, wrap(op, err)
	}
	return out, nil
}
