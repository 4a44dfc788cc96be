// Package ops is the operator's side of Slicehub: the slicectl command line
// (cobra) and the scripts beside it that install tools and build images.
// Day-to-day commands talk to the gateway's admin API (slice logs and
// database dumps stream through it); only bootstrap and disaster commands
// go to PostgreSQL directly: creating the first admin, restoring the
// gateway's own database. It links the API's shapes (admin/adminapi) and
// the small packages those commands share with the gateway (password,
// postgres/bootstrap), never the server: the slice actions come from
// slicehub.AdminActions. The schema's migrations are the daemon's
// (`slicehub migrate`): goose is not linked here, and cmd/slicectl's
// dependency test keeps it so.
package ops

import (
	"errors"
	"io"

	"github.com/spf13/cobra"
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
	// The migrations moved to the daemon's binary, so that slicectl does
	// not link goose: the command stays to say where they went.
	migrate := &cobra.Command{
		Use:                "migrate",
		Short:              "Moved: run `slicehub migrate` (the gateway also applies the migrations at every start)",
		DisableFlagParsing: true,
		RunE: func(*cobra.Command, []string) error {
			return withCode(ExitUsage, errors.New("db migrate moved to the daemon's binary: run `slicehub migrate -database-url URL` (or with DATABASE_URL set); the gateway also applies the migrations at every start"))
		},
	}
	db.AddCommand(migrate, newBackupCommand(g), newRestoreCommand(g))
	return db
}
