// Package gateway is Slicehub's only door to the outside. This package is
// the composition: the Server that wires the parts, the routing table, the
// proxy's handlers that carry each browser's HTTP, long-polling and
// WebSocket traffic to that user's own slice under /api and /socket.io
// (front.go, proxy.go, websocket.go, split.go, loophost.go), /healthz,
// /readyz and /metrics, and, on a separate internal listener that nginx
// never exposes, the endpoint where a starting slice fetches its
// credentials. The parts, each a package of its own:
//
//   - accounts: sign up, log in and out, server-side sessions, the login
//     throttles, CSRF, admin API keys and the /admin guard;
//   - pages: the gateway's own HTML (sign up, log in, password reset,
//     "Your workspace" with the slice's progress and WhatsApp QR code over
//     server-sent events) and, when configured, the shared SPA;
//   - loop: the event loop that serves the plain proxy path without a
//     goroutine per connection, behind a small Host interface (loophost.go
//     is this package's side of it);
//   - proxy: the slice side of the proxy: pools to slice addresses, the
//     gateway-token cache, header stripping, and the errors of a slice that
//     does not answer;
//   - wire: the one JSON error shape, the client address behind trusted
//     proxies and the Origin check, which every part shares.
//
// Routing is by session only: the session cookie names a user, the user has
// at most one slice, and the route table says where that slice answers.
// Nothing in a path or a header can point a request at another slice.
//
// The package talks to the rest of the system through three narrow
// interfaces (Accounts, Slices, Routes), implemented by the postgres,
// scheduler and consul packages and by in-memory fakes in the tests.
package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/alexedwards/argon2id"
	"github.com/gofiber/fiber/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"

	"github.com/slicehub/slicehub"
	"github.com/slicehub/slicehub/gateway/accounts"
	"github.com/slicehub/slicehub/gateway/loop"
	"github.com/slicehub/slicehub/gateway/pages"
	"github.com/slicehub/slicehub/gateway/proxy"
	"github.com/slicehub/slicehub/gateway/wire"
	"github.com/slicehub/slicehub/password"
)

// Accounts stores users and server-side sessions (package postgres).
type Accounts = accounts.Store

// ProgressSource reports how far a user's slice has come while it starts
// (pages.ProgressSource).
type ProgressSource = pages.ProgressSource

// ProgressFunc adapts a function, such as scheduler.Scheduler.Progress, to
// ProgressSource.
type ProgressFunc = pages.ProgressFunc

// PairingGate admits users to a QR code a few at a time per host
// (pages.PairingGate).
type PairingGate = pages.PairingGate

// Slices binds users to slices and hands slices their secrets (package scheduler).
type Slices interface {
	// Claim binds a warm slice to the user, or queues an on-demand one.
	Claim(ctx context.Context, userID int64) (slicehub.Slice, error)
	// SliceForUser returns the user's slice, or KindNotFound.
	SliceForUser(ctx context.Context, userID int64) (slicehub.Slice, error)
	GatewayToken(ctx context.Context, sliceID int64) (string, error)
	Bootstrap(ctx context.Context, req slicehub.BootstrapRequest) (slicehub.SliceCredentials, error)
}

// Routes is the table of healthy slice addresses (package consul).
type Routes interface {
	Lookup(sliceID int64) (slicehub.Route, bool)
}

// Throttles are the login and signup budgets. A zero Rate disables one.
type Throttles struct {
	LoginPerIP       Rate
	LoginPerAccount  Rate // spent by failed logins only
	SignupPerIP      Rate
	SignupPerAccount Rate
	// BadSessionPerIP is spent by session cookies the database does not
	// know, so that guessing tokens cannot become a flood of queries.
	BadSessionPerIP Rate
	// BootstrapPerIP bounds credential requests per address: each costs a
	// Nomad allocation read. Every slice of a host asks from the host's
	// address, so the budget must carry a whole pool refill at once: the
	// load run measured a burst of 30, then one a second, as what limited
	// signups first (500 slices took 8 minutes to come up).
	BootstrapPerIP Rate
	// ResetPerIP and ResetPerAccount bound password reset mails: per
	// client, and per address asked for (whether or not it has an account,
	// so the throttle tells nothing about which emails exist).
	ResetPerIP      Rate
	ResetPerAccount Rate
}

