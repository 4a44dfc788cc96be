package parallel

import (
	"sync"
	"testing"
)

func TestEachRunsEveryIndexWithinTheLimit(t *testing.T) {
	for _, limit := range []int{0, 1, 3} {
		const count = 50
		want := limit
		if want <= 0 {
			want = 8
		}
		var mu sync.Mutex
		running, peak := 0, 0
		seen := make([]int, count)
		gate := make(chan struct{})
		go func() {
			// Let every body in: the bound alone keeps them out.
			for range count {
				gate <- struct{}{}
			}
		}()
		Each(count, limit, func(i int) {
			mu.Lock()
			running++
			peak = max(peak, running)
			seen[i]++
			mu.Unlock()
			<-gate
			mu.Lock()
			running--
			mu.Unlock()
		})
		for i, n := range seen {
			if n != 1 {
				t.Fatalf("limit %d: index %d ran %d times; want once", limit, i, n)
			}
		}
		if peak > want {
			t.Fatalf("limit %d: %d bodies ran at once; want at most %d", limit, peak, want)
		}
	}
}
