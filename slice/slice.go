package slice

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/slicehub/slicehub"
	"github.com/slicehub/slicehub/slice/standin"
)

// Slice is one running slice: the HTTP server, the socket.io server, the
// credentials and the database pool. New validates, Run does the work.
type Slice struct {
	cfg     Config
	log     *slog.Logger
	state   *StateHolder
	qr      *QRHolder
	handler *Handler
	sockets *Sockets
	standin *standin.Server // nil unless Config.StandIn
	adapter *Adapter
	crm     atomic.Pointer[CRM] // set once the database is migrated

	sup  atomic.Pointer[Supervisor]
	gov  atomic.Pointer[Governor] // nil unless Config.Governor.Soft
	snap atomic.Pointer[snapshotter]
}

// New prepares a slice without doing any I/O.
func New(cfg Config) (*Slice, error) {
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("slice.new: %w", err)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.ShutdownTimeout <= 0 {
		cfg.ShutdownTimeout = 10 * time.Second
	}
	if cfg.State == nil {
		cfg.State = NewStateHolder()
	}
	if cfg.QR == nil {
		cfg.QR = NewQRHolder()
	}
	log := cfg.Logger.With("slice_id", cfg.SliceID)
	s := &Slice{cfg: cfg, log: log, state: cfg.State, qr: cfg.QR}
	s.handler = NewHandler(cfg.SliceID, s.state, log)
	s.handler.SetQR(s.qr)
	s.sockets = NewSockets(cfg.SliceID, s.state, log)
	s.sockets.SetQR(s.qr)
	s.handler.SetSockets(s.sockets.Handler())
	s.handler.SetNotify(s.sockets.Emit)
	src, err := LoadAdapterSource(cfg.AdapterFile)
	if err != nil {
		return nil, err
	}
	s.adapter = NewAdapter(src, log)
	s.handler.SetAdapterStatus(s.adapter.Status)
	if cfg.StandIn {
		// The stand-in's account outlives the slice's process, as
		// WhatsApp's servers do: its journal sits in the profile directory,
		// which survives the container.
		var stateFile string
		if cfg.ProfileDir != "" {
			stateFile = filepath.Join(cfg.ProfileDir, "standin-account.jsonl")
			_ = os.MkdirAll(cfg.ProfileDir, 0o700)
		}
		s.standin = standin.New(standin.Options{Logger: log, History: cfg.StandInHistory, StateFile: stateFile, Weight: cfg.StandInWeight})
		s.handler.SetDevScan(func() error { return s.standin.Scan("") })
		s.handler.SetDevPhone(s.standin)
	}
	return s, nil
}

// State is the WhatsApp state holder the Chromium supervisor drives.
func (s *Slice) State() *StateHolder { return s.state }

// QR is the QR code holder the Chromium supervisor drives.
func (s *Slice) QR() *QRHolder { return s.qr }

// StandIn is the stand-in WhatsApp (nil unless Config.StandIn): tests play
// the phone through it.
func (s *Slice) StandIn() *standin.Server { return s.standin }

// Adapter is the WhatsApp adapter.
func (s *Slice) Adapter() *Adapter { return s.adapter }

// BrowserPID is the pid of the running Chromium, 0 when none runs.
func (s *Slice) BrowserPID() int {
	if sup := s.sup.Load(); sup != nil {
		return sup.BrowserPID()
	}
	return 0
}

// BrowserLaunches counts the Chromium processes started so far.
func (s *Slice) BrowserLaunches() int {
	if sup := s.sup.Load(); sup != nil {
		return sup.Launches()
	}
	return 0
}

// SnapshotStats reports the profile snapshots taken and restored.
func (s *Slice) SnapshotStats() SnapshotStats {
	if sn := s.snap.Load(); sn != nil {
		return sn.Stats()
	}
	return SnapshotStats{}
}

// Handler is the slice's HTTP handler (for tests that use httptest).
func (s *Slice) Handler() *Handler { return s.handler }

