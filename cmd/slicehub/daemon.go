package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/slicehub/slicehub"
	"github.com/slicehub/slicehub/billing"
	"github.com/slicehub/slicehub/consul"
	"github.com/slicehub/slicehub/gateway"
	"github.com/slicehub/slicehub/jobs"
	"github.com/slicehub/slicehub/nomad"
	"github.com/slicehub/slicehub/postgres"
	"github.com/slicehub/slicehub/scheduler"
	"github.com/slicehub/slicehub/web"
)

// Main is the gateway daemon: the Fiber gateway, the route table, and the
// scheduler (acting only while it holds the leader lock). A test starts it on
// port 0 with Run and stops it with Close.
type Main struct {
	Config Config
	Log    *slog.Logger

	Registry  *prometheus.Registry
	DB        *postgres.DB
	Routes    *consul.Routes
	Nomad     *nomad.Client
	Scheduler *scheduler.Scheduler
	Gateway   *gateway.Server
	Billing   *billing.Service // nil when billing is off

	// PublicAddr and InternalAddr are the bound addresses, known after Run.
	PublicAddr, InternalAddr string
	// BootstrapAddr is the bootstrap-only listener's (-bootstrap-addr).
	BootstrapAddr string

	cancel context.CancelFunc
	wg     sync.WaitGroup
	// closing is closed first thing in Close, so that long-lived streams
	// (the admin dashboard's) end before the gateway waits for its
	// requests to drain.
	closing   chan struct{}
	closeOnce sync.Once
}

