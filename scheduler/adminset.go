package scheduler

import (
	"github.com/slicehub/slicehub"
)

// Runtime settings an admin changes through the admin API. The scheduler
// holds them in memory only; the admin API stores them in PostgreSQL
// (pool_settings) and the daemon applies the stored ones at start and on
// NOTIFY pool_settings, so that a restart or another replica keeps them.

// Paused reports whether refilling the warm pool is paused (SetPaused).
func (s *Scheduler) Paused() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.paused
}

// MinWarm returns the warm pool's current target.
func (s *Scheduler) MinWarm() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cfg.MinWarm
}

// MaxSlices returns the configured limit of running slices.
func (s *Scheduler) MaxSlices() int { return s.cfg.MaxSlices }

// SetMinWarm changes the warm pool's target and asks for a reconcile, which
// dispatches or (through the warm TTL) lets go of warm slices. It is
// bounded by MaxSlices: a target that could never be met would only keep
// the pool "exhausted". The reconcile reads cfg.MinWarm under reconcileMu
// and the getters under mu, so the write holds both; it may therefore wait
// for a pass in progress to end.
func (s *Scheduler) SetMinWarm(n int) error {
	const op = "scheduler.set_min_warm"
	if n < 0 || n > s.cfg.MaxSlices {
		return slicehub.Errorf(op, slicehub.KindInvalid, "invalid_min_warm",
			"min_warm must be between 0 and max_slices (%d)", s.cfg.MaxSlices)
	}
	s.reconcileMu.Lock()
	s.mu.Lock()
	old := s.cfg.MinWarm
	s.cfg.MinWarm = n
	s.mu.Unlock()
	s.reconcileMu.Unlock()
	s.log.Info("warm pool target changed", "from", old, "to", n)
	s.Kick()
	return nil
}
