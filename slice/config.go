// Package slice is the reference slice runtime: the process that runs inside
// one tenant's container (a dispatched child of the Nomad job "slice").
//
// It owns the slice side of the contract in ../jobs/README.md:
//   - obtaining the slice's credentials (its DATABASE_URL and the per-slice
//     gateway token) from the gateway's bootstrap endpoint, once per Nomad
//     allocation, and caching them in the allocation's secrets directory;
//   - the HTTP API on $NOMAD_PORT_http: /api/health for Consul, and every
//     other /api/* and /socket.io/* path only for callers that present the
//     gateway token;
//   - the socket.io endpoint that pushes WhatsApp state changes;
//   - the CRM kept in the slice's own PostgreSQL database, migrated with
//     goose at start: contacts, notes, labels and a pipeline stage, and the
//     WhatsApp chats and messages, with full-text and trigram search.
//
// And the WhatsApp side: a [Supervisor] runs Chromium (through chromedp) on
// the slice's persistent profile, keeps WhatsApp Web open in it, and drives
// the [StateHolder] and the [QRHolder] from what the page shows; everything
// that reports them reads them through the narrow [StateSource] and
// [QRSource] interfaces. A snapshotter copies the profile's login state to
// the slice's database and restores it on a node that lacks it
// ([SnapshotStore]). The page and its selectors are configuration
// ([WhatsAppConfig]); package standin is a local stand-in for the real site.
//
// Conversations reach the database only through the [Adapter]: a small,
// versioned page-side script (adapter/adapter.js) injected over CDP that
// reads WhatsApp Web's own modules and pushes to a binding. The [Syncer]
// stores the pushes, catches up after every page load (history import with
// a checkpoint, then everything since the newest stored message) and is the
// one sender of outgoing messages, once per idempotency key.
package slice

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/slicehub/slicehub"
	"github.com/slicehub/slicehub/slice/standin"
)

// Config is everything the slice needs to start. ConfigFromEnv fills it from
// the environment Nomad gives the task; tests fill it by hand.
type Config struct {
	// Addr is the listen address, e.g. "127.0.0.1:24310" or ":24310".
	Addr string
	// Listener, when set, is used instead of listening on Addr (tests pass
	// a listener on 127.0.0.1:0 so that they know the port before Run).
	Listener net.Listener

	// SliceID identifies the tenant slice (Nomad meta slice_id).
	SliceID string
	// AllocID is the Nomad allocation id; the gateway lets each allocation
	// claim the credentials once.
	AllocID string

	// DatabaseURL and GatewayToken, when both are set, are used as they are
	// and no bootstrap happens (manual and development runs).
	DatabaseURL  string
	GatewayToken string

	// BootstrapURL is the gateway's base URL; BootstrapPath is appended.
	BootstrapURL string
	// CredentialsFile caches what the bootstrap returned, so that a task
	// restart inside the same allocation does not claim twice. Empty means
	// no cache (manual runs).
	CredentialsFile string
	// IdentityFile holds the allocation's Nomad workload identity (a JWT,
	// written by the job's identity { file = true }), sent with the
	// bootstrap request as proof that the caller is the allocation. A
	// file, not the environment: Chromium inherits the environment.
	IdentityFile string

	// ProfileDir is Chromium's profile (a host volume that survives the
	// container). Empty means no Chromium runs.
	ProfileDir string

	// WhatsApp is the page Chromium keeps open and the selectors that tell
	// its states apart; empty fields take DefaultWhatsApp's values.
	WhatsApp WhatsAppConfig
	// Chromium configures the supervised browser.
	Chromium ChromiumConfig
	// Snapshot says when the profile's login state is copied to the
	// database.
	Snapshot SnapshotPolicy
	// StandIn serves the stand-in WhatsApp page (package standin) inside the
	// slice and points Chromium at it; POST /api/dev/scan then plays the
	// phone. For the development platform, which has no internet.
	StandIn bool
	// StandInHistory sizes the stand-in account's seeded history
	// (SLICE_WA_STANDIN_HISTORY="chats,messages"; default 10,100).
	StandInHistory standin.History
	// StandInWeight is the stand-in page's weight model
	// (SLICE_WA_STANDIN_WEIGHT=light|typical|heavy; default none).
	StandInWeight standin.Weight
	// Governor is the memory governor (governor.go): SLICE_MEMORY_SOFT_MB,
	// the soft threshold in MiB of anon+shmem; 0 or unset: none.
	Governor GovernorConfig
	// AdapterFile replaces the built-in page-side WhatsApp adapter
	// (SLICE_WA_ADAPTER): the one file to change when WhatsApp Web does.
	AdapterFile string

	// Pool overrides the database pool's size and idle timeout (zero: the
	// defaults). The load test's slice farm runs hundreds of slices in one
	// process against one PostgreSQL and keeps each at one connection.
	Pool PoolLimits

	// ShutdownTimeout bounds the graceful shutdown after ctx ends. It must
	// stay below the job's kill_timeout.
	ShutdownTimeout time.Duration

	// HTTPClient is used for the bootstrap call; nil means a client with
	// sane timeouts.
	HTTPClient *http.Client
	// Backoff is the bootstrap and database retry policy; zero means
	// DefaultBackoff.
	Backoff Backoff
	// Logger receives JSON logs; nil means slog.Default().
	Logger *slog.Logger
	// State is the WhatsApp state holder; nil means a new one in "starting".
	State *StateHolder
	// QR is the QR code holder; nil means a new one.
	QR *QRHolder
}