// Config configures a Server. Zero fields take the defaults listed.
type Config struct {
	Addr         string // public listener, behind nginx (":8080")
	InternalAddr string // slices only: bootstrap; never routed by nginx (":8081")
	CookieSecure bool   // Secure flag on cookies: true in production (TLS at nginx)

	SessionIdle     time.Duration // a session unused this long ends (7 days)
	SessionAbsolute time.Duration // a session ends this long after login (30 days)
	SessionCacheTTL time.Duration // how long a replica trusts a cached session (10 s)
	TokenCacheTTL   time.Duration // how long a slice's gateway token is cached (5 min)

	// TrustedProxies are the IPs or CIDRs (nginx) whose X-Forwarded-* are
	// believed. Empty: none, the TCP peer is the client.
	TrustedProxies []string
	// AllowedOrigins are the origins ("https://app.example.com") accepted
	// besides the gateway's own host.
	AllowedOrigins []string

	BodyLimit int // proxied request body (32 MiB)
	// BufferedBodyLimit: request bodies up to this size are read whole
	// before a handler runs; larger ones (and chunked ones) stream, so an
	// upload goes to the slice as it arrives instead of waiting in the
	// gateway's memory (64 KiB).
	BufferedBodyLimit int
	AuthBodyLimit     int // signup and login JSON (8 KiB)
	InternalBodyLimit int // bootstrap JSON (4 KiB)
	MaxHeaderBytes    int // request and slice response headers (16 KiB)

	ReadTimeout time.Duration // reading a whole request from a client (30 s)
	// UploadTimeout replaces ReadTimeout for a request whose body streams
	// (over BufferedBodyLimit, or chunked): an upload of BodyLimit, or a
	// backup restored through the admin API, needs longer than 30 s on a
	// slow line (10 min).
	UploadTimeout time.Duration
	IdleTimeout   time.Duration // keep-alive between requests (75 s, above nginx's 60 s)
	// WriteTimeout bounds writing one whole response (0: none). It must stay
	// 0 or large: a streamed response (SSE, a download) is one write.
	WriteTimeout time.Duration

	// ProxyTimeout is how long a slice may stay silent: before its response
	// headers, and between chunks of a streamed body (60 s, above
	// socket.io's long-polling interval of 25 s plus its 20 s ping timeout).
	ProxyTimeout            time.Duration
	DialTimeout             time.Duration // connecting to a slice (3 s)
	UpstreamMaxConns        int           // per slice (256)
	UpstreamIdleConnTimeout time.Duration // idle keep-alive to a slice (4 s; Node closes at 5 s)
	UpstreamMaxBufferedBody int           // larger slice responses stream (256 KiB)
	// NoEventLoop serves every public connection from the fasthttp server,
	// without the event loop that otherwise proxies plain /api and
	// /socket.io requests (package loop). For comparison and as a way back.
	NoEventLoop    bool
	BackendTimeout time.Duration // one call to Accounts or Slices (5 s)
	ReadyTimeout   time.Duration // all readiness checks together (2 s)

	WSReadLimit int64 // largest WebSocket message either way (1 MiB)
	// WSBufferSize is the write buffer of a WebSocket message, lent from a
	// pool for the time of one write (4 KiB): a larger message goes out as
	// several frames of this size.
	WSBufferSize int
	// WSReadBufferSize is each WebSocket's read buffer, held for its whole
	// life on both sides of the tunnel (2 KiB). Larger messages still pass
	// in one piece: a read bigger than the buffer bypasses it. Small
	// because most tunnels are idle, and 10,000 of them pay it 20,000 times.
	WSReadBufferSize int
	WSPingInterval   time.Duration // (25 s)
	WSPongWait       time.Duration // silence that ends a WebSocket (60 s)
	WSWriteWait      time.Duration // one frame write (10 s)
	WSCloseGrace     time.Duration // to finish a close handshake (5 s)

	// PublicURL is the site as users reach it ("https://app.example.com"),
	// used for links in emails. Empty: links follow the request's host, but
	// only when that host is an allowed origin or loopback, so a forged Host
	// header cannot point a reset link at someone else's site.
	PublicURL string
	// SPADir is the directory of the shared SPA's build, served under
	// SPAPrefix with index.html as the fallback. Empty: no SPA.
	SPADir string
	// SPAFiles is a build held in memory (path → content), served like
	// SPADir when SPADir is empty: `slicehub` passes package web's
	// embedded build, so the app needs no files on disk.
	SPAFiles map[string][]byte
	// BillingEnabled links /billing (served by package billing) from the
	// workspace.
	BillingEnabled bool
	// StandinScan offers a "simulate scanning" button on the workspace, for
	// the development platform whose slices serve a stand-in for WhatsApp
	// Web. Never set it in production.
	StandinScan bool
	SPAPrefix   string // ("/app/")
	// ResetTokenTTL is how long a password reset link works (30 min).
	ResetTokenTTL time.Duration
	// WorkspacePoll is how often the workspace page's event stream looks at
	// the slice's progress and WhatsApp state (1 s).
	WorkspacePoll time.Duration
	// WorkspaceMaxStream ends a workspace event stream after this long; the
	// browser reconnects at once (10 min). It bounds what a forgotten tab holds.
	WorkspaceMaxStream time.Duration
	// QRCodesPerRound is how many QR codes WhatsApp Web offers before it
	// asks for a reload (which the slice clicks): the N of "code X of N" (6).
	QRCodesPerRound int

	Argon2              *argon2id.Params // DefaultArgon2Params
	MaxConcurrentHashes int              // runtime.NumCPU()
	Throttle            Throttles

	Logger *slog.Logger
	// Registry is where the gateway's metrics go and what /metrics serves;
	// nil creates one with the Go and process collectors.
	Registry *prometheus.Registry
	// Now is the clock of sessions, caches and throttles (time.Now).
	Now func() time.Time
}

