package scheduler_test

import (
	"context"
	"sync"
	"testing"

	"github.com/slicehub/slicehub"
	"github.com/slicehub/slicehub/scheduler"
)

// The admin API changes the warm pool's target at runtime: the next pass
// fills to the new target, a target beyond MaxSlices is refused, and a
// change racing passes is safe (run with -race).
func TestSetMinWarmAtRuntime(t *testing.T) {
	e := newEnv(t, scheduler.Config{MinWarm: 1, MaxSlices: 4})
	e.settle(t)
	if got := e.states(t)[slicehub.StateWarm]; got != 1 {
		t.Fatalf("warm = %d; want 1", got)
	}
	if err := e.sched.SetMinWarm(5); slicehub.KindOf(err) != slicehub.KindInvalid {
		t.Fatalf("SetMinWarm(5) with MaxSlices 4 = %v; want KindInvalid", err)
	}
	if err := e.sched.SetMinWarm(-1); slicehub.KindOf(err) != slicehub.KindInvalid {
		t.Fatalf("SetMinWarm(-1) = %v; want KindInvalid", err)
	}

	var wg sync.WaitGroup
	wg.Go(func() {
		for range 5 {
			_ = e.sched.Reconcile(context.Background())
		}
	})
	if err := e.sched.SetMinWarm(3); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if e.sched.MinWarm() != 3 {
		t.Fatalf("MinWarm() = %d; want 3", e.sched.MinWarm())
	}
	e.settle(t)
	if got := e.states(t)[slicehub.StateWarm]; got != 3 {
		t.Fatalf("warm after SetMinWarm(3) = %d; want 3", got)
	}

	// Paused, a higher target starts nothing.
	e.sched.SetPaused(true)
	if !e.sched.Paused() {
		t.Fatal("Paused() = false after SetPaused(true)")
	}
	if err := e.sched.SetMinWarm(4); err != nil {
		t.Fatal(err)
	}
	e.settle(t)
	if got := e.states(t); got[slicehub.StateWarm] != 3 || got[slicehub.StateProvisioning] != 0 {
		t.Fatalf("states while paused = %v; want the 3 warm slices only", got)
	}
}
