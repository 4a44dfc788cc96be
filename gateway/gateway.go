// Package gateway is Slicehub's only door to the outside: accounts and
// sessions under /auth, the admin guard under /admin (admin API keys for
// the ops CLI under /admin/api), and the proxy that carries each browser's
// HTTP, long-polling and WebSocket traffic to that user's own slice under
// /api and /socket.io. It serves its own HTML pages (sign up, log in,
// password reset, "Your workspace" with the slice's progress and WhatsApp
// QR code over server-sent events; pages.go) and, when configured, the
// shared SPA (spa.go). It also serves /healthz, /readyz and /metrics, and,
// on a separate internal listener that nginx never exposes, the endpoint
// where a starting slice fetches its credentials.
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
)

// Accounts stores users and server-side sessions (package postgres).
type Accounts interface {
	// CreateUser fails with KindConflict, code "email_taken", for a known email.
	CreateUser(ctx context.Context, email, passwordHash string) (slicehub.User, error)
	// UserByEmail returns the user and its password hash, or KindNotFound.
	UserByEmail(ctx context.Context, email string) (slicehub.User, string, error)
	CreateSession(ctx context.Context, userID int64, tokenHash []byte, expiresAt time.Time) error
	// SessionUser returns the session's user if the session is neither past
	// its absolute expiry nor idle for longer than idle, touching its
	// last-seen time at most once a minute; KindUnauthorized otherwise.
	SessionUser(ctx context.Context, tokenHash []byte, idle time.Duration) (slicehub.User, error)
	DeleteSession(ctx context.Context, tokenHash []byte) error

	// CreateResetToken stores a password reset token's hash.
	CreateResetToken(ctx context.Context, userID int64, tokenHash []byte, expiresAt time.Time) error
	// ResetTokenUser returns the user of a live reset token (unused,
	// unexpired, user enabled); KindInvalid "invalid_token" otherwise.
	ResetTokenUser(ctx context.Context, tokenHash []byte) (slicehub.User, error)
	// ResetPassword redeems a live reset token once: it sets the password
	// and ends every session of the user. KindInvalid "invalid_token"
	// otherwise.
	ResetPassword(ctx context.Context, tokenHash []byte, passwordHash string) (slicehub.User, error)

	// CreateAdminKey stores an admin API key's hash.
	CreateAdminKey(ctx context.Context, name string, keyHash []byte, createdBy int64) (slicehub.AdminKey, error)
	AdminKeys(ctx context.Context) ([]slicehub.AdminKey, error)
	// RevokeAdminKey is KindNotFound for an unknown id.
	RevokeAdminKey(ctx context.Context, id int64) error
	// AdminKeyUser returns an unrevoked key and the account it acts for;
	// KindUnauthorized otherwise.
	AdminKeyUser(ctx context.Context, keyHash []byte) (slicehub.User, slicehub.AdminKey, error)
}

// ProgressSource reports how far a user's slice has come while it starts
// (package postgres knows the database and dispatch stages; the scheduler
// can add what Nomad and Consul know). KindNotFound when the user has no
// slice.
type ProgressSource interface {
	SliceProgress(ctx context.Context, userID int64) (slicehub.SliceProgress, error)
}

// ProgressFunc adapts a function, such as scheduler.Scheduler.Progress, to
// ProgressSource.
type ProgressFunc func(ctx context.Context, userID int64) (slicehub.SliceProgress, error)

// SliceProgress calls f.
func (f ProgressFunc) SliceProgress(ctx context.Context, userID int64) (slicehub.SliceProgress, error) {
	return f(ctx, userID)
}