// DefaultThrottles are the budgets used when Config.Throttle is zero.
var DefaultThrottles = Throttles{
	LoginPerIP:       Rate{Burst: 20, Every: 6 * time.Second},
	LoginPerAccount:  Rate{Burst: 10, Every: time.Minute},
	SignupPerIP:      Rate{Burst: 5, Every: 2 * time.Minute},
	SignupPerAccount: Rate{Burst: 3, Every: 10 * time.Minute},
	BadSessionPerIP:  Rate{Burst: 30, Every: time.Second},
	BootstrapPerIP:   Rate{Burst: 200, Every: 50 * time.Millisecond},
	ResetPerIP:       Rate{Burst: 5, Every: time.Minute},
	ResetPerAccount:  Rate{Burst: 3, Every: 10 * time.Minute},
}

func (c *Config) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	defInt := func(i *int, v int) {
		if *i == 0 {
			*i = v
		}
	}
	if c.Addr == "" {
		c.Addr = ":8080"
	}
	if c.InternalAddr == "" {
		c.InternalAddr = ":8081"
	}
	def(&c.SessionIdle, 7*24*time.Hour)
	def(&c.SessionAbsolute, 30*24*time.Hour)
	def(&c.SessionCacheTTL, 10*time.Second)
	def(&c.TokenCacheTTL, 5*time.Minute)
	defInt(&c.BodyLimit, 32<<20)
	defInt(&c.BufferedBodyLimit, 64<<10)
	c.BufferedBodyLimit = min(c.BufferedBodyLimit, c.BodyLimit)
	defInt(&c.AuthBodyLimit, 8<<10)
	defInt(&c.InternalBodyLimit, 4<<10)
	defInt(&c.MaxHeaderBytes, 16<<10)
	def(&c.ReadTimeout, 30*time.Second)
	def(&c.UploadTimeout, 10*time.Minute)
	def(&c.IdleTimeout, 75*time.Second)
	def(&c.ProxyTimeout, 60*time.Second)
	def(&c.DialTimeout, 3*time.Second)
	defInt(&c.UpstreamMaxConns, 256)
	def(&c.UpstreamIdleConnTimeout, 4*time.Second)
	defInt(&c.UpstreamMaxBufferedBody, 256<<10)
	def(&c.BackendTimeout, 5*time.Second)
	def(&c.ReadyTimeout, 2*time.Second)
	if c.WSReadLimit == 0 {
		c.WSReadLimit = 1 << 20
	}
	defInt(&c.WSBufferSize, 4<<10)
	defInt(&c.WSReadBufferSize, 2<<10)
	def(&c.WSPingInterval, 25*time.Second)
	def(&c.WSPongWait, 60*time.Second)
	def(&c.WSWriteWait, 10*time.Second)
	def(&c.WSCloseGrace, 5*time.Second)
	if c.SPAPrefix == "" {
		c.SPAPrefix = "/app/"
	}
	def(&c.ResetTokenTTL, 30*time.Minute)
	def(&c.WorkspacePoll, time.Second)
	def(&c.WorkspaceMaxStream, 10*time.Minute)
	defInt(&c.QRCodesPerRound, 6)
	if c.Argon2 == nil {
		c.Argon2 = DefaultArgon2Params
	}
	defInt(&c.MaxConcurrentHashes, runtime.NumCPU())
	if c.Throttle == (Throttles{}) {
		c.Throttle = DefaultThrottles
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Validate reports configuration that New would ignore or could not honour,
// so that main can refuse to start rather than run with less protection.
func (c Config) Validate() error {
	var errs []error
	if _, _, err := wire.ParseTrustedProxies(c.TrustedProxies); err != nil {
		errs = append(errs, err)
	}
	if _, err := wire.ParseOrigins(c.AllowedOrigins); err != nil {
		errs = append(errs, err)
	}
	if c.SessionAbsolute < 0 || c.SessionIdle < 0 || c.ProxyTimeout < 0 || c.ResetTokenTTL < 0 {
		errs = append(errs, errors.New("durations must not be negative"))
	}
	if c.PublicURL != "" {
		if _, err := wire.ParseOrigins([]string{c.PublicURL}); err != nil {
			errs = append(errs, fmt.Errorf("public URL %q must be scheme://host[:port]", c.PublicURL))
		}
	}
	if c.SPADir != "" {
		if st, err := os.Stat(filepath.Join(c.SPADir, "index.html")); err != nil || st.IsDir() {
			errs = append(errs, fmt.Errorf("SPA directory %q has no index.html", c.SPADir))
		}
	} else if c.SPAFiles != nil && c.SPAFiles["index.html"] == nil {
		errs = append(errs, errors.New("the SPA build has no index.html"))
	}
	if p := c.SPAPrefix; p != "" && (!strings.HasPrefix(p, "/") || !strings.HasSuffix(p, "/") || len(p) < 3 ||
		pages.IsGatewayPrefix(p)) {
		errs = append(errs, fmt.Errorf("SPA prefix %q must be /name/ and not a gateway path", p))
	}
	return errors.Join(errs...)
}

// Deps are the Server's collaborators.
type Deps struct {
	Accounts Accounts
	Slices   Slices
	Routes   Routes
	// Mailer sends password reset links; nil logs them (development).
	Mailer Mailer
	// Progress tells the workspace page how far a starting slice has come.
	// nil: Slices, if it implements ProgressSource; otherwise the page shows
	// only the slice's state.
	Progress ProgressSource
	// Pairing gates QR codes per host (admission control); nil: every
	// code is shown.
	Pairing PairingGate
	// Throttle, when set, holds the login, signup and reset budgets for
	// every replica together (PostgreSQL in production); nil keeps them per
	// replica only.
	Throttle Throttle
}

// Throttle is a token-bucket store shared by the gateway's replicas
// (accounts.Throttle).
type Throttle = accounts.Throttle

// Rate is a token bucket: Burst attempts at once, one more every Every.
type Rate = accounts.Rate

// DefaultArgon2Params are the argon2id parameters of every stored password.
var DefaultArgon2Params = accounts.DefaultArgon2Params

// Server is the gateway: a public Fiber app and an internal one.
type Server struct {
	cfg  Config
	deps Deps
	now  func() time.Time

	log      *slog.Logger
	authLog  *slog.Logger
	proxyLog *slog.Logger
	wsLog    *slog.Logger

	app      *fiber.App // public
	internal *fiber.App
	admin    fiber.Router

	trusted wire.TrustedProxies
	origins *wire.Origins

	acc       *accounts.Service // sign-in, sessions, admin keys
	tokens    *proxy.TokenCache
	upstreams *proxy.Pools
	tunnels   tunnels
	// wsWritePool lends WebSocket write buffers for the duration of one
	// write: most tunnels are idle most of the time, and a buffer held by
	// each of them for its whole life would be most of their memory.
	wsWritePool sync.Pool
	metrics     *metrics

	bootstrapLimit *accounts.Limiter
	pages          *pages.Service // the gateway's HTML, the workspace and the SPA

	readyMu     sync.Mutex
	readyChecks map[string]func(context.Context) error

	draining atomic.Bool

	streamRoutes []streamRoute    // handlers of the gateway's own that take streamed bodies
	wsServer     *fasthttp.Server // the public side's WebSocket connections (split.go)
	loop         *loop.Engine     // the plain proxy path's event loops, once Serve runs (under lnMu)
	stop         chan struct{}
	stopOnce     sync.Once
	lnMu         sync.Mutex
	listeners    []net.Listener
	shutdown     bool
}

// New builds a Server. Invalid entries of TrustedProxies and AllowedOrigins
// are logged and ignored, which fails safe (less is trusted); call
// Config.Validate first to refuse them instead.
func New(cfg Config, deps Deps) *Server {
	if deps.Accounts == nil || deps.Slices == nil || deps.Routes == nil {
		panic("gateway.New: Accounts, Slices and Routes are required")
	}
	cfg.setDefaults()
	s := &Server{
		cfg:      cfg,
		deps:     deps,
		now:      cfg.Now,
		log:      cfg.Logger.With("component", "gateway"),
		authLog:  cfg.Logger.With("component", "gateway.auth"),
		proxyLog: cfg.Logger.With("component", "gateway.proxy"),
		wsLog:    cfg.Logger.With("component", "gateway.websocket"),
		stop:     make(chan struct{}),
	}
	trusted, trustedList, err := wire.ParseTrustedProxies(cfg.TrustedProxies)
	if err != nil {
		s.log.Error("configuration", "err", err)
	}
	s.trusted = trusted
	origins, err := wire.ParseOrigins(cfg.AllowedOrigins)
	if err != nil {
		s.log.Error("configuration", "err", err)
	}
	s.origins = wire.NewOrigins(origins, trusted)

	t := cfg.Throttle
	s.acc = accounts.New(accounts.Config{
		CookieSecure:        cfg.CookieSecure,
		SessionIdle:         cfg.SessionIdle,
		SessionAbsolute:     cfg.SessionAbsolute,
		SessionCacheTTL:     cfg.SessionCacheTTL,
		BackendTimeout:      cfg.BackendTimeout,
		AuthBodyLimit:       cfg.AuthBodyLimit,
		Argon2:              cfg.Argon2,
		MaxConcurrentHashes: cfg.MaxConcurrentHashes,
		LoginPerIP:          t.LoginPerIP,
		LoginPerAccount:     t.LoginPerAccount,
		SignupPerIP:         t.SignupPerIP,
		SignupPerAccount:    t.SignupPerAccount,
		BadSessionPerIP:     t.BadSessionPerIP,
		Now:                 cfg.Now,
	}, deps.Accounts, deps.Slices, s.authLog, trusted, s.origins, s.sessionEnded)
	s.tokens = proxy.NewTokenCache(cfg.TokenCacheTTL)
	s.upstreams = proxy.NewPools(&proxy.PoolConfig{
		DialTimeout:             cfg.DialTimeout,
		ProxyTimeout:            cfg.ProxyTimeout,
		UpstreamMaxConns:        cfg.UpstreamMaxConns,
		UpstreamIdleConnTimeout: cfg.UpstreamIdleConnTimeout,
		MaxHeaderBytes:          cfg.MaxHeaderBytes,
		UpstreamMaxBufferedBody: cfg.UpstreamMaxBufferedBody,
	})
	s.metrics = newMetrics(cfg.Registry)
	s.bootstrapLimit = accounts.NewLimiter(t.BootstrapPerIP, s.now)
	if deps.Throttle != nil {
		// The budgets a guesser spends. The session-miss and bootstrap
		// limiters stay local: they guard PostgreSQL itself, per replica.
		s.acc.Share(deps.Throttle)
	}

	progress := deps.Progress
	if progress == nil {
		progress, _ = deps.Slices.(ProgressSource)
	}
	mailer := deps.Mailer
	if mailer == nil {
		mailer = LogMailer{Logger: cfg.Logger}
	}
	s.pages = pages.New(pages.Config{
		CookieSecure:       cfg.CookieSecure,
		AuthBodyLimit:      cfg.AuthBodyLimit,
		BackendTimeout:     cfg.BackendTimeout,
		ResetTokenTTL:      cfg.ResetTokenTTL,
		WorkspacePoll:      cfg.WorkspacePoll,
		WorkspaceMaxStream: cfg.WorkspaceMaxStream,
		QRCodesPerRound:    cfg.QRCodesPerRound,
		PublicURL:          cfg.PublicURL,
		SPAPrefix:          cfg.SPAPrefix,
		SPADir:             cfg.SPADir,
		SPAFiles:           cfg.SPAFiles,
		BillingEnabled:     cfg.BillingEnabled,
		StandinScan:        cfg.StandinScan,
		ResetPerIP:         t.ResetPerIP,
		ResetPerAccount:    t.ResetPerAccount,
		Now:                cfg.Now,
	}, pages.Deps{
		Accounts:    s.acc,
		Store:       deps.Accounts,
		Routes:      deps.Routes,
		Progress:    progress,
		Pairing:     deps.Pairing,
		Mailer:      mailer,
		Throttle:    deps.Throttle,
		Origins:     s.origins,
		Trusted:     trusted,
		SliceClient: s.sliceClient,
		Invalidate:  s.Invalidate,
		Stop:        s.stop,
	}, s.log, s.authLog)

	s.app = fiber.New(fiber.Config{
		AppName:               "slicehub-gateway",
		DisableStartupMessage: true,
		// A path means what it says: "/METRICS", "/Metrics" and "/metrics/"
		// are not "/metrics". The edge blocks the gateway's private paths
		// by exact match (ops/nginx), and nginx matches case-sensitively,
		// so a route that also answered the variants would be public.
		// front and the event loop take /api and /socket.io in this one
		// case only, too.
		CaseSensitive: true,
		StrictRouting: true,
		// Bodies over BufferedBodyLimit stream (see body.go): fasthttp then
		// hands them to the handler as they arrive, and the limits are ours.
		BodyLimit:                    cfg.BufferedBodyLimit,
		StreamRequestBody:            true,
		DisablePreParseMultipartForm: true, // it would spool any size of upload to disk
		ReadBufferSize:               cfg.MaxHeaderBytes,
		ReadTimeout:                  cfg.ReadTimeout,
		WriteTimeout:                 cfg.WriteTimeout,
		IdleTimeout:                  cfg.IdleTimeout,
		// c.IP(), c.Protocol() and c.Hostname() believe X-Forwarded-* only
		// from these peers. The proxy path has its own, allocation-free
		// resolution (package wire) with the same list.
		EnableTrustedProxyCheck: true,
		TrustedProxies:          trustedList,
		// fasthttp otherwise hands each hijacked connection (every WebSocket)
		// its 16 KiB request reader for the connection's whole life; with
		// it, the reader goes back to the pool once a request is read.
		// Measured: 10,000 idle WebSockets cost 160 MB less, and HTTP
		// throughput does not change beyond the noise.
		ReduceMemoryUsage: true,
		ProxyHeader:       fiber.HeaderXForwardedFor,
		ErrorHandler:      s.writeError,
	})
	s.routes()
	s.app.Server().Handler = s.front(s.app.Server().Handler)
	s.app.Server().HeaderReceived = s.headerReceived       // see body.go
	s.wsServer = wsServerOf(s.app.Server(), cfg.BodyLimit) // see split.go

	s.internal = fiber.New(fiber.Config{
		AppName:                 "slicehub-gateway-internal",
		DisableStartupMessage:   true,
		BodyLimit:               cfg.InternalBodyLimit,
		ReadBufferSize:          cfg.MaxHeaderBytes,
		ReadTimeout:             internalReadTimeout,
		WriteTimeout:            internalReadTimeout,
		IdleTimeout:             cfg.IdleTimeout,
		EnableTrustedProxyCheck: true, // nobody is trusted: slices reach it directly
		ErrorHandler:            s.writeError,
	})
	s.internal.Use(s.observe, s.bootstrapOnly)
	s.internal.Post(slicehub.BootstrapPath, s.bootstrap)
	s.internal.Get("/healthz", s.healthz)
	s.internal.Get("/readyz", s.readyz)
	s.internal.Get("/metrics", s.metrics.handler())

	go s.janitor()
	return s
}

func (s *Server) routes() {
	app := s.app
	app.Use(s.observe)
	app.Get("/healthz", s.healthz)
	app.Get("/readyz", s.readyz)
	app.Get("/metrics", s.metrics.handler())

	auth := app.Group("/auth")
	auth.Post("/signup", s.acc.Signup)
	auth.Post("/login", s.acc.Login)
	auth.Post("/logout", s.acc.Logout)
	auth.Get("/me", s.acc.Me)

	s.admin = app.Group("/admin", s.acc.RequireAdmin)
	s.acc.AdminKeyRoutes(s.admin)
	s.pages.Routes(app)

	// Explicit routes, not Use: Fiber's Use matches "/apix" for "/api".
	for _, prefix := range []string{"/api", "/socket.io"} {
		app.All(prefix, s.proxy)
		app.All(prefix+"/*", s.proxy)
	}
}

// Admin is the /admin router, behind the admin guard: handlers added to it
// run only for an authenticated admin, whose user id is in
// c.Locals(LocalsUserID). Add routes before serving.
func (s *Server) Admin() fiber.Router { return s.admin }

// Invalidate forgets what this replica cached about userID and re-checks
// the user's open WebSockets. The lead calls it on NOTIFY user_changed.
func (s *Server) Invalidate(userID int64) {
	s.acc.Sessions.InvalidateUser(userID, s.now())
	s.recheckTunnels(func(t *tunnel) bool { return t.userID == userID })
}

// InvalidateAll forgets every cached session and gateway token and
// re-checks every WebSocket. The lead calls it when notifications may have
// been missed (the LISTEN connection was re-established).
func (s *Server) InvalidateAll() {
	s.acc.Sessions.InvalidateAll()
	s.tokens.DropAll()
	s.recheckTunnels(func(*tunnel) bool { return true })
}

// AddReadyCheck adds a check that /readyz runs ("postgres", "consul"). The
// name is shown to the prober when the check fails; the error is only
// logged. It may be called at any time.
func (s *Server) AddReadyCheck(name string, check func(context.Context) error) {
	s.readyMu.Lock()
	defer s.readyMu.Unlock()
	if s.readyChecks == nil {
		s.readyChecks = make(map[string]func(context.Context) error)
	}
	s.readyChecks[name] = check
}

// InvalidateSlice forgets what this replica cached about sliceID (its
// gateway token, the sessions routed to it) and re-checks the WebSockets
// open to it. The lead calls it on NOTIFY slice_changed.
func (s *Server) InvalidateSlice(sliceID int64) {
	now := s.now()
	s.acc.Sessions.InvalidateSlice(sliceID, now)
	s.tokens.Drop(sliceID)
	s.recheckTunnels(func(t *tunnel) bool { return t.sliceID == sliceID })
}

// Serve serves the public app on ln until Shutdown: each connection goes
// to Fiber's server or to the WebSocket one by its first request (split.go).
func (s *Server) Serve(ln net.Listener) error {
	if !s.track(ln) {
		return nil
	}
	s.app.Handler() // builds Fiber's route tree, before either server runs
	sp := newSplitter(ln.Addr(), s.cfg.ReadTimeout, s.cfg.MaxHeaderBytes)
	if !s.cfg.NoEventLoop && loop.Supported {
		eng, err := s.newLoop(sp.httpLn.push)
		if err != nil {
			s.log.Warn("no event loop: the fasthttp server serves every connection", "err", err)
		} else {
			s.lnMu.Lock()
			s.loop = eng
			s.lnMu.Unlock()
			sp.loop = eng
		}
	}
	errc := make(chan error, 2)
	go func() { errc <- s.app.Server().Serve(sp.httpLn) }()
	go func() { errc <- s.wsServer.Serve(sp.wsLn) }()
	err := sp.run(ln) // until Shutdown closes ln, or ln fails
	if s.draining.Load() {
		return nil
	}
	return errors.Join(err, <-errc, <-errc)
}

// ServeInternal serves the internal app (bootstrap) on ln until Shutdown.
func (s *Server) ServeInternal(ln net.Listener) error { return s.serve(s.internal, ln) }

// serve tracks ln so that Shutdown can close it: fasthttp only stops
// listeners that its Serve has registered, and a Shutdown that comes first
// (a test that ends at once, a signal during startup) would otherwise leave
// Serve running for ever.
func (s *Server) serve(app *fiber.App, ln net.Listener) error {
	if !s.track(ln) {
		return nil
	}
	err := app.Listener(ln)
	if s.draining.Load() {
		return nil // the listener was closed by Shutdown
	}
	return err
}

// track registers ln for Shutdown to close; false (and ln closed) when
// Shutdown came first.
func (s *Server) track(ln net.Listener) bool {
	s.lnMu.Lock()
	defer s.lnMu.Unlock()
	if s.shutdown {
		ln.Close()
		return false
	}
	s.listeners = append(s.listeners, ln)
	return true
}

// Listen opens Config.Addr and Config.InternalAddr and serves both until
// Shutdown or until one fails.
func (s *Server) Listen() error {
	pub, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return err
	}
	in, err := net.Listen("tcp", s.cfg.InternalAddr)
	if err != nil {
		pub.Close()
		return err
	}
	s.log.Info("listening", "addr", pub.Addr().String(), "internal_addr", in.Addr().String())
	errc := make(chan error, 2)
	go func() { errc <- s.Serve(pub) }()
	go func() { errc <- s.ServeInternal(in) }()
	return <-errc
}

