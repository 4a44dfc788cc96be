// Command slicehub runs the Slicehub gateway and scheduler.
//
//	slicehub serve [flags]   against existing PostgreSQL, Consul and Nomad
//	slicehub dev [flags]     the embedded default (`make run`): starts a private
//	                         PostgreSQL and dev agents under -state-dir, then serves
//	slicehub app-build -out DIR   writes the CRM app's build (served under /app/)
//	                         for a static server: the nginx edge in production
//	slicehub migrate [-database-url URL]   applies the gateway schema's
//	                         migrations (also done at every gateway start)
//
// Every flag has an environment variable; `slicehub serve -h` lists them.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/slicehub/slicehub"
	"github.com/slicehub/slicehub/billing"
	"github.com/slicehub/slicehub/devenv"
	"github.com/slicehub/slicehub/web"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "slicehub:", err)
		}
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		return fmt.Errorf("usage: slicehub serve|dev [flags] | app-build -out DIR | migrate [-database-url URL]  (slicehub serve -h for the flags)")
	}
	cmd, args := args[0], args[1:]
	switch cmd {
	case "app-build":
		return appBuild(args)
	case "migrate":
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		return runMigrate(ctx, args, os.Getenv, os.Stdout)
	}
	cfg, _, err := parseConfig("slicehub "+cmd, args, os.Getenv)
	if err != nil {
		return err
	}
	log := newLogger(cfg, os.Stderr)
	slog.SetDefault(log)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	switch cmd {
	case "serve":
		return serve(ctx, cfg, log)
	case "dev":
		return dev(ctx, cfg, log)
	}
	return fmt.Errorf("unknown command %q: want serve, dev, app-build or migrate", cmd)
}

// appBuild writes the embedded CRM app's build into a directory.
func appBuild(args []string) error {
	fs := flag.NewFlagSet("slicehub app-build", flag.ContinueOnError)
	out := fs.String("out", "", "directory to write the build into (created if needed; older builds' assets are kept)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *out == "" {
		return errors.New("app-build: -out DIR is required")
	}
	b, err := web.Embedded()
	if err != nil {
		return err
	}
	if err := b.Write(*out); err != nil {
		return err
	}
	for name, content := range b {
		fmt.Printf("%s\t%d bytes\n", filepath.Join(*out, name), len(content))
	}
	return nil
}

func newLogger(c Config, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(c.LogLevel))
	opts := &slog.HandlerOptions{Level: level}
	if c.LogFormat == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

func serve(ctx context.Context, cfg Config, log *slog.Logger) error {
	m := &Main{Config: cfg, Log: log}
	if err := m.Run(ctx); err != nil {
		return err
	}
	<-ctx.Done()
	log.Info("shutting down")
	return m.Close()
}

