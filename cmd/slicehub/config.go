package main

import (
	"flag"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/slicehub/slicehub/scheduler"
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
	ConsulToken       string
	NomadToken        string
	MinWarm           int
	MaxSlices         int
	ReconcileInterval time.Duration
	SliceDriver       string // docker, raw_exec or farm
	SliceImage        string
	SliceBinary       string
	SliceDBHost       string
	SliceMemoryMB     int
	SliceMemoryMaxMB  int
	SliceCPUMHz       int
	SliceSeccomp      string
	SliceNetwork      string
	SliceProfilesDir  string
	BootstrapAddr     string
	WarmTTL           time.Duration
	Admission         scheduler.Admission
	DumpDir           string
	DBRetention       time.Duration
	WAURL             string
	WAStandin         bool
	WAStandinWeight   string
	CookieSecure      bool
	EventLoop         bool
	TrustedProxies    string
	AllowedOrigins    string
	SessionIdle       time.Duration
	PublicURL         string
	SPADir            string
	SMTPAddr          string
	SMTPFrom          string
	SMTPUser          string
	SMTPPassword      string
	SessionAbsolute   time.Duration
	UploadTimeout     time.Duration
	LogLevel          string
	LogFormat         string
	StateDir          string // dev only
	Datacenter        string
	Billing           BillingSettings   // billing.go
	Telemetry         TelemetrySettings // telemetry.go
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
	{"consul-token", "CONSUL_HTTP_TOKEN", "", "Consul ACL token: service and node read, KV under slicehub/, sessions (jobs/README.md); prefer the variable to the flag"},
	{"nomad-token", "NOMAD_TOKEN", "", "Nomad ACL token: the slice job's register, dispatch, read and stop, logs, nodes (jobs/README.md); prefer the variable to the flag"},
	{"min-warm", "SLICEHUB_MIN_WARM", "1", "warm, unassigned slices to keep ready"},
	{"max-slices", "SLICEHUB_MAX_SLICES", "50", "running slices in all (warm, starting and assigned)"},
	{"reconcile-interval", "SLICEHUB_RECONCILE_INTERVAL", "10s", "period of the full reconcile (changes also trigger one)"},
	{"slice-driver", "SLICEHUB_SLICE_DRIVER", "docker", "docker, raw_exec (runs bin/slice without a container) or farm (load tests only: mock_driver slices served by one `slice farm` process)"},
	{"slice-image", "SLICEHUB_SLICE_IMAGE", "", "slice image for the docker driver (default: the tag in bin/slice-image)"},
	{"slice-binary", "SLICEHUB_SLICE_BINARY", "", "slice binary for the raw_exec driver (default: bin/slice)"},
	{"slice-db-host", "SLICEHUB_SLICE_DB_HOST", "", "PostgreSQL host as seen from slices (default: the gateway's)"},
	{"slice-memory-mb", "SLICEHUB_SLICE_MEMORY_MB", "360", "memory reservation of a slice (docker, raw_exec): measured typical anon+shmem plus 15% (jobs/README.md)"},
	{"slice-memory-max-mb", "SLICEHUB_SLICE_MEMORY_MAX_MB", "1536", "memory limit of a slice (oversubscription): the heavy profile's governor threshold plus 512 MiB"},
	{"slice-cpu-mhz", "SLICEHUB_SLICE_CPU_MHZ", "100", "CPU share of a slice in MHz (docker, raw_exec), sized from measured idle use: a weight, not a cap"},
	{"warm-ttl", "SLICEHUB_WARM_TTL", "0s", "recycle a warm slice that waited this long for a user (0s: never)"},
	{"admit-dispatches", "SLICEHUB_ADMIT_DISPATCHES", "0", "admission: slices dispatched and not yet healthy at once per Nomad node; the rest wait in line and see their place (0: no cap)"},
	{"admit-pairings", "SLICEHUB_ADMIT_PAIRINGS", "0", "admission: users shown a QR code at once per host; the rest wait in line on the workspace page (0: no cap)"},
	{"admit-imports", "SLICEHUB_ADMIT_IMPORTS", "0", "admission: slices linking or importing their WhatsApp history at once per host; holds new QR codes back too (0: no cap)"},
	{"admit-pairing-hold", "SLICEHUB_ADMIT_PAIRING_HOLD", "5m", "admission: how long a user keeps a granted QR code without linking before the next in line gets it"},
	{"admit-import-hold", "SLICEHUB_ADMIT_IMPORT_HOLD", "3m", "admission: the longest a linked slice's import permit is held, granted once per link (an open workspace page gives it back when the import ends)"},
	{"dump-dir", "SLICEHUB_DUMP_DIR", "", "where the final pg_dump of each retired slice goes (dev: <state-dir>/dumps); without it retired databases are kept"},
	{"db-retention", "SLICEHUB_DB_RETENTION", "720h", "how long a retired slice's database is kept after its final dump"},
	{"slice-network", "SLICEHUB_SLICE_NETWORK", "host", "Docker network of docker-driver slices: a bridge behind the slice firewall (jobs/README.md; `slicehub dev` makes one). host: the host's network, where a slice reaches every agent on its node"},
	{"slice-profiles-dir", "SLICEHUB_SLICE_PROFILES_DIR", "", "directory of the slices' Chromium profiles on every Nomad client (default: the path of the clients' host volume slice-profiles)"},
	{"bootstrap-addr", "SLICEHUB_BOOTSTRAP_ADDR", "", "a second internal listener that serves the bootstrap endpoint only, for slices on a bridge (the slice network's gateway address); -bootstrap-url then defaults to it"},
	{"slice-seccomp-profile", "SLICEHUB_SLICE_SECCOMP_PROFILE", "", "seccomp profile path on every Nomad client for Chromium's sandbox (default: bin/chromium-seccomp.json from make image)"},
	{"wa-url", "SLICEHUB_WA_URL", "", "URL the slices' Chromium opens (default: WhatsApp Web; dev: the stand-in page)"},
	{"wa-standin", "SLICEHUB_WA_STANDIN", "false", "slices serve the local stand-in for WhatsApp Web (no internet; `slicehub dev` turns it on)"},
	{"wa-standin-weight", "SLICEHUB_WA_STANDIN_WEIGHT", "", "the stand-in page's weight model for every slice: light, typical or heavy (slice/standin/README.md; figures taken with it are modelled); empty: none"},
	{"cookie-secure", "SLICEHUB_COOKIE_SECURE", "false", "mark cookies Secure (set true behind TLS)"},
	{"event-loop", "SLICEHUB_EVENT_LOOP", "true", "proxy plain /api and /socket.io requests on the gateway's epoll event loops (false: every connection on the fasthttp server)"},
	{"trusted-proxies", "SLICEHUB_TRUSTED_PROXIES", "", "comma-separated proxies whose X-Forwarded-For is believed"},
	{"allowed-origins", "SLICEHUB_ALLOWED_ORIGINS", "", "comma-separated extra origins allowed for WebSockets and JSON posts"},
	{"public-url", "SLICEHUB_PUBLIC_URL", "", "the site as users reach it (https://app.example.com); password-reset links use it"},
	{"spa-dir", "SLICEHUB_SPA_DIR", "", "directory of a build of the shared CRM app, served under /app/ (empty: the build embedded in this binary; \"off\": no app)"},
	{"smtp-addr", "SLICEHUB_SMTP_ADDR", "", "SMTP server host:port for password-reset mail (empty: mails are logged)"},
	{"smtp-from", "SLICEHUB_SMTP_FROM", "Slicehub <no-reply@localhost>", "From address of the platform's mail"},
	{"smtp-user", "SLICEHUB_SMTP_USER", "", "SMTP user name (empty: no authentication)"},
	{"smtp-password", "SLICEHUB_SMTP_PASSWORD", "", "SMTP password. A secret: set it in the environment"},
	{"session-idle", "SLICEHUB_SESSION_IDLE", "72h", "a session ends after this long without use"},
	{"session-absolute", "SLICEHUB_SESSION_ABSOLUTE", "720h", "a session ends this long after login, used or not"},
	{"upload-timeout", "SLICEHUB_UPLOAD_TIMEOUT", "10m", "time a request body over 64 KiB (an upload, a backup restore) has to arrive; smaller requests have 30s"},
	{"log-level", "SLICEHUB_LOG_LEVEL", "info", "debug, info, warn or error"},
	{"log-format", "SLICEHUB_LOG_FORMAT", "json", "json or text"},
	{"state-dir", "SLICEHUB_STATE_DIR", ".slicehub", "dev only: where the private PostgreSQL and agents keep their data"},
	{"datacenter", "SLICEHUB_DATACENTER", "dc1", "Nomad datacenter slices run in"},
	{"stripe-secret-key", "STRIPE_SECRET_KEY", "", "Stripe secret key (sk_...); empty turns billing off. A secret: set it in the environment"},
	{"stripe-webhook-secret", "STRIPE_WEBHOOK_SECRET", "", "signing secret (whsec_...) of the /billing/webhook endpoint. A secret: set it in the environment"},
	{"stripe-api-url", "SLICEHUB_STRIPE_API_URL", "", "Stripe API base URL (empty: Stripe itself; stripe-mock in development)"},
	{"billing-price", "SLICEHUB_BILLING_PRICE", "", "Stripe price id of the regular plan"},
	{"billing-amount", "SLICEHUB_BILLING_AMOUNT", "900", "monthly amount of the regular plan, in cents, as shown to users"},
	{"billing-currency", "SLICEHUB_BILLING_CURRENCY", "usd", "currency of the plans (ISO 4217)"},
	{"billing-launch-price", "SLICEHUB_BILLING_LAUNCH_PRICE", "", "Stripe price id of the launch plan, for users who signed up before -billing-launch-until"},
	{"billing-launch-amount", "SLICEHUB_BILLING_LAUNCH_AMOUNT", "450", "monthly amount of the launch plan, in cents"},
	{"billing-launch-until", "SLICEHUB_BILLING_LAUNCH_UNTIL", "", "sign-ups before this date (YYYY-MM-DD, UTC) get the launch price"},
	{"billing-launch-coupon", "SLICEHUB_BILLING_LAUNCH_COUPON", "", "Stripe coupon that brings the regular price to the launch amount while Stripe says it is valid"},
	{"billing-trial-days", "SLICEHUB_BILLING_TRIAL_DAYS", "0", "free trial of a new subscription, in days"},
	{"billing-grace", "SLICEHUB_BILLING_GRACE", "72h", "how long a past-due subscription keeps its slice running"},
	{"billing-retention", "SLICEHUB_BILLING_RETENTION", "720h", "how long a canceled account's suspended slice is kept before its data is exported and it is retired"},
	{"billing-export-dir", "SLICEHUB_BILLING_EXPORT_DIR", "", "where users' data exports are written (default <state-dir>/billing-exports)"},
	{"billing-check-interval", "SLICEHUB_BILLING_CHECK_INTERVAL", "1m", "period of billing's check for grace and retention that ran out"},
	{"telemetry-interval", "SLICEHUB_TELEMETRY_INTERVAL", "60s", "period of the leader's telemetry collection (slices, nodes) and alert evaluation"},
	{"telemetry-retention", "SLICEHUB_TELEMETRY_RETENTION", "168h", "how long telemetry samples and resolved alerts are kept"},
	{"alert-webhook-url", "SLICEHUB_ALERT_WEBHOOK_URL", "", "Slack-compatible webhook that receives each alert and its resolution (empty: alerts are only logged and shown on the dashboard). A secret: set it in the environment"},
	{"alert-capacity-percent", "SLICEHUB_ALERT_CAPACITY_PERCENT", "90", "alert when the nodes' reserved memory reaches this percentage of their allocatable memory (0: off)"},
	{"alert-memory-percent", "SLICEHUB_ALERT_MEMORY_PERCENT", "90", "alert when a slice's memory reaches this percentage of -slice-memory-max-mb (0: off)"},
	{"alert-whatsapp-down", "SLICEHUB_ALERT_WHATSAPP_DOWN", "10m", "alert when an assigned slice's WhatsApp is disconnected (or does not answer) for this long"},
	{"alert-warm-empty", "SLICEHUB_ALERT_WARM_EMPTY", "2m", "alert when the warm pool stays empty this long while -min-warm wants slices"},
	{"alert-governor-restarts", "SLICEHUB_ALERT_GOVERNOR_RESTARTS", "3", "alert when a slice's memory governor restarts Chromium this many times within -alert-governor-window (0: off)"},
	{"alert-governor-window", "SLICEHUB_ALERT_GOVERNOR_WINDOW", "6h", "the window of -alert-governor-restarts"},
}

