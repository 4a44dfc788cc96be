// Command slice is the reference slice runtime: one per tenant, dispatched by
// Nomad as a child of the parameterized job "slice". See package slice and
// jobs/README.md for the contract it implements.
//
// Configuration comes from the environment (slice.ConfigFromEnv). SIGTERM,
// which Nomad sends on stop, and SIGINT start a graceful shutdown; the
// process then exits 0. Any failure exits 1, so that Nomad restarts it: a
// batch task that exits 0 is considered complete and stays dead.
package main

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/slicehub/slicehub/slice"
)

func main() {
	level := slog.LevelInfo
	if v := os.Getenv("SLICE_LOG_LEVEL"); v != "" {
		if err := level.UnmarshalText([]byte(strings.ToUpper(v))); err != nil {
			level = slog.LevelInfo
		}
	}
	logger := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	slog.SetDefault(logger)

	cfg, err := slice.ConfigFromEnv(os.Getenv)
	if err != nil {
		logger.Error("invalid configuration", "component", "main", "err", err)
		os.Exit(1)
	}
	cfg.Logger = logger.With("alloc_id", cfg.AllocID)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()

	s, err := slice.New(cfg)
	if err != nil {
		logger.Error("cannot start", "component", "main", "err", err)
		os.Exit(1)
	}
	if err := s.Run(ctx); err != nil {
		logger.Error("slice stopped", "component", "main", "err", err)
		os.Exit(1)
	}
	logger.Info("stopped", "component", "main")
}