// Shutdown stops accepting connections, reports not-ready, ends every
// WebSocket with 1001, and waits for requests in flight until ctx ends.
func (s *Server) Shutdown(ctx context.Context) error {
	s.draining.Store(true)
	s.stopOnce.Do(func() { close(s.stop) })
	s.lnMu.Lock()
	s.shutdown = true
	for _, ln := range s.listeners {
		ln.Close()
	}
	eng := s.loop
	s.lnMu.Unlock()
	s.tunnels.closeAll(closeShutdown)
	var errs []error
	if err := eng.Shutdown(ctx); err != nil {
		errs = append(errs, err)
	}
	for _, app := range []*fiber.App{s.app, s.internal} {
		// fasthttp closes its listeners too: those closed above are fine.
		if err := app.ShutdownWithContext(ctx); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, err)
		}
	}
	if err := s.wsServer.ShutdownWithContext(ctx); err != nil && !errors.Is(err, net.ErrClosed) {
		errs = append(errs, err)
	}
	done := make(chan struct{})
	go func() { s.tunnels.wg.Wait(); s.pages.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		errs = append(errs, ctx.Err())
	}
	s.upstreams.CloseIdle()
	return errors.Join(errs...)
}

// janitor sweeps the caches, throttles and connection pools.
// Shared throttle buckets idle for sharedBucketIdle are full again for
// every budget the gateway has (the slowest refills in well under a day),
// so forgetting them changes nothing.
const (
	sharedPruneEvery = 10 * time.Minute
	sharedBucketIdle = 24 * time.Hour
)

