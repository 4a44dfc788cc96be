package ops

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/spf13/cobra"

	"github.com/slicehub/slicehub/postgres/bootstrap"
)

// db backup and db restore. A slice's database goes through the admin API
// (streamed both ways, so neither the gateway nor slicectl holds a dump in
// memory, and the gateway suspends the slice around a restore). The
// gateway's own database is backed up through the API too, but restored
// straight into PostgreSQL: without that database there is no gateway and
// no admin key to ask it with.

type dbTarget struct {
	slice   int64
	gateway bool
}

func (t *dbTarget) register(cmd *cobra.Command) {
	cmd.Flags().Int64Var(&t.slice, "slice", 0, "the slice whose database to use")
	// Not --gateway: that is every command's gateway URL.
	cmd.Flags().BoolVar(&t.gateway, "gateway-db", false, "the gateway's own database")
}

func (t *dbTarget) check() error {
	if (t.slice > 0) == t.gateway {
		return usageErrorf("name one database: --slice ID or --gateway-db")
	}
	if t.slice < 0 {
		return usageErrorf("--slice %d: want a positive id", t.slice)
	}
	return nil
}

func newBackupCommand(g *globals) *cobra.Command {
	var t dbTarget
	var out string
	cmd := &cobra.Command{
		Use:   "backup (--slice ID | --gateway-db) -o FILE",
		Short: "Write a pg_dump (custom format) of a slice's database or the gateway's, through the admin API",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := t.check(); err != nil {
				return err
			}
			if out == "" {
				return usageErrorf("backup wants -o FILE")
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			path := "/admin/api/gateway/backup"
			if t.slice > 0 {
				path = fmt.Sprintf("/admin/api/slices/%d/backup", t.slice)
			}
			resp, err := c.stream(cmd.Context(), http.MethodGet, path, nil, 0)
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			// Written under a temporary name and renamed when complete: a
			// file named FILE is always a whole dump.
			tmp := out + ".partial"
			f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
			if err != nil {
				return err
			}
			p := newByteProgress(cmd.ErrOrStderr(), "downloaded", 0)
			n, err := io.Copy(io.MultiWriter(f, p), resp.Body)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				p.done("failed")
				os.Remove(tmp)
				return fmt.Errorf("backup incomplete after %s, nothing written to %s: %w", humanBytes(n), out, err)
			}
			if err := os.Rename(tmp, out); err != nil {
				return err
			}
			p.done("done")
			return g.print(cmd, map[string]any{"file": out, "bytes": n}, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "%s: %s\n", out, humanBytes(n))
				return err
			})
		},
	}
	t.register(cmd)
	cmd.Flags().StringVarP(&out, "output", "o", "", "the file to write (mode 0600)")
	return cmd
}

func newRestoreCommand(g *globals) *cobra.Command {
	var t dbTarget
	var in, dbURL string
	var yes bool
	cmd := &cobra.Command{
		Use:   "restore (--slice ID | --gateway-db) -i FILE [--yes]",
		Short: "Replace a slice's database (through the admin API; the slice is suspended meanwhile) or the gateway's (directly, gateways stopped) with a dump",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := t.check(); err != nil {
				return err
			}
			if in == "" {
				return usageErrorf("restore wants -i FILE")
			}
			f, err := os.Open(in)
			if err != nil {
				return withCode(ExitUsage, err)
			}
			defer f.Close()
			st, err := f.Stat()
			if err != nil {
				return err
			}
			if t.gateway {
				return restoreGateway(cmd, f, st.Size(), dbURL, yes)
			}
			if !yes {
				return usageErrorf("restoring replaces every row of slice %d's database (its slice is suspended meanwhile): add --yes", t.slice)
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			p := newByteProgress(cmd.ErrOrStderr(), "uploaded", st.Size())
			body := io.TeeReader(f, p)
			resp, err := c.stream(cmd.Context(), http.MethodPost,
				fmt.Sprintf("/admin/api/slices/%d/restore?confirm=%d", t.slice, t.slice), body, st.Size())
			if err != nil {
				p.done("failed")
				return err
			}
			defer resp.Body.Close()
			p.done("restored")
			var out map[string]any
			if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
				return fmt.Errorf("restore: the answer is not the expected JSON: %w", err)
			}
			return g.print(cmd, out, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "slice %d restored from %s\n", t.slice, filepath.Base(in))
				return err
			})
		},
	}
	t.register(cmd)
	cmd.Flags().StringVarP(&in, "input", "i", "", "the dump to restore (from db backup)")
	cmd.Flags().BoolVar(&yes, "yes", false, "yes, replace the database's content")
	cmd.Flags().StringVar(&dbURL, "database-url", os.Getenv("DATABASE_URL"), "gateway database URL, for --gateway-db (env DATABASE_URL)")
	return cmd
}

// restoreGateway restores the gateway's database straight into
// PostgreSQL, in one transaction (pg_restore --single-transaction
// --clean): a dump that fails leaves the database as it was. Every gateway
// must be stopped first: they cache sessions and run the scheduler on it.
func restoreGateway(cmd *cobra.Command, f *os.File, size int64, dbURL string, yes bool) error {
	if !yes {
		return usageErrorf("restoring the gateway database replaces accounts, slices and keys: stop every gateway first (nomad job stop gateway), then add --yes")
	}
	if dbURL == "" {
		return usageErrorf("no database: set --database-url or DATABASE_URL")
	}
	cfg, err := pgx.ParseConfig(dbURL)
	if err != nil {
		return usageErrorf("--database-url: %v", err)
	}
	ctx, cancel := context.WithTimeout(cmd.Context(), time.Hour)
	defer cancel()
	log := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), nil))
	env := []string{}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PG") {
			env = append(env, kv)
		}
	}
	env = append(env, fmt.Sprintf("PGHOST=%s", cfg.Host), fmt.Sprintf("PGPORT=%d", cfg.Port), "PGUSER="+cfg.User,
		"PGPASSWORD="+cfg.Password, "PGAPPNAME=slicectl-restore")
	if cfg.TLSConfig != nil {
		env = append(env, "PGSSLMODE=require")
	}
	p := newByteProgress(cmd.ErrOrStderr(), "restored", size)
	pr := exec.CommandContext(ctx, bootstrap.FindPgTool("pg_restore"), "--no-password", "--dbname="+cfg.Database,
		"--clean", "--if-exists", "--no-owner", "--single-transaction", "--exit-on-error")
	pr.Env = env
	pr.Stdin = io.TeeReader(f, p)
	var stderr strings.Builder
	pr.Stderr = &stderr
	if err := pr.Run(); err != nil {
		p.done("failed")
		return fmt.Errorf("pg_restore refused the dump; the gateway database is unchanged: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	p.done("restored")
	log.Info("gateway database restored", "database", cfg.Database, "from", f.Name(), "actor", "slicectl")
	fmt.Fprintf(cmd.OutOrStdout(), "gateway database %s restored from %s; start the gateways again\n", cfg.Database, filepath.Base(f.Name()))
	return nil
}