// parseConfig fills a Config from args and the environment.
func parseConfig(name string, args []string, getenv func(string) string) (Config, *flag.FlagSet, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	vals := map[string]*string{}
	for _, s := range settings {
		def := s.Default
		// A secret from the environment is not made the flag's default,
		// which -h would print; it is read below when the flag is unset.
		if v := getenv(s.Env); v != "" && !secretOrWebhook(s.Env) {
			def = v
		}
		vals[s.Flag] = fs.String(s.Flag, def, fmt.Sprintf("%s (env %s)", s.Usage, s.Env))
	}
	if err := fs.Parse(args); err != nil {
		return Config{}, fs, err
	}
	for _, s := range settings {
		if secretOrWebhook(s.Env) && *vals[s.Flag] == "" {
			*vals[s.Flag] = getenv(s.Env)
		}
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
	durOrZero := func(f string) time.Duration {
		d, err := time.ParseDuration(get(f))
		if err != nil || d < 0 {
			errs = append(errs, fmt.Sprintf("-%s: want a duration such as 24h, or 0s, got %q", f, get(f)))
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
		ConsulToken: get("consul-token"), NomadToken: get("nomad-token"),
		MinWarm: atoi("min-warm"), MaxSlices: atoi("max-slices"), ReconcileInterval: dur("reconcile-interval"),
		SliceDriver: get("slice-driver"), SliceImage: get("slice-image"), SliceBinary: get("slice-binary"),
		SliceDBHost: get("slice-db-host"), SliceMemoryMB: atoi("slice-memory-mb"), SliceMemoryMaxMB: atoi("slice-memory-max-mb"),
		SliceCPUMHz: atoi("slice-cpu-mhz"),
		WarmTTL:     durOrZero("warm-ttl"), DumpDir: get("dump-dir"), DBRetention: dur("db-retention"),
		Admission: scheduler.Admission{Dispatches: atoi("admit-dispatches"), Pairings: atoi("admit-pairings"),
			Imports: atoi("admit-imports"), PairingHold: dur("admit-pairing-hold"), ImportHold: dur("admit-import-hold")},
		SliceNetwork: get("slice-network"), SliceProfilesDir: get("slice-profiles-dir"), BootstrapAddr: get("bootstrap-addr"),
		SliceSeccomp: get("slice-seccomp-profile"), WAURL: get("wa-url"), WAStandin: boolean("wa-standin"), WAStandinWeight: get("wa-standin-weight"),
		CookieSecure: boolean("cookie-secure"), EventLoop: boolean("event-loop"), TrustedProxies: get("trusted-proxies"), AllowedOrigins: get("allowed-origins"),
		PublicURL: get("public-url"), SPADir: get("spa-dir"), SMTPAddr: get("smtp-addr"), SMTPFrom: get("smtp-from"),
		SMTPUser: get("smtp-user"), SMTPPassword: get("smtp-password"),
		SessionIdle: dur("session-idle"), SessionAbsolute: dur("session-absolute"), UploadTimeout: dur("upload-timeout"),
		LogLevel: get("log-level"), LogFormat: get("log-format"), StateDir: get("state-dir"), Datacenter: get("datacenter"),
	}
	c.Billing = parseBilling(get, atoi, dur, &errs)
	c.Telemetry = parseTelemetry(get, atoi, dur, &errs)
	if c.SliceDriver != "docker" && c.SliceDriver != "raw_exec" && c.SliceDriver != "farm" {
		errs = append(errs, fmt.Sprintf("-slice-driver: want docker, raw_exec or farm, got %q", c.SliceDriver))
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
