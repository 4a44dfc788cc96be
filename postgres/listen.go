package postgres

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"
)

// Listen delivers PostgreSQL notifications on channels to fn until ctx ends,
// on a dedicated connection that is re-established after any failure. Every
// gateway replica listens, so that a change of assignment made by one of
// them reaches the caches of all. After a reconnect fn is called with an
// empty payload on each channel: notifications may have been missed, and
// the receiver should drop everything it cached.
func (db *DB) Listen(ctx context.Context, channels []string, fn func(channel, payload string)) {
	backoff := 100 * time.Millisecond
	first := true
	for ctx.Err() == nil {
		err := db.listenOnce(ctx, channels, fn, &first)
		if ctx.Err() != nil {
			return
		}
		db.log.Warn("notification listener lost its connection", "err", err, "retry_in", backoff)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

func (db *DB) listenOnce(ctx context.Context, channels []string, fn func(channel, payload string), first *bool) error {
	pooled, err := db.Pool.Acquire(ctx)
	if err != nil {
		return err
	}
	// The connection will carry LISTEN state; it never goes back to the pool.
	conn := pooled.Hijack()
	defer conn.Close(context.Background())
	for _, ch := range channels {
		if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{ch}.Sanitize()); err != nil {
			return err
		}
	}
	if !*first {
		for _, ch := range channels {
			fn(ch, "")
		}
	}
	*first = false
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		fn(n.Channel, n.Payload)
	}
}
