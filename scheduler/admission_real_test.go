package scheduler_test

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/slicehub/slicehub"
	"github.com/slicehub/slicehub/scheduler"
	"github.com/slicehub/slicehub/testsupport"
)

// On real Nomad and Consul: six users claim an empty pool at once, with a
// cap of two dispatches in flight per node and slices that take 3 s to
// start. Sampled from Nomad and Consul all along, never more than two
// children are dispatched and not yet healthy; every user is served; the
// places shown right after the burst are 1..6 in the order of the slices,
// and no user's place ever goes up.
func TestRealDispatchCapHolds(t *testing.T) {
	r := newRealEnv(t)
	r.registerMock(t, map[string]string{"start_block_for": "3s"})
	s := r.scheduler(t, scheduler.Config{MinWarm: 0, MaxSlices: 20, Admission: scheduler.Admission{Dispatches: 2}})
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
	// Before the leader runs, everyone waits: places 1..6 in slice order.
	place := map[int64]int{} // by user, the last place seen
	bySlice := map[int64]int64{}
	for _, u := range users {
		p, err := s.Progress(ctx, u)
		if err != nil || p.Queue == nil || p.Queue.For != slicehub.QueueDispatch {
			t.Fatalf("progress of user %d before any dispatch = %+v, %v; want a place in the dispatch queue", u, p, err)
		}
		place[u], bySlice[p.SliceID] = p.Queue.Position, u
	}
	ids := make([]int64, 0, len(bySlice))
	for id := range bySlice {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	for i, id := range ids {
		if got := place[bySlice[id]]; got != i+1 {
			t.Fatalf("slice %d (user %d) is shown place %d; want %d (places %v)", id, bySlice[id], got, i+1, place)
		}
	}
	run(t, s.Run)

	maxInFlight := 0
	testsupport.Eventually(t, 2*time.Minute, "every user served", func() (bool, error) {
		// In flight: alive children whose slice has no passing instance in
		// Consul yet, asked of Consul itself (the route table the scheduler
		// reads only lags it). Nomad's own client status is no measure:
		// the servers learn "running" after the client registered the
		// service.
		// Children first, Consul second: a slice healthy by then is one
		// that was in flight at the first read, never a new one.
		alive := r.alive(t)
		passing, _, err := r.consul.Health().Service(r.name, "", true, nil)
		if err != nil {
			return false, err
		}
		healthy := map[string]bool{}
		for _, e := range passing {
			healthy[e.Service.Meta[slicehub.MetaSliceID]] = true
		}
		n := 0
		for _, c := range alive {
			if !healthy[strconv.FormatInt(c.SliceID, 10)] {
				n++
			}
		}
		maxInFlight = max(maxInFlight, n)
		if n > 2 {
			t.Fatalf("%d children dispatched and not running; the cap is 2", n)
		}
		// A user's place only ever moves up the line.
		assigned := 0
		var waiting []int
		for _, u := range users {
			p, err := s.Progress(ctx, u)
			if err != nil {
				return false, err
			}
			if p.Queue != nil {
				if p.Queue.Position > place[u] {
					t.Fatalf("user %d went back from place %d to %d", u, place[u], p.Queue.Position)
				}
				place[u] = p.Queue.Position
				waiting = append(waiting, p.Queue.Position)
			}
			if p.State == slicehub.StateAssigned {
				assigned++
			}
		}
		return assigned == len(users), fmt.Errorf("%d of %d assigned, %d in flight, places %v", assigned, len(users), n, waiting)
	})
	if maxInFlight == 0 {
		t.Fatal("nothing was ever seen in flight: the cap was not tested")
	}
	t.Logf("max in flight %d (cap 2)", maxInFlight)
}