// PairingGate admits users to a QR code a few at a time per host
// (scheduler.Scheduler.Pairing): the gateway asks it at every look at a
// workspace whose slice shows a QR code or has just linked.
type PairingGate interface {
	Pairing(ctx context.Context, sliceID int64, waState string, importing bool) (slicehub.Permit, error)
}

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
	// /socket.io requests (loop_linux.go). For comparison and as a way back.
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
	if _, _, err := parseTrustedProxies(c.TrustedProxies); err != nil {
		errs = append(errs, err)
	}
	if _, err := parseOrigins(c.AllowedOrigins); err != nil {
		errs = append(errs, err)
	}
	if c.SessionAbsolute < 0 || c.SessionIdle < 0 || c.ProxyTimeout < 0 || c.ResetTokenTTL < 0 {
		errs = append(errs, errors.New("durations must not be negative"))
	}
	if c.PublicURL != "" {
		if _, err := parseOrigins([]string{c.PublicURL}); err != nil {
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
		isGatewayPrefix(p)) {
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

// Throttle is a token-bucket store shared by the gateway's replicas. Each
// replica still checks its own in-memory bucket first, so a flood is
// turned away without a database round trip; the shared one makes N
// replicas give an attacker one budget, not N.
type Throttle interface {
	// TakeToken spends a token of bucket (name, key); 0, or how long to wait.
	TakeToken(ctx context.Context, name, key string, burst int, every time.Duration) (time.Duration, error)
	// TokenWait is how long until the bucket has a token, spending none.
	TokenWait(ctx context.Context, name, key string, burst int, every time.Duration) (time.Duration, error)
	// PruneTokens forgets buckets untouched for longer than idle.
	PruneTokens(ctx context.Context, idle time.Duration) (int64, error)
}

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

	trusted trustedProxies
	origins [][]byte

	sessions  *sessionCache
	tokens    *tokenCache
	upstreams *upstreams
	tunnels   tunnels
	// wsWritePool lends WebSocket write buffers for the duration of one
	// write: most tunnels are idle most of the time, and a buffer held by
	// each of them for its whole life would be most of their memory.
	wsWritePool sync.Pool
	hasher      *hasher
	metrics     *metrics

	limits struct {
		loginIP, loginAccount, signupIP, signupAccount *limiter
	}
	badSession     *limiter
	bootstrapLimit *limiter
	resetIP        *limiter
	resetAccount   *limiter

	pages    *pages
	mailer   Mailer
	mailSem  chan struct{} // bounds reset mails in flight
	mailWG   sync.WaitGroup
	progress ProgressSource
	spa      *spa
	streams  streamCounts // open workspace event streams per user

	readyMu     sync.Mutex
	readyChecks map[string]func(context.Context) error

	draining atomic.Bool

	streamRoutes []streamRoute    // handlers of the gateway's own that take streamed bodies
	wsServer     *fasthttp.Server // the public side's WebSocket connections (split.go)
	loop         *loopEngine      // the plain proxy path's event loops, once Serve runs (under lnMu)
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
	trusted, trustedList, err := parseTrustedProxies(cfg.TrustedProxies)
	if err != nil {
		s.log.Error("configuration", "err", err)
	}
	s.trusted = trusted
	origins, err := parseOrigins(cfg.AllowedOrigins)
	if err != nil {
		s.log.Error("configuration", "err", err)
	}
	s.origins = origins

	s.sessions = newSessionCache(cfg.SessionCacheTTL)
	s.tokens = newTokenCache(cfg.TokenCacheTTL)
	s.upstreams = newUpstreams(&s.cfg)
	s.hasher = newHasher(cfg.Argon2, cfg.MaxConcurrentHashes)
	s.metrics = newMetrics(cfg.Registry)
	t := cfg.Throttle
	s.limits.loginIP = newLimiter(t.LoginPerIP, s.now)
	s.limits.loginAccount = newLimiter(t.LoginPerAccount, s.now)
	s.limits.signupIP = newLimiter(t.SignupPerIP, s.now)
	s.limits.signupAccount = newLimiter(t.SignupPerAccount, s.now)
	s.badSession = newLimiter(t.BadSessionPerIP, s.now)
	s.bootstrapLimit = newLimiter(t.BootstrapPerIP, s.now)
	s.resetIP = newLimiter(t.ResetPerIP, s.now)
	s.resetAccount = newLimiter(t.ResetPerAccount, s.now)
	if deps.Throttle != nil {
		// The budgets a guesser spends. The session-miss and bootstrap
		// limiters stay local: they guard PostgreSQL itself, per replica.
		for name, l := range map[string]*limiter{
			"login_ip": s.limits.loginIP, "login_account": s.limits.loginAccount,
			"signup_ip": s.limits.signupIP, "signup_account": s.limits.signupAccount,
			"reset_ip": s.resetIP, "reset_account": s.resetAccount,
		} {
			l.share(name, deps.Throttle, cfg.BackendTimeout, s.authLog)
		}
	}

	s.pages = newPages()
	s.mailer = deps.Mailer
	if s.mailer == nil {
		s.mailer = LogMailer{Logger: cfg.Logger}
	}
	s.mailSem = make(chan struct{}, 16)
	s.progress = deps.Progress
	if s.progress == nil {
		s.progress, _ = deps.Slices.(ProgressSource)
	}
	switch {
	case cfg.SPADir != "":
		s.spa = newSPA(cfg.SPADir, s.log)
	case cfg.SPAFiles != nil:
		s.spa = &spa{log: s.log, files: newSPAAssets(cfg.SPAFiles)}
	}

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
		// resolution (clientip.go) with the same list.
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
	auth.Post("/signup", s.signup)
	auth.Post("/login", s.login)
	auth.Post("/logout", s.logout)
	auth.Get("/me", s.me)

	s.admin = app.Group("/admin", s.requireAdmin)
	s.adminKeyRoutes()
	s.pageRoutes()

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
	s.sessions.invalidateUser(userID, s.now())
	s.recheckTunnels(func(t *tunnel) bool { return t.userID == userID })
}

// InvalidateAll forgets every cached session and gateway token and
// re-checks every WebSocket. The lead calls it when notifications may have
// been missed (the LISTEN connection was re-established).
func (s *Server) InvalidateAll() {
	s.sessions.invalidateAll()
	s.tokens.dropAll()
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
	s.sessions.invalidateSlice(sliceID, now)
	s.tokens.drop(sliceID)
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
	if !s.cfg.NoEventLoop && loopSupported {
		eng, err := newLoopEngine(s, sp.httpLn.push)
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
	loop := s.loop
	s.lnMu.Unlock()
	s.tunnels.closeAll(closeShutdown)
	var errs []error
	if err := loop.shutdown(ctx); err != nil {
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
	go func() { s.tunnels.wg.Wait(); s.mailWG.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		errs = append(errs, ctx.Err())
	}
	s.upstreams.closeIdle()
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
			s.sessions.sweep(now, 2*s.cfg.BackendTimeout)
			s.tokens.sweep(now)
			s.upstreams.sweep(time.Now(), 5*time.Minute)
			for _, l := range []*limiter{s.limits.loginIP, s.limits.loginAccount, s.limits.signupIP,
				s.limits.signupAccount, s.badSession, s.bootstrapLimit, s.resetIP, s.resetAccount} {
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