// Run serves until ctx ends, then shuts down gracefully and returns nil. Any
// other return is an error: the job is a batch job, and a batch task that
// exits 0 is "complete" and never restarted, so the slice must not exit 0
// unless it was told to stop.
//
// The port is bound first and /api/health answers 503 "starting" while the
// credentials are fetched and the database is migrated: Consul then shows
// the slice as starting rather than as a refused connection.
//
// Run may be called once per Slice.
func (s *Slice) Run(ctx context.Context) error {
	const op = "slice.run"
	ln := s.cfg.Listener
	if ln == nil {
		var err error
		ln, err = net.Listen("tcp", s.cfg.Addr)
		if err != nil {
			return fmt.Errorf("%s: %w", op, err)
		}
	}
	srv := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 10 * time.Second,
		// No WriteTimeout: socket.io long-polls hold a response open for
		// the ping interval (25 s).
		IdleTimeout:    2 * time.Minute,
		MaxHeaderBytes: 64 << 10,
		ErrorLog:       slog.NewLogLogger(s.log.With("component", "http").Handler(), slog.LevelWarn),
	}
	// Shutdown waits 5 s for connections that were opened but never carried
	// a request (HTTP clients, the gateway's included, dial spare ones).
	// Nothing is lost by closing them at once, once the listener is closed.
	var fresh freshConns
	srv.ConnState = fresh.track
	srv.RegisterOnShutdown(fresh.closeAll)
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	s.log.Info("listening", "component", "slice", "addr", ln.Addr().String())

	// whatsapp ends the browser; done closes once it is closed and the
	// final snapshot is saved.
	whatsapp, stopWhatsApp := context.WithCancel(ctx)
	defer stopWhatsApp()
	whatsappDone := closedChan()
	pool, err := s.start(ctx)
	if err == nil {
		defer pool.Close()
		s.log.Info("ready", "component", "slice")
		s.checkProfileDir()
		whatsappDone = s.runWhatsApp(whatsapp, pool)
		select {
		case <-ctx.Done():
		case err = <-serveErr:
			err = fmt.Errorf("%s: serve: %w", op, err)
		}
	}

	s.log.Info("shutting down", "component", "slice")
	// Chromium's close and the HTTP drain run side by side: together they
	// must fit in the job's kill_timeout.
	stopWhatsApp()
	s.sockets.Close()
	shutCtx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	defer cancel()
	if serr := srv.Shutdown(shutCtx); serr != nil {
		s.log.Warn("graceful shutdown incomplete", "component", "slice", "err", serr)
		_ = srv.Close()
	}
	<-whatsappDone
	if ctx.Err() != nil {
		return nil
	}
	return err
}

func closedChan() <-chan struct{} {
	ch := make(chan struct{})
	close(ch)
	return ch
}

// finalSnapshotTimeout bounds the snapshot taken after Chromium closed; with
// ChromiumConfig.CloseTimeout it must fit in the job's kill_timeout.
const finalSnapshotTimeout = 5 * time.Second

// runWhatsApp restores the profile if needed, then supervises Chromium and
// snapshots the profile until ctx ends. The returned channel closes when
// Chromium is closed and the final snapshot is saved.
func (s *Slice) runWhatsApp(ctx context.Context, pool *pgxpool.Pool) <-chan struct{} {
	if !s.cfg.runsChromium() {
		s.log.Info("no Chromium: the slice has no profile directory or SLICE_CHROMIUM=off", "component", "chromium")
		return closedChan()
	}
	log := s.log.With("component", "chromium")
	wa, chromium := s.cfg.WhatsApp, s.cfg.Chromium
	var standinSrv *http.Server
	if s.standin != nil {
		var err error
		if wa, chromium, standinSrv, err = s.serveStandIn(wa, chromium); err != nil {
			log.Error("cannot serve the stand-in page", "err", err)
			_ = s.state.Set(slicehub.WAFailed)
			return closedChan()
		}
	}
	profile := Profile{Dir: s.cfg.ProfileDir, Essentials: DefaultEssentials}
	sup := NewSupervisor(chromium, wa, profile, s.state, s.qr, s.log)
	sup.SetHooks(s.adapter)
	s.sup.Store(sup)
	syncer := NewSyncer(s.crm.Load(), s.adapter, s.state, s.sockets.Emit, s.log)
	s.handler.SetSyncer(syncer)
	var snap *snapshotter
	if !s.cfg.Snapshot.Disabled {
		snap = newSnapshotter(profile, NewSnapshotStore(pool), s.state, s.cfg.Snapshot, s.cfg.AllocID, s.log)
		s.snap.Store(snap)
	}
	if chromium.NoSandbox {
		log.Warn("Chromium runs WITHOUT its sandbox (SLICE_CHROMIUM_SANDBOX=off); acceptable only for raw_exec and tests")
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if standinSrv != nil {
			defer s.standin.Close()
			defer standinSrv.Close()
		}
		if snap != nil {
			// A failed restore costs the user a QR code, not the slice: go on
			// with whatever the local profile holds.
			rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			if err := snap.restore(rctx); err != nil && ctx.Err() == nil {
				log.Error("cannot restore the profile snapshot; starting from the local profile", "err", err)
			}
			cancel()
		}
		syncDone := make(chan struct{})
		go func() { defer close(syncDone); syncer.Run(ctx) }()
		defer func() { <-syncDone }()
		snapCtx, stopSnap := context.WithCancel(context.Background())
		snapDone := closedChan()
		if snap != nil {
			ch := make(chan struct{})
			snapDone = ch
			go func() { defer close(ch); snap.run(snapCtx) }()
		}
		stopGov := s.startGovernor(sup, syncer)
		_ = sup.Run(ctx) // logs and sets "failed" itself
		stopGov()
		stopSnap()
		<-snapDone
		if snap != nil && ctx.Err() != nil {
			fctx, cancel := context.WithTimeout(context.Background(), finalSnapshotTimeout)
			snap.final(fctx)
			cancel()
		}
	}()
	return done
}