func (s *Server) janitor() {
	t := time.NewTicker(s.cfg.SessionCacheTTL)
	defer t.Stop()
	lastPrune := time.Now()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			now := s.now()
			s.acc.Sessions.Sweep(now, 2*s.cfg.BackendTimeout)
			s.tokens.Sweep(now)
			s.upstreams.Sweep(time.Now(), 5*time.Minute)
			for _, l := range append(append(s.acc.Limiters(), s.pages.Limiters()...), s.bootstrapLimit) {
				l.Sweep()
			}
			if s.deps.Throttle != nil && time.Since(lastPrune) >= sharedPruneEvery {
				lastPrune = time.Now()
				ctx, cancel := context.WithTimeout(context.Background(), s.cfg.BackendTimeout)
				if _, err := s.deps.Throttle.PruneTokens(ctx, sharedBucketIdle); err != nil {
					s.authLog.Warn("pruning the shared throttle buckets", "err", err)
				}
				cancel()
			}
		}
	}
}

// sessionEnded closes the WebSockets of a session that ended here.
func (s *Server) sessionEnded(h accounts.TokenHash) {
	for _, t := range s.tunnels.matching(func(t *tunnel) bool { return t.hash == h }) {
		t.end(closeSignedOut)
	}
}

// LocalsUserID is the c.Locals key under which /admin handlers find the
// authenticated admin's user id (an int64).
const LocalsUserID = accounts.LocalsUserID

