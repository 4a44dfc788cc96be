package ops

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/spf13/cobra"
)

// Minimum versions doctor accepts. Nomad and Consul match ops/tools.sh,
// which builds exactly these when none good enough is on PATH (see
// version_ok there); PostgreSQL 13 is the oldest whose pg_dump and
// CREATE DATABASE options the postgres package uses.
var minVersions = map[string][2]int{"nomad": {1, 6}, "consul": {1, 14}, "postgresql": {13, 0}}

// check is the outcome of one doctor check.
type check struct {
	Name    string `json:"name"`
	OK      bool   `json:"ok"`
	Skipped bool   `json:"skipped,omitempty"`
	Version string `json:"version,omitempty"`
	Detail  string `json:"detail"`
}

type doctorOpts struct {
	nomad, consul, database, docker, image, driver string
	gateway                                        string // checked only when set explicitly
	skip                                           []string
	timeout                                        time.Duration
}

func newDoctorCommand(g *globals) *cobra.Command {
	var o doctorOpts
	cmd := &cobra.Command{
		Use:   "doctor",
		Short: "Check that Nomad, Consul, PostgreSQL, Docker and the slice image are there, with versions (exit 3 if not)",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cmd.Flags().Changed("gateway") || os.Getenv("SLICEHUB_GATEWAY_URL") != "" {
				o.gateway = g.gateway
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), o.timeout)
			defer cancel()
			checks := runDoctor(ctx, o)
			if g.json {
				if err := printJSON(cmd.OutOrStdout(), map[string]any{"checks": checks}); err != nil {
					return err
				}
			} else {
				tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
				for _, c := range checks {
					mark := "ok"
					switch {
					case c.Skipped:
						mark = "skip"
					case !c.OK:
						mark = "FAIL"
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", mark, c.Name, c.Version, c.Detail)
				}
				tw.Flush()
			}
			var failed []string
			for _, c := range checks {
				if !c.OK && !c.Skipped {
					failed = append(failed, c.Name)
				}
			}
			if len(failed) > 0 {
				return withCode(ExitUnhealthy, fmt.Errorf("%d of %d checks failed: %s", len(failed), len(checks), strings.Join(failed, ", ")))
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.nomad, "nomad-addr", envOr("NOMAD_ADDR", "http://127.0.0.1:4646"), "Nomad HTTP address (env NOMAD_ADDR)")
	f.StringVar(&o.consul, "consul-addr", envOr("CONSUL_HTTP_ADDR", "127.0.0.1:8500"), "Consul HTTP address (env CONSUL_HTTP_ADDR)")
	f.StringVar(&o.database, "database-url", os.Getenv("DATABASE_URL"), "gateway database URL (env DATABASE_URL)")
	f.StringVar(&o.docker, "docker-host", envOr("DOCKER_HOST", "unix:///var/run/docker.sock"), "Docker daemon (env DOCKER_HOST; unix:// or tcp://)")
	f.StringVar(&o.image, "image", os.Getenv("SLICEHUB_SLICE_IMAGE"), "slice image (env SLICEHUB_SLICE_IMAGE; default: the tag in bin/slice-image)")
	f.StringVar(&o.driver, "slice-driver", envOr("SLICEHUB_SLICE_DRIVER", "docker"), "docker, or raw_exec (then Docker and the image are not needed)")
	f.StringSliceVar(&o.skip, "skip", nil, "checks to skip: nomad, consul, postgresql, docker, image, gateway")
	f.DurationVar(&o.timeout, "timeout", 15*time.Second, "how long all checks may take")
	return cmd
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// runDoctor runs the checks side by side (each waits on a network answer)
// and returns them in a fixed order.
func runDoctor(ctx context.Context, o doctorOpts) []check {
	type job struct {
		name string
		fn   func(context.Context, doctorOpts) check
	}
	jobs := []job{{"nomad", checkNomad}, {"consul", checkConsul}, {"postgresql", checkPostgres}}
	if o.driver == "raw_exec" {
		jobs = append(jobs, job{"docker", skipped("slice driver raw_exec needs no Docker")},
			job{"image", skipped("slice driver raw_exec needs no image")})
	} else {
		jobs = append(jobs, job{"docker", checkDocker}, job{"image", checkImage})
	}
	if o.gateway != "" {
		jobs = append(jobs, job{"gateway", checkGateway})
	}
	out := make([]check, len(jobs))
	var wg sync.WaitGroup
	for i, j := range jobs {
		if slices.Contains(o.skip, j.name) {
			out[i] = check{Name: j.name, Skipped: true, Detail: "skipped (--skip)"}
			continue
		}
		wg.Go(func() {
			c := j.fn(ctx, o)
			c.Name = j.name
			out[i] = c
		})
	}
	wg.Wait()
	return out
}

func skipped(why string) func(context.Context, doctorOpts) check {
	return func(context.Context, doctorOpts) check { return check{Skipped: true, Detail: why} }
}

func fail(format string, args ...any) check { return check{Detail: fmt.Sprintf(format, args...)} }

// httpBase makes "127.0.0.1:8500" a URL, as the Consul and Nomad clients do.
func httpBase(addr string) string {
	if !strings.Contains(addr, "://") {
		addr = "http://" + addr
	}
	return strings.TrimRight(addr, "/")
}

var doctorHTTP = &http.Client{Timeout: 10 * time.Second}

func getJSON(ctx context.Context, hc *http.Client, u, tokenHeader, token string, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	if token != "" {
		req.Header.Set(tokenHeader, token)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s %s", u, resp.Status, strings.TrimSpace(string(body[:min(len(body), 200)])))
	}
	return json.Unmarshal(body, out)
}

// versionAtLeast compares "1.6.1" (or "v1.6.1", "16.4 (Debian …)") with a
// minimum major.minor.
func versionAtLeast(v string, want [2]int) bool {
	f := strings.Fields(v)
	if len(f) == 0 {
		return false
	}
	v = strings.TrimPrefix(f[0], "v")
	parts := strings.SplitN(v, ".", 3)
	major, err := strconv.Atoi(parts[0])
	if err != nil {
		return false
	}
	minor := 0
	if len(parts) > 1 {
		minor, _ = strconv.Atoi(strings.TrimRightFunc(parts[1], func(r rune) bool { return r < '0' || r > '9' }))
	}
	return major > want[0] || (major == want[0] && minor >= want[1])
}

func versionCheck(name, version, detail string) check {
	c := check{OK: true, Version: version, Detail: detail}
	if want := minVersions[name]; !versionAtLeast(version, want) {
		c.OK = false
		c.Detail = fmt.Sprintf("version %s is older than the %d.%d this platform needs; %s", version, want[0], want[1], detail)
	}
	return c
}

func checkNomad(ctx context.Context, o doctorOpts) check {
	base := httpBase(o.nomad)
	var self struct {
		Config struct {
			Version struct{ Version string }
		} `json:"config"`
	}
	if err := getJSON(ctx, doctorHTTP, base+"/v1/agent/self", "X-Nomad-Token", os.Getenv("NOMAD_TOKEN"), &self); err != nil {
		return fail("Nomad not reachable at %s: %v", base, err)
	}
	var nodes []struct {
		Status                string
		SchedulingEligibility string
		Drivers               map[string]struct{ Detected, Healthy bool }
	}
	if err := getJSON(ctx, doctorHTTP, base+"/v1/nodes", "X-Nomad-Token", os.Getenv("NOMAD_TOKEN"), &nodes); err != nil {
		return fail("Nomad at %s does not list its nodes: %v", base, err)
	}
	ready, withDriver := 0, 0
	for _, n := range nodes {
		if n.Status != "ready" || n.SchedulingEligibility != "eligible" {
			continue
		}
		ready++
		if d, ok := n.Drivers[o.driver]; ok && d.Healthy {
			withDriver++
		}
	}
	c := versionCheck("nomad", self.Config.Version.Version,
		fmt.Sprintf("%s: %d ready nodes, %d with a healthy %s driver", base, ready, withDriver, o.driver))
	if c.OK && withDriver == 0 {
		c.OK = false
		c.Detail = fmt.Sprintf("%s: no ready node has a healthy %s driver; slices cannot be placed", base, o.driver)
	}
	return c
}

func checkConsul(ctx context.Context, o doctorOpts) check {
	base := httpBase(o.consul)
	var self struct {
		Config struct{ Version string }
	}
	if err := getJSON(ctx, doctorHTTP, base+"/v1/agent/self", "X-Consul-Token", os.Getenv("CONSUL_HTTP_TOKEN"), &self); err != nil {
		return fail("Consul not reachable at %s: %v", base, err)
	}
	var leader string
	if err := getJSON(ctx, doctorHTTP, base+"/v1/status/leader", "X-Consul-Token", os.Getenv("CONSUL_HTTP_TOKEN"), &leader); err != nil || leader == "" {
		return check{Version: self.Config.Version, Detail: fmt.Sprintf("Consul at %s has no leader (%v)", base, err)}
	}
	return versionCheck("consul", self.Config.Version, fmt.Sprintf("%s: leader %s", base, leader))
}

func checkPostgres(ctx context.Context, o doctorOpts) check {
	if o.database == "" {
		return fail("no database URL: set --database-url or DATABASE_URL (or --skip postgresql)")
	}
	cfg, err := pgx.ParseConfig(o.database)
	if err != nil {
		// The parse error may quote the URL, password included.
		return fail("the database URL does not parse")
	}
	where := fmt.Sprintf("%s:%d/%s", cfg.Host, cfg.Port, cfg.Database)
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := pgx.ConnectConfig(cctx, cfg)
	if err != nil {
		return fail("PostgreSQL not reachable at %s: %v", where, err)
	}
	defer conn.Close(context.Background())
	var version string
	var migrated bool
	if err := conn.QueryRow(cctx, `SHOW server_version`).Scan(&version); err != nil {
		return fail("PostgreSQL at %s: %v", where, err)
	}
	if err := conn.QueryRow(cctx, `SELECT to_regclass('public.slices') IS NOT NULL`).Scan(&migrated); err != nil {
		return fail("PostgreSQL at %s: %v", where, err)
	}
	detail := where + ": gateway schema present"
	if !migrated {
		detail = where + ": gateway schema missing (run `slicehub migrate` or start the gateway)"
	}
	c := versionCheck("postgresql", version, detail)
	c.OK = c.OK && migrated
	return c
}

// dockerClient speaks HTTP to the Docker daemon on its unix socket (or a
// tcp:// DOCKER_HOST); base is the URL prefix to use with it.
func dockerClient(host string) (*http.Client, string, error) {
	u, err := url.Parse(host)
	if err != nil {
		return nil, "", err
	}
	switch u.Scheme {
	case "unix":
		path := u.Path
		tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		}}
		return &http.Client{Transport: tr, Timeout: 10 * time.Second}, "http://docker", nil
	case "tcp", "http":
		return doctorHTTP, "http://" + u.Host, nil
	}
	return nil, "", fmt.Errorf("DOCKER_HOST scheme %q not supported (unix:// or tcp://)", u.Scheme)
}

