package main

import (
	"flag"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Config is every setting of the gateway daemon. Each has a flag and an
// environment variable; the flag wins. The README's configuration table is
// generated from the same list (see `slicehub serve -h`).
type Config struct {
	Addr              string
	InternalAddr      string
	BootstrapURL      string
	DatabaseURL       string
	ConsulAddr        string
	NomadAddr         string
	MinWarm           int
	MaxSlices         int
	ReconcileInterval time.Duration
	SliceDriver       string // docker or raw_exec
	SliceImage        string
	SliceBinary       string
	SliceDBHost       string
	SliceMemoryMB     int
	SliceMemoryMaxMB  int
	SliceSeccomp      string
	WAURL             string
	WAStandin         bool
	CookieSecure      bool
	TrustedProxies    string
	AllowedOrigins    string
	SessionIdle       time.Duration
	SessionAbsolute   time.Duration
	LogLevel          string
	LogFormat         string
	StateDir          string // dev only
	Datacenter        string
}

// settings is the one list of configuration: flag, env var, default, usage.
var settings = []struct {
	Flag, Env, Default, Usage string
}{
	{"addr", "SLICEHUB_ADDR", ":8080", "public listen address of the gateway"},
	{"internal-addr", "SLICEHUB_INTERNAL_ADDR", "127.0.0.1:8081", "internal listen address (slice bootstrap); never expose it publicly"},
	{"bootstrap-url", "SLICEHUB_BOOTSTRAP_URL", "", "URL slices use to reach the internal listener (default http://<internal-addr>)"},
	{"database-url", "DATABASE_URL", "", "gateway PostgreSQL URL (dev: a private PostgreSQL when empty)"},
	{"consul-addr", "CONSUL_HTTP_ADDR", "127.0.0.1:8500", "Consul HTTP address"},
	{"nomad-addr", "NOMAD_ADDR", "http://127.0.0.1:4646", "Nomad HTTP address"},
	{"min-warm", "SLICEHUB_MIN_WARM", "1", "warm, unassigned slices to keep ready"},
	{"max-slices", "SLICEHUB_MAX_SLICES", "50", "running slices in all (warm, starting and assigned)"},
	{"reconcile-interval", "SLICEHUB_RECONCILE_INTERVAL", "10s", "period of the full reconcile (changes also trigger one)"},
	{"slice-driver", "SLICEHUB_SLICE_DRIVER", "docker", "docker or raw_exec (raw_exec runs bin/slice without a container)"},
	{"slice-image", "SLICEHUB_SLICE_IMAGE", "", "slice image for the docker driver (default: the tag in bin/slice-image)"},
	{"slice-binary", "SLICEHUB_SLICE_BINARY", "", "slice binary for the raw_exec driver (default: bin/slice)"},
	{"slice-db-host", "SLICEHUB_SLICE_DB_HOST", "", "PostgreSQL host as seen from slices (default: the gateway's)"},
	{"slice-memory-mb", "SLICEHUB_SLICE_MEMORY_MB", "300", "memory reservation of a slice"},
	{"slice-memory-max-mb", "SLICEHUB_SLICE_MEMORY_MAX_MB", "1024", "memory limit of a slice (oversubscription)"},
	{"slice-seccomp-profile", "SLICEHUB_SLICE_SECCOMP_PROFILE", "", "seccomp profile path on every Nomad client for Chromium's sandbox (default: bin/chromium-seccomp.json from make image)"},
	{"wa-url", "SLICEHUB_WA_URL", "", "URL the slices' Chromium opens (default: WhatsApp Web; dev: the stand-in page)"},
	{"wa-standin", "SLICEHUB_WA_STANDIN", "false", "slices serve the local stand-in for WhatsApp Web (no internet; `slicehub dev` turns it on)"},
	{"cookie-secure", "SLICEHUB_COOKIE_SECURE", "false", "mark cookies Secure (set true behind TLS)"},
	{"trusted-proxies", "SLICEHUB_TRUSTED_PROXIES", "", "comma-separated proxies whose X-Forwarded-For is believed"},
	{"allowed-origins", "SLICEHUB_ALLOWED_ORIGINS", "", "comma-separated extra origins allowed for WebSockets and JSON posts"},
	{"session-idle", "SLICEHUB_SESSION_IDLE", "72h", "a session ends after this long without use"},
	{"session-absolute", "SLICEHUB_SESSION_ABSOLUTE", "720h", "a session ends this long after login, used or not"},
	{"log-level", "SLICEHUB_LOG_LEVEL", "info", "debug, info, warn or error"},
	{"log-format", "SLICEHUB_LOG_FORMAT", "json", "json or text"},
	{"state-dir", "SLICEHUB_STATE_DIR", ".slicehub", "dev only: where the private PostgreSQL and agents keep their data"},
	{"datacenter", "SLICEHUB_DATACENTER", "dc1", "Nomad datacenter slices run in"},
}

// parseConfig fills a Config from args and the environment.
func parseConfig(name string, args []string, getenv func(string) string) (Config, *flag.FlagSet, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	vals := map[string]*string{}
	for _, s := range settings {
		def := s.Default
		if v := getenv(s.Env); v != "" {
			def = v
		}
		vals[s.Flag] = fs.String(s.Flag, def, fmt.Sprintf("%s (env %s)", s.Usage, s.Env))
	}
	if err := fs.Parse(args); err != nil {
		return Config{}, fs, err
	}
	var errs []string
	get := func(f string) string { return strings.TrimSpace(*vals[f]) }
	atoi := func(f string) int {
		n, err := strconv.Atoi(get(f))
		if err != nil || n < 0 {
			errs = append(errs, fmt.Sprintf("-%s: want a whole number, got %q", f, get(f)))
		}
		return n
	}
	dur := func(f string) time.Duration {
		d, err := time.ParseDuration(get(f))
		if err != nil || d <= 0 {
			errs = append(errs, fmt.Sprintf("-%s: want a duration such as 10s, got %q", f, get(f)))
		}
		return d
	}
	boolean := func(f string) bool {
		b, err := strconv.ParseBool(get(f))
		if err != nil {
			errs = append(errs, fmt.Sprintf("-%s: want true or false, got %q", f, get(f)))
		}
		return b
	}
	c := Config{
		Addr: get("addr"), InternalAddr: get("internal-addr"), BootstrapURL: get("bootstrap-url"),
		DatabaseURL: get("database-url"), ConsulAddr: get("consul-addr"), NomadAddr: get("nomad-addr"),
		MinWarm: atoi("min-warm"), MaxSlices: atoi("max-slices"), ReconcileInterval: dur("reconcile-interval"),
		SliceDriver: get("slice-driver"), SliceImage: get("slice-image"), SliceBinary: get("slice-binary"),
		SliceDBHost: get("slice-db-host"), SliceMemoryMB: atoi("slice-memory-mb"), SliceMemoryMaxMB: atoi("slice-memory-max-mb"),
		SliceSeccomp: get("slice-seccomp-profile"), WAURL: get("wa-url"), WAStandin: boolean("wa-standin"),
		CookieSecure: boolean("cookie-secure"), TrustedProxies: get("trusted-proxies"), AllowedOrigins: get("allowed-origins"),
		SessionIdle: dur("session-idle"), SessionAbsolute: dur("session-absolute"),
		LogLevel: get("log-level"), LogFormat: get("log-format"), StateDir: get("state-dir"), Datacenter: get("datacenter"),
	}
	if c.SliceDriver != "docker" && c.SliceDriver != "raw_exec" {
		errs = append(errs, fmt.Sprintf("-slice-driver: want docker or raw_exec, got %q", c.SliceDriver))
	}
	if c.SliceMemoryMaxMB < c.SliceMemoryMB {
		errs = append(errs, "-slice-memory-max-mb must be at least -slice-memory-mb")
	}
	if len(errs) > 0 {
		return c, fs, fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return c, fs, nil
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