// standInHost is the stand-in page's fixed host name. Chromium maps it to
// the stand-in's loopback port with --host-resolver-rules, so that the
// page's origin, where the browser keeps the login, stays the same whatever
// port the next start gets.
const standInHost = "whatsapp.standin.invalid"

// serveStandIn starts the stand-in page on a loopback port and returns the
// configuration that points Chromium at it.
func (s *Slice) serveStandIn(wa WhatsAppConfig, c ChromiumConfig) (WhatsAppConfig, ChromiumConfig, *http.Server, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return wa, c, nil, err
	}
	srv := &http.Server{Handler: s.standin, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	wa.URL = "http://" + standInHost + "/"
	c.HostResolverRules = fmt.Sprintf("MAP %s %s", standInHost, ln.Addr().String())
	s.log.Info("serving the stand-in WhatsApp page; POST /api/dev/scan links it", "component", "standin", "addr", ln.Addr().String())
	return wa, c, srv, nil
}

// start obtains the credentials, connects and migrates, retrying what may
// just be early (the gateway or PostgreSQL not up yet) until ctx ends.
func (s *Slice) start(ctx context.Context) (*pgxpool.Pool, error) {
	const op = "slice.start"
	log := s.log.With("component", "slice")
	creds := slicehub.SliceCredentials{DatabaseURL: s.cfg.DatabaseURL, GatewayToken: s.cfg.GatewayToken}
	if s.cfg.manualCredentials() {
		log.Info("using DATABASE_URL and SLICEHUB_GATEWAY_TOKEN from the environment")
	} else {
		var err error
		creds, err = newBootstrapper(&s.cfg, s.log).Credentials(ctx)
		if err != nil {
			return nil, err
		}
	}

	pool, err := openPool(creds.DatabaseURL, s.cfg.SliceID, s.cfg.Pool)
	if err != nil {
		// A URL that does not parse will not parse on retry either.
		return nil, err
	}
	crm := NewCRM(pool)
	for attempt := 0; ; attempt++ {
		err := crm.Migrate(ctx)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			pool.Close()
			return nil, fmt.Errorf("%s: %w", op, ctx.Err())
		}
		log.Warn("database not ready; retrying", "attempt", attempt+1, "err", err)
		if err := s.cfg.Backoff.wait(ctx, attempt); err != nil {
			pool.Close()
			return nil, fmt.Errorf("%s: %w", op, err)
		}
	}
	s.crm.Store(crm)
	s.handler.SetReady(creds.GatewayToken, crm)
	return pool, nil
}

// checkProfileDir makes sure the Chromium profile directory exists and is
// writable now, so that a host volume with the wrong owner shows up in the
// logs at start rather than when Chromium first fails.
func (s *Slice) checkProfileDir() {
	dir := s.cfg.ProfileDir
	if dir == "" {
		return
	}
	log := s.log.With("component", "profile", "dir", dir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		log.Error("cannot create the Chromium profile directory", "err", err)
		return
	}
	f, err := os.CreateTemp(dir, ".probe-*")
	if err != nil {
		log.Error("the Chromium profile directory is not writable", "err", err)
		return
	}
	f.Close()
	if err := os.Remove(f.Name()); err != nil && !errors.Is(err, os.ErrNotExist) {
		log.Warn("cannot clean up the probe file", "err", err)
	}
	log.Info("profile directory ready")
}

// freshConns tracks the connections in http.StateNew.
type freshConns struct {
	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

func (f *freshConns) track(c net.Conn, st http.ConnState) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if st == http.StateNew {
		if f.conns == nil {
			f.conns = map[net.Conn]struct{}{}
		}
		f.conns[c] = struct{}{}
		return
	}
	delete(f.conns, c)
}

// closeAll runs from Shutdown, after the listeners are closed.
func (f *freshConns) closeAll() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for c := range f.conns {
		_ = c.Close()
	}
	clear(f.conns)
}
