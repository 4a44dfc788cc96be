package postgres

import (
	"context"
	"math"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/slicehub/slicehub"
)

// Throttle buckets: the gateway's login, signup and reset budgets, shared
// by its replicas. Time is PostgreSQL's now(), so replicas whose clocks
// disagree still refill one bucket at one rate.

// TakeToken spends one token of the bucket (name, key), which holds at
// most burst tokens and gains one every every. It returns 0 when the token
// was spent, or how long until one will be there.
func (db *DB) TakeToken(ctx context.Context, name, key string, burst int, every time.Duration) (time.Duration, error) {
	const op = "postgres.take_token"
	var wait time.Duration
	err := pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error {
		// The row is created full, then locked: concurrent takers of one
		// bucket queue here instead of each spending the same token.
		if _, err := tx.Exec(ctx, `INSERT INTO throttle_buckets (name, key, tokens) VALUES ($1, $2, $3)
			ON CONFLICT (name, key) DO NOTHING`, name, key, float64(burst)); err != nil {
			return err
		}
		tokens, err := refilled(ctx, tx, name, key, burst, every, true)
		if err != nil {
			return err
		}
		if tokens >= 1 {
			tokens--
		} else {
			wait = waitFor(tokens, every)
		}
		_, err = tx.Exec(ctx, `UPDATE throttle_buckets SET tokens = $3, updated_at = now() WHERE name = $1 AND key = $2`,
			name, key, tokens)
		return err
	})
	if err != nil {
		return 0, slicehub.Wrap(op, slicehub.KindUnavailable, err)
	}
	return wait, nil
}

// TokenWait is how long until the bucket has a token, without spending one.
func (db *DB) TokenWait(ctx context.Context, name, key string, burst int, every time.Duration) (time.Duration, error) {
	tokens, err := refilled(ctx, db.Pool, name, key, burst, every, false)
	if err == pgx.ErrNoRows {
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

// refilled reads a bucket's tokens as of now, refilled and capped at
// burst, locking the row when lock is set.
func refilled(ctx context.Context, q interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}, name, key string, burst int, every time.Duration, lock bool) (float64, error) {
	sql := `SELECT tokens, EXTRACT(EPOCH FROM now() - updated_at)::float8 FROM throttle_buckets WHERE name = $1 AND key = $2`
	if lock {
		sql += ` FOR UPDATE`
	}
	var tokens, elapsed float64
	if err := q.QueryRow(ctx, sql, name, key).Scan(&tokens, &elapsed); err != nil {
		return 0, err
	}
	if every > 0 && elapsed > 0 {
		tokens += elapsed / every.Seconds()
	}
	return math.Min(tokens, float64(burst)), nil
}

func waitFor(tokens float64, every time.Duration) time.Duration {
	if every <= 0 {
		return time.Hour // a budget that never refills
	}
	return time.Duration((1 - tokens) * float64(every))
}