// Run starts everything and returns once the gateway is listening. The
// background work goes on until Close.
func (m *Main) Run(ctx context.Context) (err error) {
	if m.Log == nil {
		m.Log = slog.Default()
	}
	c := m.Config
	if c.DatabaseURL == "" {
		return errors.New("no database: set -database-url or DATABASE_URL")
	}
	ctx, m.cancel = context.WithCancel(ctx)
	m.closing = make(chan struct{})
	defer func() {
		if err != nil {
			m.Close()
		}
	}()
	m.Registry = prometheus.NewRegistry()
	m.Registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	startCtx, cancelStart := context.WithTimeout(ctx, time.Minute)
	defer cancelStart()
	if m.DB, err = postgres.Open(startCtx, c.DatabaseURL, m.Log); err != nil {
		return err
	}
	if err = m.DB.Migrate(startCtx); err != nil {
		return err
	}
	if err = m.DB.LockDownPublicConnect(startCtx); err != nil {
		return err
	}
	if err = m.DB.SecureSliceDatabases(startCtx); err != nil {
		return err
	}

	consulClient, err := consul.NewClientWithToken(c.ConsulAddr, c.ConsulToken, m.Log)
	if err != nil {
		return fmt.Errorf("consul client: %w", err)
	}
	m.Routes = consul.NewRoutes(consulClient, slicehub.ConsulService, m.DB, m.Log)
	m.Registry.MustRegister(m.Routes.Rejected)
	m.goRun(func() { m.Routes.Run(ctx) })

	if m.Nomad, err = nomad.New(c.NomadAddr, m.Log); err != nil {
		return fmt.Errorf("nomad client: %w", err)
	}
	if c.NomadToken != "" {
		m.Nomad.API.SetSecretID(c.NomadToken)
	}

	// Listen before registering the job: the job carries the bootstrap URL,
	// which must name the port actually bound.
	publicLn, err := net.Listen("tcp", c.Addr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", c.Addr, err)
	}
	internalLn, err := net.Listen("tcp", c.InternalAddr)
	if err != nil {
		publicLn.Close()
		return fmt.Errorf("listen %s: %w", c.InternalAddr, err)
	}
	m.PublicAddr, m.InternalAddr = publicLn.Addr().String(), internalLn.Addr().String()
	bootstrapURL := c.BootstrapURL
	if bootstrapURL == "" {
		bootstrapURL = "http://" + m.InternalAddr
	}
	// Slices on a bridge reach the host on the bridge's address only, and
	// there get the bootstrap endpoint only (not /metrics or /readyz).
	var bootstrapLn net.Listener
	if c.BootstrapAddr != "" {
		if bootstrapLn, err = net.Listen("tcp", c.BootstrapAddr); err != nil {
			publicLn.Close()
			internalLn.Close()
			return fmt.Errorf("listen %s: %w", c.BootstrapAddr, err)
		}
		m.BootstrapAddr = bootstrapLn.Addr().String()
		if c.BootstrapURL == "" {
			bootstrapURL = "http://" + m.BootstrapAddr
		}
	}
	closeListeners := func() {
		publicLn.Close()
		internalLn.Close()
		if bootstrapLn != nil {
			bootstrapLn.Close()
		}
	}

	if err = m.registerSliceJob(startCtx, bootstrapURL); err != nil {
		closeListeners()
		return err
	}
	// Every slice's workload identity may read these: refuse to hand
	// tenants a secret somebody stored there.
	if paths, verr := m.Nomad.ReadableVariables(startCtx); verr != nil || len(paths) > 0 {
		publicLn.Close()
		internalLn.Close()
		if verr != nil {
			return fmt.Errorf("listing the Nomad variables slices can read: %w", verr)
		}
		return fmt.Errorf("nomad variables %v are readable by every slice (through its workload identity): move them elsewhere", paths)
	}

	m.Scheduler = scheduler.New(m.DB, m.Nomad, m.Routes, scheduler.Config{
		MinWarm: c.MinWarm, MaxSlices: c.MaxSlices, Interval: c.ReconcileInterval,
		SliceDBHost: c.SliceDBHost, Logger: m.Log, Metrics: scheduler.NewMetrics(m.Registry),
		WarmTTL: c.WarmTTL, DumpDir: c.DumpDir, DBRetention: c.DBRetention, Admission: c.Admission,
	})
	// The pool settings an admin changed outlive a restart: apply them
	// before the scheduler runs.
	m.applyPoolSettings(startCtx)
	m.goRun(func() { consul.Lead(ctx, consulClient, "slicehub/scheduler/leader", m.Log, m.Scheduler.Run) })
	m.startTelemetry(ctx, consulClient)

	gwCfg := gateway.Config{
		CookieSecure:    c.CookieSecure,
		NoEventLoop:     !c.EventLoop,
		TrustedProxies:  splitList(c.TrustedProxies),
		AllowedOrigins:  splitList(c.AllowedOrigins),
		SessionIdle:     c.SessionIdle,
		SessionAbsolute: c.SessionAbsolute,
		UploadTimeout:   c.UploadTimeout,
		PublicURL:       c.PublicURL,
		SPADir:          spaDir(c.SPADir),
		BillingEnabled:  c.Billing.StripeSecretKey != "",
		StandinScan:     c.WAStandin,
		Logger:          m.Log,
		Registry:        m.Registry,
	}
	if c.SPADir == "" {
		// The CRM app embedded in this binary (package web).
		if gwCfg.SPAFiles, err = web.Embedded(); err != nil {
			publicLn.Close()
			internalLn.Close()
			return err
		}
	}
	// Refuse to start with less protection than configured (a bad public
	// URL, an SPA directory without index.html) rather than run degraded.
	if err = gwCfg.Validate(); err != nil {
		closeListeners()
		return err
	}
	deps := gateway.Deps{Accounts: m.DB, Slices: m.Scheduler, Routes: m.Routes,
		// The workspace page's stages: PostgreSQL, Nomad and the route table.
		Progress: gateway.ProgressFunc(m.Scheduler.Progress),
		Pairing:  m.Scheduler,
		// Login, signup and reset budgets hold across the replicas.
		Throttle: m.DB}
	if c.SMTPAddr != "" {
		deps.Mailer = &gateway.SMTPMailer{Addr: c.SMTPAddr, From: c.SMTPFrom, Username: c.SMTPUser, Password: c.SMTPPassword}
	}
	m.Gateway = gateway.New(gwCfg, deps)
	m.Gateway.AddReadyCheck("postgres", func(ctx context.Context) error { return m.DB.Pool.Ping(ctx) })
	m.Gateway.AddReadyCheck("consul", func(context.Context) error {
		last, err := m.Routes.Status()
		if err != nil {
			return fmt.Errorf("route table stale since %s: %w", last.Format(time.RFC3339), err)
		}
		if last.IsZero() {
			return errors.New("route table not loaded yet")
		}
		return nil
	})
	m.Gateway.AddReadyCheck("nomad", func(ctx context.Context) error {
		_, err := m.Nomad.API.Status().Leader()
		return err
	})

	if m.Billing, err = m.startBilling(ctx, m.Gateway.Public(), m.Gateway.Admin(), m.Gateway, gateway.LocalsUserID); err != nil {
		return err
	}
	m.startAdmin()

	// Every replica drops its cached session -> slice entries when an
	// assignment changes anywhere; the leader also reconciles at once when
	// another replica created an on-demand slice.
	m.goRun(func() {
		m.DB.Listen(ctx, []string{"user_changed", "slice_changed", postgres.PoolSettingsChannel}, func(channel, payload string) {
			switch channel {
			case postgres.PoolSettingsChannel:
				// Another replica (or this one) changed them; after a lost
				// connection (empty payload) they may have changed too.
				m.applyPoolSettings(ctx)
			case "user_changed":
				if payload == "" {
					m.Gateway.InvalidateAll()
					return
				}
				if id, err := strconv.ParseInt(payload, 10, 64); err == nil {
					m.Gateway.Invalidate(id)
				}
			case "slice_changed":
				// A recorded allocation may have changed: the route table
				// routes only that one (a lost connection: any may have).
				m.Routes.Refresh()
				// The sessions routed to the slice, its gateway token and its
				// WebSockets are re-checked on every replica.
				if id, err := strconv.ParseInt(payload, 10, 64); err == nil {
					m.Gateway.InvalidateSlice(id)
				}
				m.Scheduler.Kick()
			}
		})
	})

	m.goRun(func() {
		if err := m.Gateway.Serve(publicLn); err != nil && ctx.Err() == nil {
			m.Log.Error("public listener stopped", "err", err)
		}
	})
	m.goRun(func() {
		if err := m.Gateway.ServeInternal(internalLn); err != nil && ctx.Err() == nil {
			m.Log.Error("internal listener stopped", "err", err)
		}
	})
	if bootstrapLn != nil {
		m.goRun(func() {
			if err := m.Gateway.ServeBootstrap(bootstrapLn); err != nil && ctx.Err() == nil {
				m.Log.Error("bootstrap listener stopped", "err", err)
			}
		})
	}
	m.Log.Info("gateway listening", "public", m.PublicAddr, "internal", m.InternalAddr,
		"slice_driver", c.SliceDriver, "min_warm", c.MinWarm, "max_slices", c.MaxSlices)
	return nil
}

