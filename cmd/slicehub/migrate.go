package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/slicehub/slicehub/postgres"
)

// runMigrate is `slicehub migrate [-database-url URL]`: it applies the
// gateway schema's migrations that are not applied yet and says what it
// did. The gateway applies them at every start too; this applies them
// ahead of a rollout, or checks that nothing is left. Migrations belong to
// the daemon's binary, not slicectl: goose and its dependencies stay out of
// the CLI (README, "slicectl").
func runMigrate(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	fs := flag.NewFlagSet("slicehub migrate", flag.ContinueOnError)
	url := fs.String("database-url", getenv("DATABASE_URL"), "gateway database URL (env DATABASE_URL)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *url == "" {
		return errors.New("migrate: no database: set -database-url or DATABASE_URL")
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	db, err := postgres.Open(ctx, *url, slog.New(slog.DiscardHandler))
	if err != nil {
		return err
	}
	defer db.Close()
	res, err := db.MigrateVerbose(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "migrations applied: %d; schema version %d\n", res.Applied, res.Version)
	return nil
}
