package scheduler_test

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/slicehub/slicehub"
	"github.com/slicehub/slicehub/scheduler"
	"github.com/slicehub/slicehub/testsupport"
)

// On real Nomad and Consul: six users claim an empty pool at once, with a
// cap of two dispatches in flight per node and slices that take 3 s to
// start. Sampled from Nomad all along, never more than two children are
// dispatched and not running; every user is served; and the places the
// waiting users are shown are 1..k in the order of their slices.
func TestRealDispatchCapHolds(t *testing.T) {
	r := newRealEnv(t)
	r.registerMock(t, map[string]string{"start_block_for": "3s"})
	s := r.scheduler(t, scheduler.Config{MinWarm: 0, MaxSlices: 20, Admission: scheduler.Admission{Dispatches: 2}})
	run(t, s.Run)
	ctx := context.Background()

	users := make([]int64, 6)
	for i := range users {
		users[i] = r.user(t, fmt.Sprintf("burst%d@example.com", i))
	}
	var wg sync.WaitGroup
	errs := make(chan error, len(users))
	for _, u := range users {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := s.Claim(ctx, u); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	maxInFlight, maxPlace := 0, 0
	testsupport.Eventually(t, 2*time.Minute, "every user served", func() (bool, error) {
		// In flight, as Nomad sees it: alive children with no running
		// allocation (pending, or not placed yet).
		n := 0
		for _, c := range r.alive(t) {
			allocs, err := r.nomad.JobAllocations(ctx, c.JobID)
			if err != nil {
				return false, err
			}
			running := false
			for _, a := range allocs {
				running = running || a.Running()
			}
			if !running {
				n++
			}
		}
		maxInFlight = max(maxInFlight, n)
		if n > 2 {
			t.Fatalf("%d children dispatched and not running; the cap is 2", n)
		}
		// Places: the waiting users, by slice id, are 1, 2, ...
		type waiting struct {
			slice int64
			place int
		}
		var w []waiting
		assigned := 0
		for _, u := range users {
			p, err := s.Progress(ctx, u)
			if err != nil {
				return false, err
			}
			if p.Queue != nil {
				w = append(w, waiting{p.SliceID, p.Queue.Position})
			}
			if p.State == slicehub.StateAssigned {
				assigned++
			}
		}
		sort.Slice(w, func(i, j int) bool { return w[i].slice < w[j].slice })
		for i, x := range w {
			if x.place != i+1 {
				t.Fatalf("waiting users' places %+v; want 1..%d in slice order", w, len(w))
			}
			maxPlace = max(maxPlace, x.place)
		}
		return assigned == len(users), fmt.Errorf("%d of %d assigned, %d in flight, waiting %+v", assigned, len(users), n, w)
	})
	if maxInFlight == 0 || maxPlace < 2 {
		t.Fatalf("max in flight %d, furthest place %d: the burst never queued, so the cap was not tested", maxInFlight, maxPlace)
	}
	t.Logf("max in flight %d (cap 2), furthest place shown %d", maxInFlight, maxPlace)
}
