package consul

import (
	"context"
	"log/slog"
	"time"

	"github.com/hashicorp/consul/api"
)

// Lead runs fn while this process holds the Consul lock at key, and only
// then. When the lock is lost (session invalidated, Consul unreachable past
// the session TTL), fn's context is cancelled and Lead waits for fn to return
// before it releases anything or tries again, so a replica that loses the
// lock stops acting before it could take it back; Consul's lock-delay keeps
// another replica from acquiring it in the meantime. Lead returns when ctx
// ends.
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
			SessionTTL:     "10s",
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
		log.Info("became leader")
		lctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			fn(lctx)
		}()
		select {
		case <-lost:
			log.Warn("lost leadership")
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
