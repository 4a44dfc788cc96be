// Package ops is the operator's side of Slicehub: the slicectl command line
// (cobra) and the scripts beside it that install tools and build images.
// Day-to-day commands talk to the gateway's admin API (slice logs and
// database dumps stream through it); only bootstrap and disaster commands
// go to PostgreSQL directly: applying migrations, creating the first
// admin, restoring the gateway's own database. It links the API's shapes
// (admin/adminapi) and the small packages those commands share with the
// gateway (password, postgres/bootstrap, postgres/migrations), never the
// server: the slice actions come from slicehub.AdminActions.
package ops

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/jackc/pgx/v5/stdlib"
	"github.com/spf13/cobra"

	"github.com/slicehub/slicehub/postgres/bootstrap"
	"github.com/slicehub/slicehub/postgres/migrations"
)

// NewRoot returns the slicectl command tree.
func NewRoot(stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:           "slicectl",
		Short:         "Operate a Slicehub platform",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	// Flag errors are usage errors (exit 2), like bad arguments.
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return withCode(ExitUsage, err) })
	g := &globals{}
	g.register(root)
	root.AddCommand(newDBCommand(g), newStatusCommand(g), newDoctorCommand(g), newPoolCommand(g),
		newSlicesCommand(g), newUsersCommand(g))
	root.AddCommand(newDrainCommand(g))
	return root
}

func newDBCommand(g *globals) *cobra.Command {
	db := &cobra.Command{Use: "db", Short: "Gateway database maintenance"}
	var url string
	migrate := &cobra.Command{
		Use:   "migrate",
		Short: "Apply the gateway schema migrations (also done at every gateway start)",
		RunE: func(cmd *cobra.Command, _ []string) error {
			if url == "" {
				return fmt.Errorf("no database: set --database-url or DATABASE_URL")
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 2*time.Minute)
			defer cancel()
			pg, err := bootstrap.Connect(ctx, url)
			if err != nil {
				return err
			}
			defer pg.Close(context.WithoutCancel(ctx))
			sqlDB := stdlib.OpenDB(*pg.Config())
			defer sqlDB.Close()
			applied, err := migrations.Up(ctx, sqlDB)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "migrations applied: %d; schema version %d\n", applied.Applied, applied.Version)
			return nil
		},
	}
	migrate.Flags().StringVar(&url, "database-url", os.Getenv("DATABASE_URL"), "gateway database URL (env DATABASE_URL)")
	db.AddCommand(migrate, newBackupCommand(g), newRestoreCommand(g))
	return db
}