// LocalsAdminKeyID is the c.Locals key of the admin API key's id (an
// int64) when the request was authenticated by a key rather than a
// session, for the audit trail of /admin handlers.
const LocalsAdminKeyID = accounts.LocalsAdminKeyID

// CSRFToken returns the double-submit token to embed in an HTML form,
// issuing the slicehub.CSRFCookie when the browser has none yet.
func (s *Server) CSRFToken(c *fiber.Ctx) string { return s.acc.CSRFToken(c) }

// VerifyCSRF checks an HTML form post: the csrf_token field, or the
// X-CSRF-Token header, must equal the CSRF cookie.
func (s *Server) VerifyCSRF(c *fiber.Ctx) error { return s.acc.VerifyCSRF(c) }

// NewAdminKey returns a new key and the hash to store. The ops CLI uses it
// to make the first key directly in the database (postgres.DB.CreateAdminKey).
func NewAdminKey() (key string, hash []byte) { return slicehub.NewAdminKey() }

// HashPassword checks password against the policy for email and returns
// its argon2id hash: what the ops CLI stores when it creates the first
// admin (postgres.DB.CreateAdmin). email must be normalised (NormalizeEmail).
func HashPassword(pw, email string) (string, error) { return password.Hash(pw, email) }

// NormalizeEmail is the gateway's email normalisation and check, for tools
// that create accounts outside the gateway.
func NormalizeEmail(s string) (string, error) { return slicehub.NormalizeEmail(s) }

// Mail is one message to one recipient (pages.Mail).
type Mail = pages.Mail

// Mailer sends the gateway's mail (password reset links).
type Mailer = pages.Mailer

// LogMailer logs each mail instead of sending it (development).
type LogMailer = pages.LogMailer

// SMTPMailer sends mail through an SMTP relay.
type SMTPMailer = pages.SMTPMailer