// ConfigFromEnv reads the task environment. getenv is os.Getenv in main.
//
//	SLICE_ID                 slice id (the job sets it from NOMAD_META_slice_id)
//	SLICE_ADDR               listen address; default ":$NOMAD_PORT_http"
//	NOMAD_PORT_http          the allocation's dynamic port
//	NOMAD_ALLOC_ID           allocation id, sent with the bootstrap request
//	NOMAD_SECRETS_DIR        per-allocation secrets dir; credentials.json goes there,
//	                         and Nomad writes the workload identity to nomad_token
//	DATABASE_URL, SLICEHUB_GATEWAY_TOKEN   both set: skip the bootstrap
//	SLICEHUB_BOOTSTRAP_URL   the gateway's base URL for the bootstrap call
//	SLICE_PROFILE_DIR        Chromium profile directory; empty: no Chromium
//
// WhatsApp page (empty: the DefaultWhatsApp value, the real site):
//
//	SLICE_WA_URL, SLICE_WA_QR_SELECTOR, SLICE_WA_QR_ATTRIBUTE,
//	SLICE_WA_QR_RELOAD_SELECTOR, SLICE_WA_CONNECTED_SELECTOR,
//	SLICE_WA_DISCONNECTED_SELECTOR, SLICE_WA_USER_AGENT
//	SLICE_WA_STANDIN=on       serve the stand-in page inside the slice (development)
//	SLICE_WA_STANDIN_HISTORY  the stand-in account's seeded history, "chats,messages" (default 10,100)
//	SLICE_WA_STANDIN_WEIGHT   the stand-in page's weight model: light, typical, heavy (default none)
//	SLICE_MEMORY_SOFT_MB      the memory governor's soft threshold, MiB of anon+shmem (default 0: none)
//	SLICE_WA_ADAPTER          a page-side adapter file replacing the built-in slice/adapter/adapter.js
//
// Chromium and the profile snapshot:
//
//	SLICE_CHROMIUM=off        run no browser
//	SLICE_CHROMIUM_PATH       browser binary
//	SLICE_CHROMIUM_SANDBOX    on (default) or off
//	SLICE_CHROMIUM_FLAGS      extra flags, space-separated --name[=value]
//	SLICE_CHROMIUM_MAX_RESTARTS  failures in a row before "failed" (default 5)
//	SLICE_SNAPSHOT            on (default) or off
func ConfigFromEnv(getenv func(string) string) (Config, error) {
	const op = "slice.config"
	c := Config{
		SliceID:      getenv("SLICE_ID"),
		AllocID:      getenv("NOMAD_ALLOC_ID"),
		Addr:         getenv("SLICE_ADDR"),
		DatabaseURL:  getenv("DATABASE_URL"),
		GatewayToken: getenv("SLICEHUB_GATEWAY_TOKEN"),
		BootstrapURL: getenv("SLICEHUB_BOOTSTRAP_URL"),
		ProfileDir:   getenv("SLICE_PROFILE_DIR"),
		AdapterFile:  getenv("SLICE_WA_ADAPTER"),
		WhatsApp: WhatsAppConfig{
			URL:                  getenv("SLICE_WA_URL"),
			QRSelector:           getenv("SLICE_WA_QR_SELECTOR"),
			QRAttribute:          getenv("SLICE_WA_QR_ATTRIBUTE"),
			QRReloadSelector:     getenv("SLICE_WA_QR_RELOAD_SELECTOR"),
			ConnectedSelector:    getenv("SLICE_WA_CONNECTED_SELECTOR"),
			DisconnectedSelector: getenv("SLICE_WA_DISCONNECTED_SELECTOR"),
			UserAgent:            getenv("SLICE_WA_USER_AGENT"),
		},
		Chromium: ChromiumConfig{
			Path:       getenv("SLICE_CHROMIUM_PATH"),
			ExtraFlags: strings.Fields(getenv("SLICE_CHROMIUM_FLAGS")),
		},
	}
	var err error
	if c.StandIn, err = envSwitch(getenv, "SLICE_WA_STANDIN", false); err != nil {
		return Config{}, fmt.Errorf("%s: %w", op, err)
	}
	c.StandInHistory = standin.History{Chats: 10, Messages: 100}
	if v := getenv("SLICE_WA_STANDIN_HISTORY"); v != "" {
		a, b, ok := strings.Cut(v, ",")
		nc, err1 := strconv.Atoi(strings.TrimSpace(a))
		nm, err2 := strconv.Atoi(strings.TrimSpace(b))
		if !ok || err1 != nil || err2 != nil || nc < 0 || nm < 0 || (nc == 0 && nm > 0) {
			return Config{}, fmt.Errorf("%s: SLICE_WA_STANDIN_HISTORY must be \"chats,messages\", e.g. 10,100", op)
		}
		c.StandInHistory = standin.History{Chats: nc, Messages: nm}
	}
	if v := getenv("SLICE_MEMORY_SOFT_MB"); v != "" {
		mb, err := strconv.ParseUint(strings.TrimSpace(v), 10, 32)
		if err != nil {
			return Config{}, fmt.Errorf("%s: SLICE_MEMORY_SOFT_MB must be a number of MiB: %w", op, err)
		}
		c.Governor.Soft = mb << 20
	}
	if c.StandInWeight, err = standin.ParseWeight(getenv("SLICE_WA_STANDIN_WEIGHT")); err != nil {
		return Config{}, fmt.Errorf("%s: SLICE_WA_STANDIN_WEIGHT: %w", op, err)
	}
	enabled, err := envSwitch(getenv, "SLICE_CHROMIUM", true)
	if err != nil {
		return Config{}, fmt.Errorf("%s: %w", op, err)
	}
	c.Chromium.Disabled = !enabled
	sandbox, err := envSwitch(getenv, "SLICE_CHROMIUM_SANDBOX", true)
	if err != nil {
		return Config{}, fmt.Errorf("%s: %w", op, err)
	}
	c.Chromium.NoSandbox = !sandbox
	snapshots, err := envSwitch(getenv, "SLICE_SNAPSHOT", true)
	if err != nil {
		return Config{}, fmt.Errorf("%s: %w", op, err)
	}
	c.Snapshot.Disabled = !snapshots
	if v := getenv("SLICE_CHROMIUM_MAX_RESTARTS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return Config{}, fmt.Errorf("%s: SLICE_CHROMIUM_MAX_RESTARTS must be a positive integer", op)
		}
		c.Chromium.MaxRestarts = n
	}
	if c.Addr == "" {
		if p := getenv("NOMAD_PORT_http"); p != "" {
			c.Addr = ":" + p
		}
	}
	if dir := getenv("NOMAD_SECRETS_DIR"); dir != "" {
		c.CredentialsFile = filepath.Join(dir, "credentials.json")
		c.IdentityFile = filepath.Join(dir, "nomad_token")
	}
	if err := c.validate(); err != nil {
		return Config{}, fmt.Errorf("%s: %w", op, err)
	}
	return c, nil
}