// dev brings up the whole platform on this machine: a private PostgreSQL
// (unless DATABASE_URL is given), Consul and Nomad agents, and the gateway
// with a warm slice. Ctrl-C stops everything it started; the state directory
// keeps the data for the next run.
func dev(ctx context.Context, cfg Config, log *slog.Logger) error {
	// No internet here, and no phone to scan with on a developer's machine:
	// the slices serve the stand-in page for WhatsApp Web unless a URL is set.
	if cfg.WAURL == "" {
		cfg.WAStandin = true
	}
	dir, err := filepath.Abs(cfg.StateDir)
	if err != nil {
		return err
	}
	docker := cfg.SliceDriver == "docker" && dockerRunning()
	if !docker {
		cfg.SliceDriver = "raw_exec"
		fmt.Fprintln(os.Stderr, "dev: Docker is not available; slices run under raw_exec (same slice binary, no container)")
	}
	fmt.Fprintf(os.Stderr, "dev: starting PostgreSQL, Consul and Nomad under %s ...\n", dir)
	t0 := time.Now()
	stack, err := devenv.Start(ctx, devenv.Options{
		Dir: dir, ConsulHTTPPort: 8500, NomadHTTPPort: 4646,
		SkipPostgres: cfg.DatabaseURL != "", Docker: docker, NodeName: "slicehub-dev", Logger: log,
		// Slices on a bridge of their own behind a firewall (jobs/README.md):
		// they reach their database, the bootstrap endpoint, DNS and the
		// internet, nothing else of this machine.
		SliceNetwork: docker && cfg.DatabaseURL == "",
	})
	if err != nil {
		return err
	}
	defer func() {
		fmt.Fprintln(os.Stderr, "dev: stopping the agents and PostgreSQL ...")
		if err := stack.Stop(); err != nil {
			log.Error("stopping the stack", "err", err)
		}
	}()
	if cfg.DumpDir == "" {
		cfg.DumpDir = filepath.Join(dir, "dumps")
	}
	if cfg.DatabaseURL == "" {
		if cfg.DatabaseURL, err = stack.Postgres.EnsureDatabase(ctx, "slicehub"); err != nil {
			return err
		}
	}
	cfg.ConsulAddr = stack.Consul.Addr
	cfg.NomadAddr = stack.Nomad.Addr
	if sn := stack.SliceNet; sn != nil {
		// The bootstrap-only listener on the bridge's address, at the
		// internal listener's port number; the firewall opens that port only.
		_, port, err := net.SplitHostPort(cfg.InternalAddr)
		if err != nil {
			return fmt.Errorf("-internal-addr: %w", err)
		}
		p, err := strconv.Atoi(port)
		if err != nil || p == 0 {
			return fmt.Errorf("-internal-addr needs a fixed port with slices on a bridge, got %q", cfg.InternalAddr)
		}
		if err := sn.AllowHostPort(ctx, p); err != nil {
			return err
		}
		cfg.SliceNetwork = sn.Name
		cfg.BootstrapAddr = net.JoinHostPort(sn.Gateway, port)
		cfg.SliceDBHost = stack.Postgres.SliceHost
	}

	payments := ""
	if cfg.Billing.StripeSecretKey == "" {
		// Billing on, against stripe-mock, with a simulated payment side
		// (devbilling.go).
		url, stopMock, err := startStripeMock(ctx)
		if err != nil {
			fmt.Fprintf(os.Stderr, "dev: billing stays off: %v\n", err)
		} else {
			defer stopMock()
			cfg.Billing.StripeSecretKey, cfg.Billing.StripeAPIURL = devStripeKey, url
			cfg.Billing.StripeWebhookSecret = devSecret()
			if cfg.Billing.Price == "" {
				cfg.Billing.Price = billing.DevPriceID
			}
			cfg.Billing.DevPayments = true
			payments = url
		}
	}
	cfg.StateDir = dir
	// The gateway holds the least it needs; the operator gets the
	// management tokens, in <dir>/env.
	cfg.ConsulToken, cfg.NomadToken = stack.ACL.ConsulGateway, stack.ACL.NomadGateway
	envPath, err := stack.WriteEnv(cfg.DatabaseURL)
	if err != nil {
		return err
	}

	m := &Main{Config: cfg, Log: log}
	if err := m.Run(ctx); err != nil {
		return err
	}
	defer m.Close()
	admin, err := ensureDevAdmin(ctx, dir, m.DB)
	if err != nil {
		fmt.Fprintf(os.Stderr, "dev: no development admin: %v\n", err)
	}
	fmt.Fprintf(os.Stderr, "dev: agents up in %s; waiting for a warm slice ...\n", time.Since(t0).Round(100*time.Millisecond))
	if err := waitWarm(ctx, m); err != nil {
		if ctx.Err() != nil {
			return nil // Ctrl-C while waiting
		}
		return err
	}
	port := m.PublicAddr[strings.LastIndex(m.PublicAddr, ":")+1:]
	site := "http://localhost:" + port
	fmt.Fprintf(os.Stderr, "\nSlicehub is running (ready in %s).\n  App         %s/signup, then %s/app/\n",
		time.Since(t0).Round(100*time.Millisecond), site, site)
	if admin.Email != "" {
		fmt.Fprintf(os.Stderr, "  Admin       %s/admin   login %s  password %s\n", site, admin.Email, admin.Password)
	}
	if payments != "" {
		fmt.Fprintf(os.Stderr, "  Billing     %s/billing  (stripe-mock at %s; payments simulated at %s/billing/dev)\n", site, payments, site)
	} else if cfg.Billing.StripeSecretKey != "" {
		fmt.Fprintf(os.Stderr, "  Billing     %s/billing  (Stripe at %s)\n", site, orStripe(cfg.Billing.StripeAPIURL))
	}
	fmt.Fprintf(os.Stderr, `  Gateway     http://localhost:%s
  Consul UI   http://%s/ui
  Nomad API   %s   (nomad job status %s)
  PostgreSQL  %s
  Slices      %s driver
ACLs are on. For the Consul UI, the nomad CLI and scripts, as an operator:
  source %s
Press Ctrl-C to stop everything; data stays in %s.
`, port, stack.Consul.Addr, stack.Nomad.Addr, slicehub.NomadJobID,
		redactURL(cfg.DatabaseURL), cfg.SliceDriver, relToWD(envPath), dir)
	<-ctx.Done()
	return nil
}

// waitWarm polls until the pool has a warm (or assigned, on a re-run) slice.
func waitWarm(ctx context.Context, m *Main) error {
	deadline := time.Now().Add(3 * time.Minute)
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		warm, err := m.DB.Slices(ctx, slicehub.StateWarm)
		if err == nil && len(warm) > 0 {
			return nil
		}
		if m.Config.MinWarm == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no warm slice after 3 minutes; see the logs above and `nomad job status %s`", slicehub.NomadJobID)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

func dockerRunning() bool {
	if _, err := exec.LookPath("docker"); err != nil {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return exec.CommandContext(ctx, "docker", "info").Run() == nil
}

// redactURL hides the password of a database URL for printing.
func redactURL(u string) string {
	at := strings.LastIndex(u, "@")
	scheme := strings.Index(u, "://")
	if at < 0 || scheme < 0 {
		return u
	}
	cred := u[scheme+3 : at]
	if i := strings.Index(cred, ":"); i >= 0 {
		cred = cred[:i] + ":***"
	}
	return u[:scheme+3] + cred + u[at:]
}

// relToWD shortens path to one relative to the working directory when it is
// under it (".slicehub/env"), for a line a person types.
func relToWD(path string) string {
	wd, err := os.Getwd()
	if err != nil {
		return path
	}
	if rel, err := filepath.Rel(wd, path); err == nil && !strings.HasPrefix(rel, "..") {
		return rel
	}
	return path
}
