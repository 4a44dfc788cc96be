package gateway

import (
	"context"
	"maps"
	"sort"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/slicehub/slicehub"
	"github.com/slicehub/slicehub/gateway/wire"
)

// healthz answers while the process can serve at all. It checks nothing
// else on purpose: a liveness probe that follows PostgreSQL would restart
// every gateway when the database blinks.
func (s *Server) healthz(c *fiber.Ctx) error {
	c.Set(fiber.HeaderCacheControl, "no-store")
	return c.JSON(fiber.Map{"status": "ok"})
}

// readyz runs every readiness check concurrently under one deadline. Failing
// checks are named (names are configuration, not internals); their errors
// are logged, never shown.
func (s *Server) readyz(c *fiber.Ctx) error {
	const op = "gateway.readyz"
	if s.draining.Load() {
		return wire.WithRetry(op, slicehub.KindUnavailable, "draining", "the gateway is shutting down", time.Second)
	}
	s.readyMu.Lock()
	checks := maps.Clone(s.readyChecks)
	s.readyMu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.ReadyTimeout)
	defer cancel()
	type result struct {
		name string
		err  error
	}
	results := make(chan result, len(checks)) // buffered: a late check never blocks
	for name, check := range checks {
		go func() { results <- result{name, check(ctx)} }()
	}
	pending := make(map[string]bool, len(checks))
	for name := range checks {
		pending[name] = true
	}
	var failing []string
	for len(pending) > 0 {
		select {
		case r := <-results:
			delete(pending, r.name)
			if r.err != nil {
				s.log.Warn("readiness check failed", "check", r.name, "err", r.err)
				failing = append(failing, r.name)
			}
		case <-ctx.Done():
			// A check that ignores its context must not hang the probe.
			for name := range pending {
				s.log.Warn("readiness check timed out", "check", name)
				failing = append(failing, name)
			}
			pending = nil
		}
	}
	if len(failing) > 0 {
		sort.Strings(failing)
		return wire.WithRetry(op, slicehub.KindUnavailable, "not_ready",
			"not ready: "+strings.Join(failing, ", "), time.Second)
	}
	c.Set(fiber.HeaderCacheControl, "no-store")
	return c.JSON(fiber.Map{"status": "ready"})
}