// validate reports the first thing that keeps the slice from starting.
// Messages name variables, never values: a value may be a secret.
func (c *Config) validate() error {
	if _, ok := slicehub.ParseSliceID(c.SliceID); !ok {
		return errors.New("SLICE_ID must be a positive decimal integer")
	}
	if c.Addr == "" && c.Listener == nil {
		return errors.New("neither SLICE_ADDR nor NOMAD_PORT_http is set")
	}
	manual := c.DatabaseURL != "" || c.GatewayToken != ""
	switch {
	case manual && (c.DatabaseURL == "" || c.GatewayToken == ""):
		return errors.New("DATABASE_URL and SLICEHUB_GATEWAY_TOKEN must be set together")
	case !manual && c.BootstrapURL == "":
		return errors.New("SLICEHUB_BOOTSTRAP_URL is required when DATABASE_URL and SLICEHUB_GATEWAY_TOKEN are not set")
	case !manual && !strings.HasPrefix(c.BootstrapURL, "http://") && !strings.HasPrefix(c.BootstrapURL, "https://"):
		return errors.New("SLICEHUB_BOOTSTRAP_URL must be an http or https URL")
	case c.StandIn && c.WhatsApp.URL != "":
		return errors.New("SLICE_WA_STANDIN and SLICE_WA_URL exclude each other")
	}
	if !c.StandIn {
		if err := c.WhatsApp.withDefaults().validate(); err != nil {
			return err
		}
	}
	return nil
}

// runsChromium reports whether this slice supervises a browser.
func (c *Config) runsChromium() bool { return c.ProfileDir != "" && !c.Chromium.Disabled }

// envSwitch reads an on/off variable; empty gives def.
func envSwitch(getenv func(string) string, name string, def bool) (bool, error) {
	switch strings.ToLower(strings.TrimSpace(getenv(name))) {
	case "":
		return def, nil
	case "1", "on", "true", "yes":
		return true, nil
	case "0", "off", "false", "no":
		return false, nil
	}
	return false, fmt.Errorf("%s must be on or off", name)
}

func (c *Config) manualCredentials() bool { return c.DatabaseURL != "" && c.GatewayToken != "" }
