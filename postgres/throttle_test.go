package postgres_test

import (
	"sync"
	"testing"
	"time"

	"github.com/slicehub/slicehub/testsupport"
)

// Concurrent takers of one bucket, as replicas of the gateway would be,
// spend exactly its burst between them, and the bucket refills at its
// rate.
func TestTakeTokenIsSharedAndExact(t *testing.T) {
	db := openDB(t)
	ctx := t.Context()
	const burst, takers = 5, 20
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		allowed int
		waits   []time.Duration
	)
	for range takers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			wait, err := db.TakeToken(ctx, "login_account", "ann@example.com", burst, time.Hour)
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			if wait == 0 {
				allowed++
			} else {
				waits = append(waits, wait)
			}
		}()
	}
	wg.Wait()
	if allowed != burst {
		t.Fatalf("%d of %d takers got a token from a bucket of %d", allowed, takers, burst)
	}
	for _, w := range waits {
		if w <= 0 || w > time.Hour {
			t.Fatalf("a refused taker was told to wait %s; want (0, 1h]", w)
		}
	}
	// Other keys and other budgets are other buckets.
	for _, b := range [][2]string{{"login_account", "bob@example.com"}, {"signup_ip", "ann@example.com"}} {
		if w, err := db.TakeToken(ctx, b[0], b[1], burst, time.Hour); err != nil || w != 0 {
			t.Fatalf("bucket %v: wait %s, %v; want a token", b, w, err)
		}
	}
	// Wait reports without spending.
	if w, err := db.TokenWait(ctx, "login_account", "ann@example.com", burst, time.Hour); err != nil || w <= 0 {
		t.Fatalf("TokenWait on an empty bucket: %s, %v", w, err)
	}
	if w, err := db.TokenWait(ctx, "login_account", "never@example.com", burst, time.Hour); err != nil || w != 0 {
		t.Fatalf("TokenWait on an unused bucket: %s, %v", w, err)
	}
}

func TestTakeTokenRefills(t *testing.T) {
	db := openDB(t)
	ctx := t.Context()
	const every = 200 * time.Millisecond
	if w, _ := db.TakeToken(ctx, "reset_ip", "10.1.2.0/24", 1, every); w != 0 {
		t.Fatalf("first take: wait %s", w)
	}
	w, err := db.TakeToken(ctx, "reset_ip", "10.1.2.0/24", 1, every)
	if err != nil || w <= 0 || w > every {
		t.Fatalf("second take: wait %s, %v; want (0, %s]", w, err, every)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		w, err := db.TakeToken(ctx, "reset_ip", "10.1.2.0/24", 1, every)
		if err != nil {
			t.Fatal(err)
		}
		if w == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the bucket never refilled (wait %s)", w)
		}
		time.Sleep(w) // the wait the bucket itself asked for, not synchronisation
	}
	// Pruning forgets what has been idle long enough, and only that.
	if _, err := db.TakeToken(ctx, "reset_ip", "fresh", 1, every); err != nil {
		t.Fatal(err)
	}
	n, err := db.PruneTokens(ctx, time.Hour)
	if err != nil || n != 0 {
		t.Fatalf("prune of fresh buckets: %d, %v", n, err)
	}
	if _, err := db.Pool.Exec(ctx, `UPDATE throttle_buckets SET updated_at = now() - interval '2 hours' WHERE key = 'fresh'`); err != nil {
		t.Fatal(err)
	}
	if n, err := db.PruneTokens(ctx, time.Hour); err != nil || n != 1 {
		t.Fatalf("prune: %d, %v; want the one idle bucket", n, err)
	}
}

// A bucket that another replica creates after TakeToken's statement has
// begun is invisible to that statement's snapshot: the statement waits on
// the other insert, then finds no row to lock. TakeToken must then spend
// from the bucket the other replica made, neither failing nor spending a
// token twice.
func TestTakeTokenOnABucketCreatedMeanwhile(t *testing.T) {
	db := openDB(t)
	ctx := t.Context()
	const burst = 5
	tx, err := db.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	// The other replica's bucket, not committed yet: it holds one token.
	if _, err := tx.Exec(ctx, `INSERT INTO throttle_buckets (name, key, tokens) VALUES ('login_account', 'meanwhile', 1)`); err != nil {
		t.Fatal(err)
	}
	type result struct {
		wait time.Duration
		err  error
	}
	done := make(chan result, 1)
	go func() {
		w, err := db.TakeToken(ctx, "login_account", "meanwhile", burst, time.Hour)
		done <- result{w, err}
	}()
	testsupport.Eventually(t, 10*time.Second, "TakeToken waits on the uncommitted bucket", func() (bool, error) {
		var n int
		err := db.Pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE 'WITH created AS%'`).Scan(&n)
		return n == 1, err
	})
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.err != nil || r.wait != 0 {
		t.Fatalf("take from the bucket made meanwhile: wait %s, %v; want its one token", r.wait, r.err)
	}
	var tokens float64
	if err := db.Pool.QueryRow(ctx, `SELECT tokens FROM throttle_buckets WHERE key = 'meanwhile'`).Scan(&tokens); err != nil {
		t.Fatal(err)
	}
	if tokens >= 0.01 {
		t.Fatalf("the bucket holds %.3f tokens after its one was spent; want about 0", tokens)
	}
	if w, err := db.TakeToken(ctx, "login_account", "meanwhile", burst, time.Hour); err != nil || w <= 0 {
		t.Fatalf("next take: wait %s, %v; want a refusal", w, err)
	}
}