// registerSliceJob registers the parameterized slice job for the chosen driver.
func (m *Main) registerSliceJob(ctx context.Context, bootstrapURL string) error {
	c := m.Config
	vars := map[string]string{
		"bootstrap_url": bootstrapURL,
		"datacenters":   c.Datacenter,
		"memory_mb":     strconv.Itoa(c.SliceMemoryMB),
		"memory_max_mb": strconv.Itoa(c.SliceMemoryMaxMB),
		// The WhatsApp check in the Consul UI turns critical when the
		// alert would fire.
		"whatsapp_down_after": c.Telemetry.WhatsAppDown.String(),
	}
	hcl := jobs.SliceDocker
	switch c.SliceDriver {
	case "docker":
		image := c.SliceImage
		if image == "" {
			b, err := os.ReadFile(filepath.Join(repoRoot(), "bin", "slice-image"))
			if err != nil {
				return fmt.Errorf("no slice image: run `make image` or set -slice-image (%w)", err)
			}
			image = strings.TrimSpace(string(b))
		}
		vars["image"] = image
		seccomp := c.SliceSeccomp
		if seccomp == "" {
			seccomp = filepath.Join(repoRoot(), "bin", "chromium-seccomp.json")
		}
		// Without the profile Chromium's sandbox cannot start and slices
		// report failed; say so now rather than after the first dispatch.
		if _, err := os.Stat(seccomp); err != nil {
			return fmt.Errorf("no seccomp profile for Chromium's sandbox at %s: run `make image` or set -slice-seccomp-profile", seccomp)
		}
		vars["seccomp_profile"] = seccomp
		vars["network"] = c.SliceNetwork
		if c.SliceNetwork == "host" {
			m.Log.Warn("slices run on the host's network: a compromised slice reaches every agent and service of its node; set -slice-network (jobs/README.md)")
		}
		profiles, err := m.profilesDir(ctx)
		if err != nil {
			return err
		}
		vars["profiles_dir"] = profiles
		vars["cpu_mhz"] = strconv.Itoa(c.SliceCPUMHz)
	case "raw_exec":
		hcl = jobs.SliceRawExec
		bin := c.SliceBinary
		if bin == "" {
			bin = filepath.Join(repoRoot(), "bin", "slice")
		}
		abs, err := filepath.Abs(bin)
		if err != nil {
			return err
		}
		if _, err := os.Stat(abs); err != nil {
			return fmt.Errorf("no slice binary at %s: run `make build` or set -slice-binary", abs)
		}
		vars["slice_binary"] = abs
		vars["cpu_mhz"] = strconv.Itoa(c.SliceCPUMHz)
	case "farm":
		// Load tests only: the children run nothing, and a `slice farm`
		// process serves them (jobs/slice-farm.nomad.hcl).
		hcl = jobs.SliceFarm
	}
	if c.WAURL != "" {
		vars["wa_url"] = c.WAURL
	}
	if c.WAStandin {
		vars["wa_standin"] = "true"
	}
	if c.WAStandinWeight != "" {
		vars["wa_standin_weight"] = c.WAStandinWeight
	}
	if err := m.Nomad.RegisterJob(ctx, hcl, vars); err != nil {
		return fmt.Errorf("register the slice job: %w", err)
	}
	if c.SliceDriver == "docker" {
		// Deletes a retired slice's profile on every node (scheduler
		// retention dispatches it).
		if err := m.Nomad.RegisterReaper(ctx, jobs.SliceReaper, map[string]string{
			"image": vars["image"], "profiles_dir": vars["profiles_dir"], "datacenters": c.Datacenter,
		}); err != nil {
			return fmt.Errorf("register the profile reaper: %w", err)
		}
	}
	return nil
}

