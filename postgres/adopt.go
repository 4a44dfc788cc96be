package postgres

import (
	"context"

	"github.com/jackc/pgx/v5"
	"github.com/slicehub/slicehub"
)

// What the scheduler writes when it finds a child of the slice job that an
// operator dispatched by hand (`nomad job dispatch -meta slice_id=<id>
// slice`): PostgreSQL learns about the dispatch, it is not overruled by it.

// AdoptSlice inserts slice id, which an operator chose, in state
// provisioning with its event, and moves slices_id_seq past it so that the
// platform's own slices never collide with it. It fails with KindConflict
// when a row already holds id. The database is made later by
// ProvisionDatabase, as for any slice.
//
// The sequence moves only forward, in one statement (setval when
// nextval could still draw id); sequences are not transactional, so a CreateSlice
// whose nextval lands in the microseconds between that statement's read
// and its write could still draw id itself: then one of the two inserts
// fails on the primary key and is retried by its caller, nothing is
// half-written.
func (db *DB) AdoptSlice(ctx context.Context, id int64, actor, reason string) (slicehub.Slice, error) {
	const op = "postgres.adopt_slice"
	var s slicehub.Slice
	if id <= 0 {
		return s, slicehub.Errorf(op, slicehub.KindInvalid, "invalid_slice_id", "a slice id is a positive integer")
	}
	if _, err := db.Pool.Exec(ctx, `SELECT setval('slices_id_seq', $1) FROM slices_id_seq
		WHERE last_value < $1 OR (last_value = $1 AND NOT is_called)`, id); err != nil {
		return s, wrap(op, err)
	}
	err := pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error {
		var err error
		s, err = scanSlice(tx.QueryRow(ctx, `INSERT INTO slices (id, state, db_server, db_name)
			VALUES ($1, 'provisioning', $2, $3) RETURNING `+sliceColumns, id, db.Server, slicehub.DatabaseName(id)))
		if err != nil {
			return err
		}
		return insertEvent(ctx, tx, s.ID, actor, "", slicehub.StateProvisioning, reason)
	})
	if err != nil {
		if isUniqueViolation(err) {
			return s, slicehub.Errorf(op, slicehub.KindConflict, "slice_exists", "slice %d exists", id)
		}
		return s, wrap(op, err)
	}
	return s, nil
}

// NoteSlice records an event on slice id that changes nothing: a dispatch
// refused for it (a duplicate, a suspended or retired slice). The row is
// not touched, so its timers (the provision timeout runs from updated_at)
// and the gateway's caches are left alone.
func (db *DB) NoteSlice(ctx context.Context, id int64, actor, reason string) error {
	const op = "postgres.note_slice"
	tag, err := db.Pool.Exec(ctx, `INSERT INTO slice_events (slice_id, actor, from_state, to_state, reason)
		SELECT id, $2, state, state, $3 FROM slices WHERE id = $1`, id, actor, reason)
	if err != nil {
		return wrap(op, err)
	}
	if tag.RowsAffected() == 0 {
		return slicehub.Errorf(op, slicehub.KindNotFound, "slice_not_found", "no such slice")
	}
	return nil
}

// NoteDispatch records, in the admin audit, a dispatch that names no slice
// the platform can hold (no slice_id, or not a number): it has no row to
// carry the event.
func (db *DB) NoteDispatch(ctx context.Context, jobID, actor, action, reason string) error {
	return db.Audit(ctx, AdminAudit{Actor: actor, Action: action, Target: jobID, Detail: map[string]any{"reason": reason}})
}