func checkDocker(ctx context.Context, o doctorOpts) check {
	hc, base, err := dockerClient(o.docker)
	if err != nil {
		return fail("%v", err)
	}
	var v struct{ Version, APIVersion string }
	if err := getJSON(ctx, hc, base+"/version", "", "", &v); err != nil {
		return fail("Docker not reachable at %s: %v", o.docker, err)
	}
	return check{OK: true, Version: v.Version, Detail: fmt.Sprintf("%s: API %s", o.docker, v.APIVersion)}
}

func checkImage(ctx context.Context, o doctorOpts) check {
	image := o.image
	if image == "" {
		b, err := os.ReadFile(filepath.Join(repoRoot(), "bin", "slice-image"))
		if err != nil {
			return fail("no slice image named: set --image or SLICEHUB_SLICE_IMAGE, or run `make image` (bin/slice-image)")
		}
		image = strings.TrimSpace(string(b))
	}
	hc, base, err := dockerClient(o.docker)
	if err != nil {
		return fail("%v", err)
	}
	var img struct {
		ID      string `json:"Id"`
		Created string
	}
	if err := getJSON(ctx, hc, base+"/images/"+url.PathEscape(image)+"/json", "", "", &img); err != nil {
		if strings.Contains(err.Error(), "404") {
			return fail("image %s is not in Docker: run `make image`", image)
		}
		return fail("image %s: %v", image, err)
	}
	return check{OK: true, Version: image, Detail: fmt.Sprintf("%s built %s", shortID(img.ID), img.Created)}
}

func shortID(id string) string {
	id = strings.TrimPrefix(id, "sha256:")
	return id[:min(12, len(id))]
}

func checkGateway(ctx context.Context, o doctorOpts) check {
	base := strings.TrimRight(o.gateway, "/")
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/readyz", nil)
	if err != nil {
		return fail("gateway URL %q: %v", base, err)
	}
	resp, err := doctorHTTP.Do(req)
	if err != nil {
		return fail("gateway not reachable at %s: %v", base, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return fail("gateway at %s not ready: %s %s", base, resp.Status, strings.TrimSpace(string(body)))
	}
	return check{OK: true, Detail: base + ": ready"}
}

// repoRoot finds the checkout slicectl runs from (for bin/slice-image):
// the working directory or a parent holding go.mod.
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
