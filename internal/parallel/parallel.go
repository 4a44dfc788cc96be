// Package parallel runs a loop's bodies concurrently with a bound, for the
// fan-outs over Nomad's clients (package nomad's node statistics,
// telemetry's allocation statistics): each request is forwarded by the
// server to a client, and hundreds at once would queue there.
package parallel

import "sync"

// Each runs fn(0..count-1) with at most limit at once (8 when limit <= 0)
// and returns when all have returned.
func Each(count, limit int, fn func(i int)) {
	if limit <= 0 {
		limit = 8
	}
	sem := make(chan struct{}, limit)
	var wg sync.WaitGroup
	for i := range count {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			fn(i)
		}()
	}
	wg.Wait()
}
