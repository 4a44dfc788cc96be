package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/slicehub/slicehub"
)

// The billing rows (migration 00004). Package billing decides; this file
// only stores. A billing change, the slice transition it causes and their
// records commit or roll back together: billing runs them on a BillingTx,
// inside DB.InBillingTx, and never holds the pgx transaction itself.

// BillingTx is one billing transaction. Its methods are the only writes
// billing makes in it; the transaction itself (begin, commit, rollback on
// an error or a panic) stays here.
type BillingTx struct{ tx pgx.Tx }

// InBillingTx runs fn in one transaction, committed when fn returns nil
// and rolled back otherwise.
func (db *DB) InBillingTx(ctx context.Context, fn func(tx BillingTx) error) error {
	return pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error { return fn(BillingTx{tx}) })
}

// Transition moves slice id through the state machine in tx, with its
// event (TransitionTx).
func (t BillingTx) Transition(ctx context.Context, id int64, c slicehub.Change) (slicehub.Slice, error) {
	return TransitionTx(ctx, t.tx, id, c)
}

// BillingAccount is one user's billing state: their Stripe customer and
// what Slicehub last read of the subscription that decides what they may
// run. Zero times stand for NULL.
type BillingAccount struct {
	UserID              int64
	CustomerNonce       string
	CustomerID          string
	SubscriptionID      string
	Status              string // Stripe's subscription status; "" without one
	PriceID             string
	LaunchPrice         bool
	CurrentPeriodEnd    time.Time
	CancelAtPeriodEnd   bool
	EndedAt             time.Time
	TrialEnd            time.Time
	PastDueSince        time.Time
	Complimentary       bool
	ComplimentaryReason string
	SuspendedAt         time.Time // when billing suspended the slice
	SyncedAt            time.Time
	CreatedAt           time.Time
	UpdatedAt           time.Time
}

const billingColumns = `user_id, customer_nonce, coalesce(stripe_customer_id, ''), coalesce(subscription_id, ''), status,
	price_id, launch_price, current_period_end, cancel_at_period_end, ended_at, trial_end, past_due_since,
	complimentary, complimentary_reason, suspended_at, synced_at, created_at, updated_at`

func scanBillingAccount(row pgx.Row) (BillingAccount, error) {
	var a BillingAccount
	var periodEnd, ended, trial, pastDue, suspended, synced *time.Time
	err := row.Scan(&a.UserID, &a.CustomerNonce, &a.CustomerID, &a.SubscriptionID, &a.Status,
		&a.PriceID, &a.LaunchPrice, &periodEnd, &a.CancelAtPeriodEnd, &ended, &trial, &pastDue,
		&a.Complimentary, &a.ComplimentaryReason, &suspended, &synced, &a.CreatedAt, &a.UpdatedAt)
	a.CurrentPeriodEnd, a.EndedAt, a.TrialEnd = deref(periodEnd), deref(ended), deref(trial)
	a.PastDueSince, a.SuspendedAt, a.SyncedAt = deref(pastDue), deref(suspended), deref(synced)
	return a, err
}

func deref(t *time.Time) time.Time {
	if t == nil {
		return time.Time{}
	}
	return *t
}

// nullTime stores a zero time as NULL.
func nullTime(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t
}

func nullText(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// EnsureBillingAccount returns userID's billing account, creating it (with
// its customer nonce) on first use. KindNotFound when the user does not
// exist.
func (db *DB) EnsureBillingAccount(ctx context.Context, userID int64) (BillingAccount, error) {
	const op = "postgres.ensure_billing_account"
	_, err := db.Pool.Exec(ctx, `INSERT INTO billing_accounts (user_id, customer_nonce) VALUES ($1, $2)
		ON CONFLICT (user_id) DO NOTHING`, userID, randomHex(12))
	if err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "23503" {
			return BillingAccount{}, slicehub.Errorf(op, slicehub.KindNotFound, "user_not_found", "no such user")
		}
		return BillingAccount{}, wrap(op, err)
	}
	return db.BillingAccount(ctx, userID)
}

