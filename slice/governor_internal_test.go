package slice

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"
)

func TestGovernorDecide(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)
	g := governor{cfg: GovernorConfig{Soft: 1000, MinInterval: 10 * time.Minute, AlertAfter: 3, AlertWindow: time.Hour}}
	for _, c := range []struct {
		used uint64
		busy bool
		want Decision
	}{{999, false, DecideNothing}, {999, true, DecideNothing}, {1000, true, DecideBusy}, {1000, false, DecideRestart}} {
		if got := g.decide(t0, c.used, c.busy); got != c.want {
			t.Errorf("decide(%d, busy %v) = %q, want %q", c.used, c.busy, got, c.want)
		}
	}
	// The loop guard: no second restart within MinInterval, whatever memory says.
	if _, alert := g.restarted(t0); alert {
		t.Fatal("alert after one restart")
	}
	if got := g.decide(t0.Add(9*time.Minute), 5000, false); got != DecideLoopHold {
		t.Fatalf("9 min after a restart: %q, want %q", got, DecideLoopHold)
	}
	if got := g.decide(t0.Add(10*time.Minute), 5000, false); got != DecideRestart {
		t.Fatalf("10 min after a restart: %q, want %q", got, DecideRestart)
	}
	// The rate: the third restart within the hour alerts; old ones age out.
	g.restarted(t0.Add(20 * time.Minute))
	if n, alert := g.restarted(t0.Add(40 * time.Minute)); !alert || n != 3 {
		t.Fatalf("third restart in an hour: %d, alert %v", n, alert)
	}
	if n, alert := g.restarted(t0.Add(90 * time.Minute)); alert || n != 2 {
		t.Fatalf("after the window: %d recent, alert %v; want 2, no alert", n, alert)
	}
	// No threshold: never.
	if got := (&governor{}).decide(t0, 1<<40, false); got != DecideNothing {
		t.Fatalf("no threshold: %q", got)
	}
}

// Tick with a fake clock, reader and syncer: it restarts over the threshold
// once quiet, records the event, and holds off a loop.
func TestGovernorTick(t *testing.T) {
	now := time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)
	used := uint64(500)
	busy := false
	restarts := 0
	var restartErr error
	v := NewGovernor(GovernorConfig{Soft: 1000, MinInterval: time.Minute, AlertAfter: 2, AlertWindow: time.Hour, QuietFor: 50 * time.Millisecond},
		func() (MemoryUsage, error) { return MemoryUsage{Anon: used - 100, Shmem: 100, File: 1 << 30}, nil },
		func() bool { return busy },
		func() error { restarts++; return restartErr },
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	v.now = func() time.Time { return now }
	ctx := context.Background()

	if d := v.Tick(ctx); d != DecideNothing || restarts != 0 {
		t.Fatalf("under the threshold (page cache aside): %q, %d restarts", d, restarts)
	}
	used, busy = 1200, true
	if d := v.Tick(ctx); d != DecideBusy || restarts != 0 {
		t.Fatalf("busy: %q, %d restarts", d, restarts)
	}
	busy = false
	if d := v.Tick(ctx); d != DecideRestart || restarts != 1 {
		t.Fatalf("quiet: %q, %d restarts", d, restarts)
	}
	now = now.Add(30 * time.Second)
	if d := v.Tick(ctx); d != DecideLoopHold || restarts != 1 {
		t.Fatalf("30 s later: %q, %d restarts", d, restarts)
	}
	now = now.Add(time.Minute)
	restartErr = errors.New("boom")
	if d := v.Tick(ctx); d != DecideRestart || restarts != 2 {
		t.Fatalf("later: %q, %d restarts", d, restarts)
	}
	ev := v.Events()
	if len(ev) != 2 || ev[0].Alert || !ev[1].Alert || ev[1].Recent != 2 || ev[1].Error != "boom" || ev[0].Usage.Used() != 1200 {
		t.Fatalf("events %+v", ev)
	}
}

func TestCgroupMemoryHere(t *testing.T) {
	u, err := CgroupMemory()
	if err != nil {
		t.Fatalf("this host has a memory cgroup, and it was not read: %v", err)
	}
	if u.Used() == 0 {
		t.Fatalf("usage %+v: no anonymous memory in the test's own cgroup?", u)
	}
	t.Logf("cgroup memory: %+v", u)
}
