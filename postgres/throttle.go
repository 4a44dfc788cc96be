package postgres

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/slicehub/slicehub"
)

// Throttle buckets: the gateway's login, signup and reset budgets, shared
// by its replicas. Time is PostgreSQL's now(), so replicas whose clocks
// disagree still refill one bucket at one rate.

// refilledSQL is a bucket's tokens as of now: the stored tokens plus one
// per $4 seconds since updated_at (none when $4 is not positive: a budget
// that never refills), capped at the burst $3. TakeToken and TokenWait
// share it so that they agree on what a bucket holds.
const refilledSQL = `LEAST(tokens + CASE WHEN $4::float8 > 0 AND now() > updated_at
		THEN EXTRACT(EPOCH FROM now() - updated_at)::float8 / $4::float8 ELSE 0 END, $3::float8)`

// takeTokenSQL spends a token in one statement (one round trip, no
// explicit transaction): a login pays for it on every attempt. A new bucket is created full, less the token it gives
// (created). An existing one is locked (cur: FOR UPDATE also reads the
// latest version of a row that a concurrent taker changed after this
// statement's snapshot, so takers of one bucket queue on the lock instead
// of spending the same token), refilled, and spent from if it holds a
// whole token (taken). Either way the answer is the tokens left and
// whether one was spent.
//
// Why not one INSERT ... ON CONFLICT DO UPDATE: its RETURNING shows only
// the new row (before PostgreSQL 18), and a refused take (left with the
// refilled tokens, under 1) and a granted one that left under 1 look the
// same there. Reading the old tokens takes the locking read.
//
// No row comes back only when a concurrent taker created the bucket after
// this statement's snapshot (the INSERT waits for it and sees the
// conflict; the read cannot see the row) or pruning removed it in between; TakeToken then runs
// the statement again under a new snapshot.
const takeTokenSQL = `WITH created AS (
	INSERT INTO throttle_buckets (name, key, tokens)
	VALUES ($1, $2, CASE WHEN $3::float8 >= 1 THEN $3::float8 - 1 ELSE $3::float8 END)
	ON CONFLICT (name, key) DO NOTHING
	RETURNING tokens, $3::float8 >= 1 AS spent
), cur AS (
	SELECT name, key, ` + refilledSQL + ` AS tokens
	FROM throttle_buckets WHERE name = $1 AND key = $2
	FOR UPDATE
), taken AS (
	UPDATE throttle_buckets b
	SET tokens = CASE WHEN cur.tokens >= 1 THEN cur.tokens - 1 ELSE cur.tokens END, updated_at = now()
	FROM cur WHERE b.name = cur.name AND b.key = cur.key
	RETURNING b.tokens, cur.tokens >= 1 AS spent
)
SELECT tokens, spent FROM created
UNION ALL
SELECT tokens, spent FROM taken`

// TakeToken spends one token of the bucket (name, key), which holds at
// most burst tokens and gains one every every. It returns 0 when the token
// was spent, or how long until one will be there.
func (db *DB) TakeToken(ctx context.Context, name, key string, burst int, every time.Duration) (time.Duration, error) {
	const op = "postgres.take_token"
	// One try normally; a second when the bucket was created concurrently.
	// A third miss means it is created and pruned in a loop: not a state
	// worth waiting out in a login request.
	for range 3 {
		var tokens float64
		var spent bool
		err := db.Pool.QueryRow(ctx, takeTokenSQL, name, key, float64(burst), every.Seconds()).Scan(&tokens, &spent)
		if errors.Is(err, pgx.ErrNoRows) {
			continue
		}
		if err != nil {
			return 0, slicehub.Wrap(op, slicehub.KindUnavailable, err)
		}
		if spent {
			return 0, nil
		}
		return waitFor(tokens, every), nil
	}
	return 0, slicehub.Errorf(op, slicehub.KindUnavailable, "", "the throttle bucket %s/%s kept vanishing", name, key)
}

// TokenWait is how long until the bucket has a token, without spending one.
func (db *DB) TokenWait(ctx context.Context, name, key string, burst int, every time.Duration) (time.Duration, error) {
	var tokens float64
	err := db.Pool.QueryRow(ctx, `SELECT `+refilledSQL+` FROM throttle_buckets WHERE name = $1 AND key = $2`,
		name, key, float64(burst), every.Seconds()).Scan(&tokens)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, nil // never used: full
	}
	if err != nil {
		return 0, slicehub.Wrap("postgres.token_wait", slicehub.KindUnavailable, err)
	}
	if tokens >= 1 {
		return 0, nil
	}
	return waitFor(tokens, every), nil
}

// PruneTokens forgets buckets untouched for longer than idle: full again
// for any budget whose refill takes less than that.
func (db *DB) PruneTokens(ctx context.Context, idle time.Duration) (int64, error) {
	tag, err := db.Pool.Exec(ctx, `DELETE FROM throttle_buckets WHERE updated_at < now() - make_interval(secs => $1)`, idle.Seconds())
	if err != nil {
		return 0, slicehub.Wrap("postgres.prune_tokens", slicehub.KindUnavailable, err)
	}
	return tag.RowsAffected(), nil
}

func waitFor(tokens float64, every time.Duration) time.Duration {
	if every <= 0 {
		return time.Hour // a budget that never refills
	}
	return time.Duration((1 - tokens) * float64(every))
}