// BillingAccount returns userID's billing account; KindNotFound when the
// user never had one.
func (db *DB) BillingAccount(ctx context.Context, userID int64) (BillingAccount, error) {
	const op = "postgres.billing_account"
	a, err := scanBillingAccount(db.Pool.QueryRow(ctx, `SELECT `+billingColumns+` FROM billing_accounts WHERE user_id = $1`, userID))
	if errors.Is(err, pgx.ErrNoRows) {
		return a, slicehub.Errorf(op, slicehub.KindNotFound, "no_billing_account", "no billing account")
	}
	return a, wrap(op, err)
}

// SetBillingCustomer records userID's Stripe customer unless one is
// recorded already, and returns the account: the first customer stored
// wins, so two racing creations leave exactly one customer in use.
func (db *DB) SetBillingCustomer(ctx context.Context, userID int64, customerID string) (BillingAccount, error) {
	const op = "postgres.set_billing_customer"
	if _, err := db.Pool.Exec(ctx, `UPDATE billing_accounts SET stripe_customer_id = $2, updated_at = now()
		WHERE user_id = $1 AND stripe_customer_id IS NULL`, userID, customerID); err != nil {
		if isUniqueViolation(err) {
			return BillingAccount{}, slicehub.Errorf(op, slicehub.KindConflict, "customer_taken", "the customer belongs to another account")
		}
		return BillingAccount{}, wrap(op, err)
	}
	return db.BillingAccount(ctx, userID)
}

// LockBillingAccount reads userID's account and locks it until tx ends:
// every change of one account is serialized on this row.
func (t BillingTx) LockBillingAccount(ctx context.Context, userID int64) (BillingAccount, error) {
	tx := t.tx
	const op = "postgres.lock_billing_account"
	a, err := scanBillingAccount(tx.QueryRow(ctx, `SELECT `+billingColumns+` FROM billing_accounts WHERE user_id = $1 FOR UPDATE`, userID))
	if errors.Is(err, pgx.ErrNoRows) {
		return a, slicehub.Errorf(op, slicehub.KindNotFound, "no_billing_account", "no billing account")
	}
	return a, wrap(op, err)
}

// LockBillingAccountByCustomer is LockBillingAccount by Stripe customer
// id; KindNotFound for a customer that is not one of ours.
func (t BillingTx) LockBillingAccountByCustomer(ctx context.Context, customerID string) (BillingAccount, error) {
	tx := t.tx
	const op = "postgres.lock_billing_account"
	a, err := scanBillingAccount(tx.QueryRow(ctx, `SELECT `+billingColumns+` FROM billing_accounts WHERE stripe_customer_id = $1 FOR UPDATE`, customerID))
	if errors.Is(err, pgx.ErrNoRows) {
		return a, slicehub.Errorf(op, slicehub.KindNotFound, "unknown_customer", "no account has this customer")
	}
	return a, wrap(op, err)
}

// SaveBillingAccount writes every mutable field of a (locked) account.
// The customer and its nonce are not mutable here.
func (t BillingTx) SaveBillingAccount(ctx context.Context, a BillingAccount) error {
	tx := t.tx
	const op = "postgres.save_billing_account"
	_, err := tx.Exec(ctx, `UPDATE billing_accounts SET subscription_id = $2, status = $3, price_id = $4,
			launch_price = $5, current_period_end = $6, cancel_at_period_end = $7, ended_at = $8, trial_end = $9,
			past_due_since = $10, complimentary = $11, complimentary_reason = $12, suspended_at = $13,
			synced_at = $14, updated_at = now()
		WHERE user_id = $1`, a.UserID, nullText(a.SubscriptionID), a.Status, a.PriceID, a.LaunchPrice,
		nullTime(a.CurrentPeriodEnd), a.CancelAtPeriodEnd, nullTime(a.EndedAt), nullTime(a.TrialEnd),
		nullTime(a.PastDueSince), a.Complimentary, a.ComplimentaryReason, nullTime(a.SuspendedAt), nullTime(a.SyncedAt))
	if isUniqueViolation(err) {
		return slicehub.Errorf(op, slicehub.KindConflict, "subscription_taken", "the subscription belongs to another account")
	}
	return wrap(op, err)
}