// spaDir is the -spa-dir the gateway gets: "off" and "" (the embedded
// build) are no directory.
func spaDir(v string) string {
	if v == "off" {
		return ""
	}
	return v
}

// profilesDir is -slice-profiles-dir, else the path of the Nomad clients'
// host volume slice-profiles (the same on every client: the job names one
// path).
func (m *Main) profilesDir(ctx context.Context) (string, error) {
	if m.Config.SliceProfilesDir != "" {
		return m.Config.SliceProfilesDir, nil
	}
	path, err := m.Nomad.HostVolumePath(ctx, "slice-profiles")
	if err != nil {
		return "", fmt.Errorf("finding the profiles directory (or set -slice-profiles-dir): %w", err)
	}
	return path, nil
}

func (m *Main) goRun(fn func()) {
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		fn()
	}()
}

// Close stops the gateway (draining connections), the scheduler and the
// watchers, then closes the database.
func (m *Main) Close() error {
	m.closeOnce.Do(func() {
		if m.closing != nil {
			close(m.closing)
		}
	})
	if m.Gateway != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_ = m.Gateway.Shutdown(ctx)
		cancel()
	}
	if m.cancel != nil {
		m.cancel()
	}
	m.wg.Wait()
	if m.DB != nil {
		m.DB.Close()
	}
	return nil
}

// repoRoot finds the checkout this binary runs from (for bin/ defaults):
// the working directory or one of its parents holding go.mod.
func repoRoot() string {
	dir, err := os.Getwd()
	if err != nil {
		return "."
	}
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d
		}
		if filepath.Dir(d) == d {
			return dir
		}
	}
}

// applyPoolSettings applies the pool settings stored by the admin API
// (pool_settings) to this replica's scheduler. A stored target above this
// replica's -max-slices is refused by the scheduler and logged; the
// configured one then holds.
func (m *Main) applyPoolSettings(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	ps, err := m.DB.PoolSettings(ctx)
	if err != nil {
		m.Log.Warn("pool settings not loaded; keeping the current ones", "err", err)
		return
	}
	if ps.MinWarm != nil && *ps.MinWarm != m.Scheduler.MinWarm() {
		if err := m.Scheduler.SetMinWarm(*ps.MinWarm); err != nil {
			m.Log.Warn("stored warm pool target refused", "min_warm", *ps.MinWarm, "err", err)
		}
	}
	if ps.Paused != m.Scheduler.Paused() {
		m.Scheduler.SetPaused(ps.Paused)
		m.Log.Info("warm pool refill paused state applied from the stored settings", "paused", ps.Paused)
	}
}
