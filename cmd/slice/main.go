// Command slice is the reference slice runtime: one per tenant, dispatched by
// Nomad as a child of the parameterized job "slice". See package slice and
// jobs/README.md for the contract it implements.
//
// Configuration comes from the environment (slice.ConfigFromEnv). SIGTERM,
// which Nomad sends on stop, and SIGINT start a graceful shutdown; the
// process then exits 0. Any failure exits 1, so that Nomad restarts it: a
// batch task that exits 0 is considered complete and stays dead.
//
// Two subcommands serve the operator rather than the slice:
//
//	slice seccomp-profile DOCKER_DEFAULT.json   print the seccomp profile that lets Chromium's sandbox run (ops/image.sh)
//	slice standin [-addr 127.0.0.1:8090]        serve the stand-in WhatsApp page, to look at it by hand
//	slice farm [-consul-addr 127.0.0.1:8500]     serve every slice of `slicehub serve -slice-driver farm` (make load; package slice/farm)
//
// and one the image runs first (slice/Dockerfile):
//
//	slice entrypoint -- CMD...   as root: give the profile to the slice's own uid, drop to it, exec CMD
//	                             (under Nomad: run CMD with its output rotated into the allocation's log files)
//	slice reap-profile ROOT ID   delete retired slice ID's profile under ROOT (jobs/slice-reaper.nomad.hcl)
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	consulapi "github.com/hashicorp/consul/api"

	"github.com/slicehub/slicehub/slice"
	"github.com/slicehub/slicehub/slice/farm"
	"github.com/slicehub/slicehub/slice/standin"
)

func main() {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "seccomp-profile":
			os.Exit(seccompProfile(os.Args[2:]))
		case "standin":
			os.Exit(serveStandIn(os.Args[2:]))
		case "farm":
			os.Exit(serveFarm(os.Args[2:]))
		case "reap-profile":
			// jobs/slice-reaper.nomad.hcl: ROOT SLICE_ID.
			if len(os.Args) != 4 {
				fmt.Fprintln(os.Stderr, "usage: slice reap-profile PROFILES_ROOT SLICE_ID")
				os.Exit(2)
			}
			if err := slice.RemoveProfile(os.Args[2], os.Args[3]); err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(1)
			}
			fmt.Fprintf(os.Stderr, "profile of slice %s: gone from %s\n", os.Args[3], os.Args[2])
			os.Exit(0)
		case "entrypoint":
			// The image's first process (slice/Dockerfile): drops to the
			// slice's own uid and executes the rest of the command line.
			args := os.Args[2:]
			if len(args) > 0 && args[0] == "--" {
				args = args[1:]
			}
			// Under Nomad it stays, as the parent that copies the
			// slice's output into the allocation's log files, and exits
			// with the slice's status.
			code, err := slice.Entrypoint(os.Getenv, args)
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
			}
			os.Exit(code)
		}
	}
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

// seccompProfile prints Docker's default profile (read from the file named)
// extended for Chromium's sandbox.
func seccompProfile(args []string) int {
	if len(args) != 1 {
		fmt.Fprintln(os.Stderr, "usage: slice seccomp-profile DOCKER_DEFAULT_SECCOMP.json")
		return 2
	}
	in, err := os.ReadFile(args[0])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	out, err := slice.ChromiumSeccompProfile(in)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	_, err = os.Stdout.Write(out)
	if err != nil {
		return 1
	}
	return 0
}

// serveStandIn serves the stand-in page until interrupted.
func serveStandIn(args []string) int {
	fs := flag.NewFlagSet("standin", flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:8090", "listen address")
	codes := fs.Int("codes", 6, "QR codes per pairing attempt")
	refresh := fs.Duration("refresh", 20*time.Second, "how long each QR code is shown")
	chats := fs.Int("history-chats", 10, "chats in the seeded history")
	msgs := fs.Int("history-messages", 100, "messages in the seeded history")
	state := fs.String("state", "", "journal file that keeps the account across restarts (empty: in memory)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	srv := &http.Server{Addr: *addr, Handler: standin.New(standin.Options{Codes: *codes, Refresh: *refresh, Logger: logger,
		History: standin.History{Chats: *chats, Messages: *msgs}, StateFile: *state}), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	logger.Info("stand-in WhatsApp page", "url", "http://"+*addr+"/", "scan", "curl -X POST http://"+*addr+"/scan",
		"phone", `curl -d '{"from":"+15550001","name":"Ana","body":"hi"}' http://`+*addr+"/phone/messages")
	if err := srv.ListenAndServe(); err != nil && ctx.Err() == nil {
		logger.Error("serve", "err", err)
		return 1
	}
	return 0
}

// serveFarm runs the load test's slice farm until interrupted: every
// mock_driver slice allocation in Consul's catalog gets the real slice
// runtime, without Chromium, on the port Nomad reserved for it.
func serveFarm(args []string) int {
	fs := flag.NewFlagSet("farm", flag.ContinueOnError)
	consulAddr := fs.String("consul-addr", "127.0.0.1:8500", "Consul HTTP address")
	poolConns := fs.Int("pool-conns", 1, "database connections per slice")
	poolIdle := fs.Duration("pool-idle", 30*time.Second, "idle time after which a slice's connection is closed")
	sliceLevel := fs.String("slice-log-level", "warn", "log level of each slice (the farm logs at info)")
	dataDirs := fs.String("nomad-data-dirs", "", "comma-separated data directories of the Nomad clients, where each allocation's workload identity is")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(strings.ToUpper(*sliceLevel))); err != nil {
		fmt.Fprintln(os.Stderr, "-slice-log-level:", err)
		return 2
	}
	logger := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	ccfg := consulapi.DefaultConfig()
	ccfg.Address = *consulAddr
	client, err := consulapi.NewClient(ccfg)
	if err != nil {
		logger.Error("consul client", "component", "farm", "err", err)
		return 1
	}
	var dirs []string
	if *dataDirs != "" {
		dirs = strings.Split(*dataDirs, ",")
	}
	fm, err := farm.New(farm.Config{Consul: client, PoolConns: int32(*poolConns), PoolIdle: *poolIdle, Logger: logger,
		SliceLogLevel: level, NomadDataDirs: dirs})
	if err != nil {
		logger.Error("farm", "component", "farm", "err", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	logger.Info("slice farm following the Consul catalog", "component", "farm", "consul", *consulAddr)
	if err := fm.Run(ctx); err != nil {
		logger.Error("farm stopped", "component", "farm", "err", err)
		return 1
	}
	return 0
}
