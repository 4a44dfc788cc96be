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
//   - the small CRM (contacts and notes) kept in the slice's own PostgreSQL
//     database, migrated with goose at start.
//
// The WhatsApp side (a Chromium supervised through chromedp) is not here yet.
// It will drive a [StateHolder]; everything that reports the state reads it
// through the narrow [StateSource] interface.
package slice

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"time"

	"github.com/slicehub/slicehub"
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

	// ProfileDir is where Chromium's profile will live (a host volume that
	// survives the container). Empty means none.
	ProfileDir string

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
}

// ConfigFromEnv reads the task environment. getenv is os.Getenv in main.
//
//	SLICE_ID                 slice id (the job sets it from NOMAD_META_slice_id)
//	SLICE_ADDR               listen address; default ":$NOMAD_PORT_http"
//	NOMAD_PORT_http          the allocation's dynamic port
//	NOMAD_ALLOC_ID           allocation id, sent with the bootstrap request
//	NOMAD_SECRETS_DIR        per-allocation secrets dir; credentials.json goes there
//	DATABASE_URL, SLICEHUB_GATEWAY_TOKEN   both set: skip the bootstrap
//	SLICEHUB_BOOTSTRAP_URL   the gateway's base URL for the bootstrap call
//	SLICE_PROFILE_DIR        Chromium profile directory
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
	}
	if c.Addr == "" {
		if p := getenv("NOMAD_PORT_http"); p != "" {
			c.Addr = ":" + p
		}
	}
	if dir := getenv("NOMAD_SECRETS_DIR"); dir != "" {
		c.CredentialsFile = filepath.Join(dir, "credentials.json")
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
	}
	return nil
}

func (c *Config) manualCredentials() bool { return c.DatabaseURL != "" && c.GatewayToken != "" }
