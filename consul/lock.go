package consul

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/hashicorp/consul/api"
)

// Lead runs fn while this process holds the Consul lock at key, and only
// then. When the lock is lost, fn's context is cancelled and Lead waits for
// fn to return before it releases anything or tries again, so a replica that
// loses the lock stops acting before it could take it back; Consul's
// lock-delay keeps another replica from acquiring it in the meantime. Lead
// returns when ctx ends.
//
// The lock is lost when its session is invalidated, when Consul has not
// confirmed it for longer than the session TTL, and also when the key is no
// longer held by this session for any other reason: a Consul that restarted
// without its state (a dev agent, a lost Raft log), or an operator deleting
// the key. The Consul API's own lock monitor notices that last case only when
// its blocking query times out, minutes later, so while it leads Lead also
// reads the key itself every CheckInterval.
func Lead(ctx context.Context, client *api.Client, key string, log *slog.Logger, fn func(ctx context.Context)) {
	if log == nil {
		log = slog.Default()
	}
	log = log.With("component", "leader", "key", key)
	backoff := 250 * time.Millisecond
	for ctx.Err() == nil {
		lock, err := client.LockOpts(&api.LockOptions{
			Key:            key,
			SessionName:    "slicehub-scheduler",
			SessionTTL:     lockTTL.String(),
			MonitorRetries: 5,
			LockWaitTime:   5 * time.Second,
		})
		if err != nil {
			log.Warn("cannot prepare the leader lock", "err", err)
			if !sleepCtx(ctx, backoff) {
				return
			}
			backoff = min(backoff*2, 5*time.Second)
			continue
		}
		lost, err := lockUntil(ctx, lock)
		if err != nil {
			log.Warn("cannot acquire the leader lock", "err", err)
			if !sleepCtx(ctx, backoff) {
				return
			}
			backoff = min(backoff*2, 5*time.Second)
			continue
		}
		if lost == nil { // ctx ended while waiting
			return
		}
		backoff = 250 * time.Millisecond
		lctx, cancel := context.WithCancel(ctx)
		gone, err := watchHold(lctx, client.KV(), key, lockTTL, log)
		if err != nil {
			cancel()
			log.Warn("cannot confirm the leader lock", "err", err)
			_ = lock.Unlock()
			if !sleepCtx(ctx, backoff) {
				return
			}
			continue
		}
		log.Info("became leader")
		done := make(chan struct{})
		go func() {
			defer close(done)
			fn(lctx)
		}()
		select {
		case <-lost:
			log.Warn("lost leadership: the lock's session ended")
		case <-gone:
			log.Warn("lost leadership: the lock is no longer ours")
		case <-ctx.Done():
		}
		cancel()
		<-done
		_ = lock.Unlock()
		_ = lock.Destroy()
		log.Info("stepped down")
	}
}

// lockUntil blocks until the lock is held or ctx ends (then it returns nil, nil).
func lockUntil(ctx context.Context, lock *api.Lock) (<-chan struct{}, error) {
	stopCh := make(chan struct{})
	returned := make(chan struct{})
	defer close(returned)
	go func() {
		select {
		case <-ctx.Done():
			close(stopCh)
		case <-returned:
		}
	}()
	for {
		lost, err := lock.Lock(stopCh)
		if err != nil || lost != nil || ctx.Err() != nil {
			return lost, err
		}
		// Lock returns (nil, nil) when LockTryOnce is set or stop fired;
		// with neither, try again.
	}
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// lockTTL is the TTL of the lock's session: how long a leader that cannot
// reach Consul may go on believing it leads.
const lockTTL = 10 * time.Second

// CheckInterval is how often a leader reads the lock's key to confirm it
// still holds it.
var CheckInterval = time.Second

// watchHold reads the session that holds key now (this process just
// acquired it), then re-reads the key every CheckInterval. The returned
// channel closes when the key is no longer held by that session, or when
// no read has succeeded for longer than ttl.
func watchHold(ctx context.Context, kv *api.KV, key string, ttl time.Duration, log *slog.Logger) (<-chan struct{}, error) {
	q := (&api.QueryOptions{RequireConsistent: true}).WithContext(ctx)
	pair, _, err := kv.Get(key, q)
	if err != nil {
		return nil, err
	}
	if pair == nil || pair.Session == "" {
		return nil, errors.New("the lock was released right after it was acquired")
	}
	session := pair.Session
	gone := make(chan struct{})
	go func() {
		defer close(gone)
		confirmed := time.Now()
		t := time.NewTicker(CheckInterval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			pair, _, err := kv.Get(key, q)
			switch {
			case ctx.Err() != nil:
				return
			case err != nil:
				if time.Since(confirmed) > ttl {
					log.Warn("Consul has not confirmed the leader lock for longer than its TTL", "err", err)
					return
				}
			case pair == nil || pair.Session != session:
				return
			default:
				confirmed = time.Now()
			}
		}
	}()
	return gone, nil
}
