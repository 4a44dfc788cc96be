// Package pages is the gateway's own HTML: sign up, log in and out,
// password reset (and its mail), "Your workspace" (the slice's progress and
// WhatsApp QR code, rendered on the server and followed over server-sent
// events), the friendly error page, the embedded stylesheet and script,
// and, when configured, the shared SPA under its prefix.
//
// It signs people in through package accounts and asks the user's own
// slice through a client the gateway gives it (the proxy's route, token
// and pool); it never proxies anything itself.
package pages

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/slicehub/slicehub"
	"github.com/slicehub/slicehub/gateway/accounts"
	"github.com/slicehub/slicehub/gateway/wire"
	"github.com/slicehub/slicehub/sliceclient"
)

// ProgressSource reports how far a user's slice has come while it starts
// (package postgres knows the database and dispatch stages; the scheduler
// can add what Nomad and Consul know). KindNotFound when the user has no
// slice.
type ProgressSource interface {
	SliceProgress(ctx context.Context, userID int64) (slicehub.SliceProgress, error)
}

// PairingGate admits users to a QR code a few at a time per host
// (scheduler.Scheduler.Pairing): the workspace asks it at every look at a
// workspace whose slice shows a QR code or has just linked.
type PairingGate interface {
	Pairing(ctx context.Context, sliceID int64, waState string, importing bool) (slicehub.Permit, error)
}

// ProgressFunc adapts a function, such as scheduler.Scheduler.Progress, to
// ProgressSource.
type ProgressFunc func(ctx context.Context, userID int64) (slicehub.SliceProgress, error)

// SliceProgress calls f.
func (f ProgressFunc) SliceProgress(ctx context.Context, userID int64) (slicehub.SliceProgress, error) {
	return f(ctx, userID)
}

// Routes is the table of healthy slice addresses (package consul).
type Routes interface {
	Lookup(sliceID int64) (slicehub.Route, bool)
}

// Config is the pages' part of gateway.Config, defaults applied.
type Config struct {
	CookieSecure       bool
	AuthBodyLimit      int
	BackendTimeout     time.Duration
	ResetTokenTTL      time.Duration
	WorkspacePoll      time.Duration
	WorkspaceMaxStream time.Duration
	QRCodesPerRound    int
	PublicURL          string
	SPAPrefix          string
	SPADir             string
	SPAFiles           map[string][]byte
	BillingEnabled     bool
	StandinScan        bool
	ResetPerIP         accounts.Rate
	ResetPerAccount    accounts.Rate
	Now                func() time.Time
}

// Deps are what the pages ask of the rest of the gateway.
type Deps struct {
	Accounts *accounts.Service
	// Store is the accounts' store: the reset tokens.
	Store    accounts.Store
	Routes   Routes
	Progress ProgressSource // nil: the stages are not shown
	// Pairing gates QR codes per host (admission control); nil: every
	// code is shown.
	Pairing PairingGate
	Mailer  Mailer
	// Throttle, when set, shares the reset budgets between replicas.
	Throttle accounts.Throttle
	Origins  *wire.Origins
	Trusted  wire.TrustedProxies
	// SliceClient asks sess's own slice as the proxy would (its route,
	// token and pool), or says why it cannot now.
	SliceClient func(sess *accounts.Session) (sliceclient.Client, sliceclient.Slice, error)
	// Invalidate forgets what this replica cached about a user.
	Invalidate func(userID int64)
	// Stop ends every workspace event stream (the gateway shuts down).
	Stop <-chan struct{}
}

// Service is the pages of one gateway replica.
type Service struct {
	cfg     Config
	deps    deps
	acc     *accounts.Service
	log     *slog.Logger
	authLog *slog.Logger
	now     func() time.Time
	origins *wire.Origins
	trusted wire.TrustedProxies

	pages    *pages
	spa      *spa
	streams  streamCounts // open workspace event streams per user
	mailer   Mailer
	mailSem  chan struct{} // bounds reset mails in flight
	mailWG   sync.WaitGroup
	progress ProgressSource
	pairing  PairingGate

	resetIP      *accounts.Limiter
	resetAccount *accounts.Limiter

	sliceClient func(sess *accounts.Session) (sliceclient.Client, sliceclient.Slice, error)
	invalidate  func(userID int64)
	stop        <-chan struct{}
}

// deps keeps the names the handlers use.
type deps struct {
	Accounts accounts.Store
	Routes   Routes
}

// New builds the pages; log is the gateway's, authLog the accounts'.
func New(cfg Config, d Deps, log, authLog *slog.Logger) *Service {
	s := &Service{cfg: cfg, deps: deps{Accounts: d.Store, Routes: d.Routes}, acc: d.Accounts, log: log, authLog: authLog,
		now: cfg.Now, origins: d.Origins, trusted: d.Trusted, progress: d.Progress, pairing: d.Pairing, mailer: d.Mailer,
		sliceClient: d.SliceClient, invalidate: d.Invalidate, stop: d.Stop}
	s.pages = newPages()
	if s.mailer == nil {
		s.mailer = LogMailer{Logger: log}
	}
	s.mailSem = make(chan struct{}, 16)
	switch {
	case cfg.SPADir != "":
		s.spa = newSPA(cfg.SPADir, log)
	case cfg.SPAFiles != nil:
		s.spa = &spa{log: log, files: newSPAAssets(cfg.SPAFiles)}
	}
	s.resetIP = accounts.NewLimiter(cfg.ResetPerIP, s.now)
	s.resetAccount = accounts.NewLimiter(cfg.ResetPerAccount, s.now)
	if d.Throttle != nil {
		s.resetIP.Share("reset_ip", d.Throttle, cfg.BackendTimeout, authLog)
		s.resetAccount.Share("reset_account", d.Throttle, cfg.BackendTimeout, authLog)
	}
	return s
}

// Routes serves the pages on app.
func (s *Service) Routes(app fiber.Router) { s.pageRoutes(app) }

// HasSPA says whether the SPA is served.
func (s *Service) HasSPA() bool { return s.spa != nil }

// Limiters are the reset throttles, for the gateway's janitor to sweep.
func (s *Service) Limiters() []*accounts.Limiter {
	return []*accounts.Limiter{s.resetIP, s.resetAccount}
}

// Wait waits for the reset mails in flight.
func (s *Service) Wait() { s.mailWG.Wait() }

// PageError answers a page request with a friendly HTML error page: the
// HTML twin of the JSON error (package wire).
func (s *Service) PageError(c *fiber.Ctx, err error) error { return s.pageError(c, err) }

// CSRFToken and VerifyCSRF are the accounts'.
func (s *Service) CSRFToken(c *fiber.Ctx) string { return s.acc.CSRFToken(c) }
func (s *Service) VerifyCSRF(c *fiber.Ctx) error { return s.acc.VerifyCSRF(c) }