// BillingAttention lists the users whose billing may owe an action: a
// grace period running out, a period ending, a retention running out, a
// suspension to lift.
func (db *DB) BillingAttention(ctx context.Context) ([]int64, error) {
	const op = "postgres.billing_attention"
	rows, err := db.Pool.Query(ctx, `SELECT user_id FROM billing_accounts
		WHERE status IN ('past_due', 'unpaid', 'paused', 'canceled') OR suspended_at IS NOT NULL
			OR (cancel_at_period_end AND status IN ('active', 'trialing'))
		ORDER BY user_id`)
	if err != nil {
		return nil, wrap(op, err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	return ids, wrap(op, err)
}

// BillingEvent is a verified Stripe event as recorded.
type BillingEvent struct {
	ID        string
	Type      string
	Livemode  bool
	CreatedAt time.Time
	UserID    int64 // 0: not about one of our accounts
	Outcome   string
}

// BillingEventSeen reports whether event id was processed already: a
// cheap early answer for a redelivery. Only BillingTx.RecordBillingEvent decides.
func (db *DB) BillingEventSeen(ctx context.Context, id string) (bool, error) {
	const op = "postgres.billing_event_seen"
	var seen bool
	err := db.Pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM billing_events WHERE event_id = $1)`, id).Scan(&seen)
	return seen, wrap(op, err)
}

// RecordBillingEvent records event e in tx and reports whether it is
// new. A concurrent delivery of the same event waits here until the first
// one's transaction ends, then finds the row (false) or, if the first
// rolled back, records it itself.
func (t BillingTx) RecordBillingEvent(ctx context.Context, e BillingEvent) (bool, error) {
	tx := t.tx
	const op = "postgres.record_billing_event"
	var userID any
	if e.UserID != 0 {
		userID = e.UserID
	}
	tag, err := tx.Exec(ctx, `INSERT INTO billing_events (event_id, type, livemode, created_at, user_id, outcome)
		VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (event_id) DO NOTHING`,
		e.ID, e.Type, e.Livemode, e.CreatedAt, userID, e.Outcome)
	if err != nil {
		return false, wrap(op, err)
	}
	return tag.RowsAffected() == 1, nil
}

// SetBillingEventOutcome records what processing event id did.
func (t BillingTx) SetBillingEventOutcome(ctx context.Context, id string, userID int64, outcome string) error {
	tx := t.tx
	const op = "postgres.set_billing_event_outcome"
	var uid any
	if userID != 0 {
		uid = userID
	}
	_, err := tx.Exec(ctx, `UPDATE billing_events SET user_id = $2, outcome = $3 WHERE event_id = $1`, id, uid, outcome)
	return wrap(op, err)
}

// BillingEvents returns the recorded events, oldest first (tests, audits).
func (db *DB) BillingEvents(ctx context.Context) ([]BillingEvent, error) {
	const op = "postgres.billing_events"
	rows, err := db.Pool.Query(ctx, `SELECT event_id, type, livemode, created_at, coalesce(user_id, 0), outcome
		FROM billing_events ORDER BY processed_at, event_id`)
	if err != nil {
		return nil, wrap(op, err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (BillingEvent, error) {
		var e BillingEvent
		err := r.Scan(&e.ID, &e.Type, &e.Livemode, &e.CreatedAt, &e.UserID, &e.Outcome)
		return e, err
	})
	return out, wrap(op, err)
}

// BillingAudit is one line of the billing audit log.
type BillingAudit struct {
	ID      int64
	At      time.Time
	UserID  int64
	Actor   string // "billing", "user:12", "admin:3"
	Action  string // "subscription_synced", "slice_suspended", ...
	EventID string // the Stripe event that caused it, if any
	Detail  string
}

// AuditBilling appends a to the audit log in tx.
func (t BillingTx) AuditBilling(ctx context.Context, a BillingAudit) error {
	tx := t.tx
	const op = "postgres.audit_billing"
	_, err := tx.Exec(ctx, `INSERT INTO billing_audit (user_id, actor, action, event_id, detail) VALUES ($1, $2, $3, $4, $5)`,
		a.UserID, a.Actor, a.Action, a.EventID, a.Detail)
	return wrap(op, err)
}

// AuditBilling appends a to the audit log on its own.
func (db *DB) AuditBilling(ctx context.Context, a BillingAudit) error {
	return db.InBillingTx(ctx, func(tx BillingTx) error { return tx.AuditBilling(ctx, a) })
}

// BillingAuditOf returns userID's audit log, oldest first.
func (db *DB) BillingAuditOf(ctx context.Context, userID int64) ([]BillingAudit, error) {
	const op = "postgres.billing_audit"
	rows, err := db.Pool.Query(ctx, `SELECT id, at, coalesce(user_id, 0), actor, action, event_id, detail
		FROM billing_audit WHERE user_id = $1 ORDER BY id`, userID)
	if err != nil {
		return nil, wrap(op, err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (BillingAudit, error) {
		var a BillingAudit
		err := r.Scan(&a.ID, &a.At, &a.UserID, &a.Actor, &a.Action, &a.EventID, &a.Detail)
		return a, err
	})
	return out, wrap(op, err)
}

// UserSlice returns userID's slice locked until tx ends, and whether the
// user has one.
func (t BillingTx) UserSlice(ctx context.Context, userID int64) (slicehub.Slice, bool, error) {
	tx := t.tx
	const op = "postgres.user_slice"
	s, err := scanSlice(tx.QueryRow(ctx, `SELECT `+sliceColumns+` FROM slices WHERE user_id = $1 FOR UPDATE`, userID))
	if errors.Is(err, pgx.ErrNoRows) {
		return s, false, nil
	}
	if err != nil {
		return s, false, wrap(op, err)
	}
	return s, true, nil
}

// RetireSuspendedSlice retires suspended slice id in tx for billing: the
// transition and its event as TransitionTx records them, and the
// retirement bookkeeping of migration 00002, with the user's export as the
// final dump (the scheduler then drops the database after its retention
// without dumping it again). The user stays bound to the retired slice,
// unlike Retire: a user who stopped paying must not be handed a fresh
// slice by the next login's claim; billing releases it when they pay again.
func (t BillingTx) RetireSuspendedSlice(ctx context.Context, id int64, actor, reason, dumpPath string) (slicehub.Slice, error) {
	tx := t.tx
	const op = "postgres.retire_suspended_slice"
	out, err := TransitionTx(ctx, tx, id, slicehub.Retire(actor, reason).At(slicehub.StateSuspended))
	if err != nil {
		return out, err
	}
	if _, err := tx.Exec(ctx, `UPDATE slices SET needs_dump = true, dump_path = $2 WHERE id = $1`, id, nullText(dumpPath)); err != nil {
		return out, wrap(op, err)
	}
	return out, nil
}

// ReleaseRetiredSlice unbinds userID from their retired slice id in tx,
// with an event, so that their next claim gets a new slice.
func (t BillingTx) ReleaseRetiredSlice(ctx context.Context, id int64, actor, reason string) error {
	tx := t.tx
	const op = "postgres.release_retired_slice"
	cur, err := scanSlice(tx.QueryRow(ctx, `SELECT `+sliceColumns+` FROM slices WHERE id = $1 FOR UPDATE`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return slicehub.Errorf(op, slicehub.KindNotFound, "slice_not_found", "no such slice")
	}
	if err != nil {
		return wrap(op, err)
	}
	if cur.State != slicehub.StateRetired || cur.UserID == 0 {
		return slicehub.Errorf(op, slicehub.KindConflict, "slice_state", "slice %d is not a retired slice with a user", id)
	}
	if _, err := tx.Exec(ctx, `UPDATE slices SET user_id = NULL, updated_at = now() WHERE id = $1`, id); err != nil {
		return wrap(op, err)
	}
	return wrap(op, insertEvent(ctx, tx, id, actor, slicehub.StateRetired, slicehub.StateRetired,
		fmt.Sprintf("%s (user %d released)", reason, cur.UserID)))
}

// BillingExport is a dump of a slice database kept for its user.
type BillingExport struct {
	ID        int64
	UserID    int64
	SliceID   int64
	Path      string
	SizeBytes int64
	CreatedAt time.Time
}

const exportColumns = `id, user_id, coalesce(slice_id, 0), path, size_bytes, created_at`

func scanExport(row pgx.Row) (BillingExport, error) {
	var e BillingExport
	err := row.Scan(&e.ID, &e.UserID, &e.SliceID, &e.Path, &e.SizeBytes, &e.CreatedAt)
	return e, err
}

// AddBillingExport records export e with its audit line, in one
// transaction. e.CreatedAt is billing's clock (now when zero): retirement
// looks for an export made since the suspension, on that same clock.
func (db *DB) AddBillingExport(ctx context.Context, e BillingExport, audit BillingAudit) (BillingExport, error) {
	const op = "postgres.add_billing_export"
	var out BillingExport
	err := pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error {
		var err error
		out, err = scanExport(tx.QueryRow(ctx, `INSERT INTO billing_exports (user_id, slice_id, path, size_bytes, created_at)
			VALUES ($1, $2, $3, $4, coalesce($5, now())) RETURNING `+exportColumns, e.UserID, e.SliceID, e.Path, e.SizeBytes,
			nullTime(e.CreatedAt)))
		if err != nil {
			return err
		}
		return BillingTx{tx}.AuditBilling(ctx, audit)
	})
	return out, wrap(op, err)
}

// BillingExports lists userID's exports, newest first.
func (db *DB) BillingExports(ctx context.Context, userID int64) ([]BillingExport, error) {
	const op = "postgres.billing_exports"
	rows, err := db.Pool.Query(ctx, `SELECT `+exportColumns+` FROM billing_exports WHERE user_id = $1 ORDER BY id DESC`, userID)
	if err != nil {
		return nil, wrap(op, err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (BillingExport, error) { return scanExport(r) })
	return out, wrap(op, err)
}

// SliceExport returns the newest export of sliceID for userID made at or
// after since, and whether there is one.
func (t BillingTx) SliceExport(ctx context.Context, userID, sliceID int64, since time.Time) (BillingExport, bool, error) {
	tx := t.tx
	const op = "postgres.slice_export"
	e, err := scanExport(tx.QueryRow(ctx, `SELECT `+exportColumns+` FROM billing_exports
		WHERE user_id = $1 AND slice_id = $2 AND created_at >= $3 ORDER BY id DESC LIMIT 1`, userID, sliceID, since))
	if errors.Is(err, pgx.ErrNoRows) {
		return e, false, nil
	}
	if err != nil {
		return e, false, wrap(op, err)
	}
	return e, true, nil
}

// SliceExport is BillingTx.SliceExport outside a transaction.
func (db *DB) SliceExport(ctx context.Context, userID, sliceID int64, since time.Time) (BillingExport, bool, error) {
	var e BillingExport
	var ok bool
	err := db.InBillingTx(ctx, func(tx BillingTx) error {
		var err error
		e, ok, err = tx.SliceExport(ctx, userID, sliceID, since)
		return err
	})
	return e, ok, err
}

// billingEnforceLock is the advisory lock that makes one replica at a time
// run billing's periodic check ("sbil" in ASCII).
const billingEnforceLock int64 = 0x7362696c

// TryBillingLock takes the billing check's advisory lock on a connection
// of its own. ok is false when another replica holds it; release must be
// called when ok.
func (db *DB) TryBillingLock(ctx context.Context) (release func(), ok bool, err error) {
	const op = "postgres.try_billing_lock"
	conn, err := db.Pool.Acquire(ctx)
	if err != nil {
		return nil, false, slicehub.Wrap(op, slicehub.KindUnavailable, err)
	}
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, billingEnforceLock).Scan(&ok); err != nil || !ok {
		conn.Release()
		return nil, false, wrap(op, err)
	}
	return func() {
		// A detached context: the unlock must happen even when the pass
		// was cancelled; if it fails, closing the connection unlocks.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := conn.Exec(ctx, `SELECT pg_advisory_unlock($1)`, billingEnforceLock); err != nil {
			conn.Conn().Close(ctx)
		}
		conn.Release()
	}, true, nil
}
