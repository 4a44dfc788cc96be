package edge_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	consulapi "github.com/hashicorp/consul/api"
	nomadapi "github.com/hashicorp/nomad/api"

	"github.com/slicehub/slicehub"
	"github.com/slicehub/slicehub/jobs"
	"github.com/slicehub/slicehub/ops/nginx"
	"github.com/slicehub/slicehub/postgres"
	"github.com/slicehub/slicehub/testsupport"
)

// Docker, because the slices run the real image under the docker driver.
func TestMain(m *testing.M) { testsupport.Main(m, testsupport.Options{Docker: true}) }

const (
	users       = 3 // each with its own slice, signed up from its own address
	tabsPerUser = 4 // socket.io WebSockets per user held through the roll
)

// TestEdge runs the production layout: the edge job (nginx, TLS, upstreams
// from Consul) in front of the gateway job (two replicas) in front of the
// slices, all scheduled by Nomad. A browser-like client goes through TLS to
// its own slice over HTTP and socket.io; then the gateway replicas are
// rolled under a WebSocket load.
func TestEdge(t *testing.T) {
	p := startProduction(t)

	t.Run("static and edge-only paths", func(t *testing.T) { testStatic(t, p) })
	t.Run("the gateway sees the browser's address", func(t *testing.T) { testClientAddress(t, p) })

	// Every user signs up from its own loopback address (the signup
	// throttle is per client address, which nginx passes on) and is
	// answered by its own slice, over HTTP and socket.io.
	var bs []*browser
	for i := range users {
		b := p.newBrowser(t, i)
		b.signup(t, fmt.Sprintf("user%d@example.com", i))
		status, who := b.whoami(t)
		if status != http.StatusOK || who != b.sliceID {
			t.Fatalf("%s: GET /api/whoami = %d from slice %q; want 200 from its own slice %s", b.email, status, who, b.sliceID)
		}
		bs = append(bs, b)
	}
	if t.Failed() {
		return
	}
	hello, err := socketIOHello(t.Context(), bs[0], 20*time.Second)
	if err != nil || hello != bs[0].sliceID {
		t.Fatalf("socket.io over WebSocket through nginx: hello from slice %q (%v); want %s", hello, err, bs[0].sliceID)
	}

	t.Run("rolling restart under WebSocket load", func(t *testing.T) { testRollingRestart(t, p, bs) })
	t.Run("no gateway left", func(t *testing.T) { testNoGateway(t, p, bs[0]) })
}

// testNoGateway stops every replica: nginx, left with its placeholder
// upstream, must answer like the gateway does, JSON with a code and
// Retry-After, not an HTML error page.
func testNoGateway(t *testing.T, p *production, b *browser) {
	if _, _, err := p.nomad.Jobs().Deregister("gateway", false, nil); err != nil {
		t.Fatal(err)
	}
	var status int
	var body map[string]any
	testsupport.Eventually(t, 60*time.Second, "nginx answering by itself once no replica is left", func() (bool, error) {
		var err error
		status, body, err = b.do(t.Context(), "GET", "/api/whoami", nil)
		return err == nil && status == http.StatusServiceUnavailable && body["code"] == "unavailable", fmt.Errorf("%d %v %v", status, body, err)
	})
}

// testStatic checks what nginx answers by itself: the SPA from disk with the
// gateway's caching rules, the redirect to HTTPS, and the paths that never
// leave the private network.
func testStatic(t *testing.T, p *production) {
	b := p.newBrowser(t, 99)
	for _, c := range []struct {
		path, wantBody, wantCache string
		want                      int
	}{
		{"/app/", "<title>spa</title>", "no-cache", 200},
		{"/app/contacts/12", "<title>spa</title>", "no-cache", 200}, // a client-side route
		{"/app/assets/index-3f2a1b9c.js", "console.log(1)", "public, max-age=31536000, immutable", 200},
		{"/app/assets/missing-3f2a1b9c.js", "", "", 404}, // never index.html for a script
		{"/app/assets/missing.css", "", "", 404},
		{"/app/.env", "", "", 404},
		{"/metrics", "", "", 404},
		{"/readyz", "", "", 404},
		{"/internal/v1/bootstrap", "", "", 404},
	} {
		resp, body := b.get(t, c.path)
		if resp.StatusCode != c.want || !strings.Contains(body, c.wantBody) || resp.Header.Get("Cache-Control") != c.wantCache && c.want == 200 {
			t.Errorf("GET %s = %d, Cache-Control %q, body %.60q; want %d, %q, containing %q",
				c.path, resp.StatusCode, resp.Header.Get("Cache-Control"), body, c.want, c.wantCache, c.wantBody)
		}
		if resp.TLS == nil || resp.TLS.Version < tls.VersionTLS12 {
			t.Errorf("GET %s: not over TLS 1.2+", c.path)
		}
	}
	// Variants of the private paths: refused by the edge itself (nginx's
	// own 404, not the gateway's JSON), whatever the gateway's routing.
	for _, path := range []string{"/METRICS", "/Metrics", "/metrics/", "/metrics//", "/%6detrics", "//metrics",
		"/metrics?x=1", "/READYZ", "/readyz/", "/%72eadyz", "/INTERNAL/v1/bootstrap", "/internal", "/Internal/"} {
		resp, body := b.get(t, path)
		if resp.StatusCode != http.StatusNotFound || strings.Contains(body, `"code"`) {
			t.Errorf("GET %s = %d %.80q; want the edge's own 404", path, resp.StatusCode, body)
		}
	}
	// The landing page is the gateway's, through nginx, over HTTP/2.
	resp, _ := b.get(t, "/")
	if resp.StatusCode != 200 || resp.ProtoMajor != 2 || resp.Header.Get("Strict-Transport-Security") == "" {
		t.Errorf("GET / = %d over %s, HSTS %q; want 200 over HTTP/2 with HSTS", resp.StatusCode, resp.Proto, resp.Header.Get("Strict-Transport-Security"))
	}

	// Plain HTTP redirects to the same path over HTTPS.
	noFollow := &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	r, err := noFollow.Get(fmt.Sprintf("http://127.0.0.1:%d/login?x=1", p.httpPort))
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	if want := p.base + "/login?x=1"; r.StatusCode != http.StatusPermanentRedirect || r.Header.Get("Location") != want {
		t.Errorf("http:// GET /login = %d to %q; want 308 to %q", r.StatusCode, r.Header.Get("Location"), want)
	}

	// The private listener passes the bootstrap path only.
	r, err = noFollow.Get(fmt.Sprintf("http://127.0.0.1:%d/auth/me", p.internalPort))
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	if r.StatusCode != http.StatusNotFound {
		t.Errorf("private listener GET /auth/me = %d; want 404", r.StatusCode)
	}
}

// testClientAddress spends one address's signup budget while forging
// X-Forwarded-For differently on every request. nginx replaces the header
// with the real peer, so the gateway (which trusts nginx) must throttle that
// one address; the signups from other addresses that follow must still
// pass. The budget is per replica (5 each), hence up to 11 tries.
func testClientAddress(t *testing.T, p *production) {
	b := p.newBrowser(t, 98)
	for i := 1; ; i++ {
		req, _ := http.NewRequestWithContext(t.Context(), "POST", p.base+"/auth/signup", strings.NewReader("{"))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Origin", p.base)
		req.Header.Set("X-Forwarded-For", fmt.Sprintf("203.0.113.%d", i))
		resp, err := b.http.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusTooManyRequests {
			t.Logf("throttled at signup attempt %d from one address, forged X-Forwarded-For ignored", i)
			return
		}
		if resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("malformed signup %d: %d; want 400 (or 429 once the address's budget is spent)", i, resp.StatusCode)
		}
		if i == 11 {
			t.Fatal("11 signups from one address were never throttled: the gateway believes the client's X-Forwarded-For")
		}
	}
}

// production is the running layout.
type production struct {
	nomad  *nomadapi.Client
	consul *consulapi.Client
	db     *postgres.DB

	base                   string // https://127.0.0.1:<https port>
	httpPort, internalPort int
	roots                  *x509.CertPool

	gatewayVars map[string]any
}

// startProduction builds the gateway, makes a certificate and the SPA,
// stores the secrets as Nomad Variables, registers the edge and gateway
// jobs, and waits for both deployments and for a warm slice per user.
func startProduction(t *testing.T) *production {
	t.Helper()
	t0 := time.Now()
	st := testsupport.Stack(t)
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	nc, err := st.Nomad.Client()
	if err != nil {
		t.Fatal(err)
	}
	cc, err := st.Consul.Client()
	if err != nil {
		t.Fatal(err)
	}
	p := &production{nomad: nc, consul: cc}

	image := testsupport.SliceImage(t)
	binary := buildGateway(t, root)
	dbURL := testsupport.NewDatabase(t)
	t.Cleanup(func() { dumpLogsOnFailure(t, st.Nomad.DataDir) })
	// Registered after NewDatabase, so it runs before the database is
	// dropped under the replicas' feet.
	t.Cleanup(func() {
		for _, job := range []string{"gateway", "edge"} {
			_, _, _ = nc.Jobs().Deregister(job, true, nil)
		}
	})

	// The certificate, made the way an operator would, and trusted as the
	// browser's root instead of skipping verification.
	certDir := t.TempDir()
	run(t, root, "bash", filepath.Join(root, "ops", "nginx", "selfsigned.sh"), certDir, "127.0.0.1")
	certPEM, keyPEM := readFile(t, filepath.Join(certDir, "tls.crt")), readFile(t, filepath.Join(certDir, "tls.key"))
	p.roots = x509.NewCertPool()
	if !p.roots.AppendCertsFromPEM([]byte(certPEM)) {
		t.Fatal("selfsigned.sh wrote no PEM certificate")
	}

	// Secrets live in Nomad Variables, readable by their job only, never in
	// the job specification: the database, and the gateway's least-privilege
	// Consul and Nomad tokens (ACLs are on).
	putVar(t, nc, "nomad/jobs/gateway", map[string]string{"DATABASE_URL": dbURL,
		"CONSUL_HTTP_TOKEN": st.ACL.ConsulGateway, "NOMAD_TOKEN": st.ACL.NomadGateway})
	putVar(t, nc, "nomad/jobs/edge", map[string]string{"tls_cert": certPEM, "tls_key": keyPEM})

	httpsPort, httpPort, internalPort := freePort(t), freePort(t), freePort(t)
	p.base = fmt.Sprintf("https://127.0.0.1:%d", httpsPort)
	p.httpPort, p.internalPort = httpPort, internalPort

	registerJob(t, nc, jobs.Edge, map[string]any{
		"nginx_conf":    nginx.Template,
		"https_port":    strconv.Itoa(httpsPort),
		"http_port":     strconv.Itoa(httpPort),
		"internal_port": strconv.Itoa(internalPort),
		"spa_dir":       spaDir(t),
	})
	p.gatewayVars = map[string]any{
		"gateway_binary": binary,
		"release":        "v1",
		// ops/image.sh writes the profile next to the image tag.
		"slice_seccomp_profile": filepath.Join(root, "bin", "chromium-seccomp.json"),
		"wa_standin":            "true", // no internet here
		// Anything else goes through the settings map.
		"settings": map[string]string{"SLICEHUB_SESSION_IDLE": "48h"},
		// The edge's private listener: stable across gateway deploys.
		"bootstrap_url":      fmt.Sprintf("http://127.0.0.1:%d", internalPort),
		"consul_addr":        st.Consul.Addr,
		"nomad_addr":         st.Nomad.Addr,
		"slice_image":        image,
		"trusted_proxies":    "127.0.0.1", // nginx; the browsers come from 127.0.0.2 and up
		"min_warm":           strconv.Itoa(users),
		"max_slices":         strconv.Itoa(users), // no refill after the signups: a quiet machine for the roll
		"reconcile_interval": "2s",
	}
	version := registerJob(t, nc, jobs.Gateway, p.gatewayVars)
	waitDeployment(t, nc, "edge", 0, 90*time.Second)
	waitDeployment(t, nc, "gateway", version, 2*time.Minute)
	t.Logf("edge and 2 gateway replicas deployed in %s", time.Since(t0).Round(100*time.Millisecond))

	// The database URL went to the replicas without entering the job.
	job, _, err := nc.Jobs().Info("gateway", nil)
	if err != nil {
		t.Fatal(err)
	}
	stored, _ := json.Marshal(job)
	if u, _ := url.Parse(dbURL); u != nil {
		if pw, _ := u.User.Password(); pw == "" || bytes.Contains(stored, []byte(pw)) {
			t.Errorf("the stored gateway job contains the database password (or the URL has none)")
		}
	}

	if p.db, err = postgres.Open(t.Context(), dbURL, testsupport.Logger(t)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.db.Close)
	testsupport.Eventually(t, 2*time.Minute, fmt.Sprintf("%d warm slices", users), func() (bool, error) {
		warm, err := p.db.Slices(t.Context(), slicehub.StateWarm)
		return len(warm) >= users, fmt.Errorf("%d warm (%v)", len(warm), err)
	})
	t.Logf("platform ready (%d warm slices) in %s", users, time.Since(t0).Round(100*time.Millisecond))
	return p
}

// buildGateway builds cmd/slicehub from this checkout: the replicas run
// exactly the code under test.
func buildGateway(t *testing.T, root string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "slicehub")
	run(t, root, "go", "build", "-o", bin, "./cmd/slicehub")
	return bin
}

// spaDir writes a small SPA build: an index and a hashed asset.
func spaDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	// nginx's workers run as www-data: they must get into the directory,
	// whose parent the testing package makes 0700.
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	files := map[string]string{
		"index.html":                "<!doctype html><title>spa</title>",
		"assets/index-3f2a1b9c.js":  "console.log(1)",
		".env":                      "SECRET=1",
		"assets/contacts-list.html": "<p>partial</p>",
	}
	for name, body := range files {
		path := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func run(t *testing.T, dir string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, stderr.String())
	}
	return string(out)
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// freePort returns a port that was free on 127.0.0.1 a moment ago. It comes
// from the kernel's ephemeral range, which devenv keeps Nomad's dynamic
// ports out of.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func putVar(t *testing.T, nc *nomadapi.Client, path string, items map[string]string) {
	t.Helper()
	if _, _, err := nc.Variables().Update(&nomadapi.Variable{Path: path, Items: items}, nil); err != nil {
		t.Fatalf("nomad var put %s: %v", path, err)
	}
}

// registerJob parses hcl with vars through Nomad's API, registers it, and
// returns the job version it became.
func registerJob(t *testing.T, nc *nomadapi.Client, hcl string, vars map[string]any) uint64 {
	t.Helper()
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(vars)) {
		switch v := vars[k].(type) {
		case string:
			fmt.Fprintf(&b, "%s = %s\n", k, hclString(v))
		case map[string]string:
			fmt.Fprintf(&b, "%s = {\n", k)
			for _, mk := range slices.Sorted(maps.Keys(v)) {
				fmt.Fprintf(&b, "  %s = %s\n", hclString(mk), hclString(v[mk]))
			}
			b.WriteString("}\n")
		default:
			t.Fatalf("variable %s: unsupported type %T", k, v)
		}
	}
	job, err := nc.Jobs().ParseHCLOpts(&nomadapi.JobsParseRequest{JobHCL: hcl, Variables: b.String(), Canonicalize: true})
	if err != nil {
		t.Fatalf("parse job: %v", err)
	}
	if _, _, err := nc.Jobs().Register(job, nil); err != nil {
		t.Fatalf("register job %s: %v", *job.ID, err)
	}
	info, _, err := nc.Jobs().Info(*job.ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	return *info.Version
}

// hclString quotes s for an HCL variables file. JSON's escapes are a subset
// of HCL's; "${" and "%{" would start an interpolation or a directive.
func hclString(s string) string {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s)
	q := strings.TrimSuffix(buf.String(), "\n")
	return strings.NewReplacer("${", "$${", "%{", "%%{").Replace(q)
}

// waitDeployment waits for the job's deployment of version to succeed.
func waitDeployment(t *testing.T, nc *nomadapi.Client, job string, version uint64, timeout time.Duration) *nomadapi.Deployment {
	t.Helper()
	var d *nomadapi.Deployment
	testsupport.Eventually(t, timeout, fmt.Sprintf("deployment of %s version %d", job, version), func() (bool, error) {
		var err error
		// A replica that keeps crashing would otherwise be noticed only at
		// the healthy deadline, minutes later.
		allocs, _, err := nc.Jobs().Allocations(job, false, nil)
		if err != nil {
			return false, err
		}
		for _, a := range allocs {
			for task, ts := range a.TaskStates {
				if a.JobVersion == version && (ts.Restarts >= 2 || ts.Failed) {
					t.Fatalf("%s allocation %s: task %s restarted %d times (failed: %v); see its log below", job, a.ID[:8], task, ts.Restarts, ts.Failed)
				}
			}
		}
		d, _, err = nc.Jobs().LatestDeployment(job, nil)
		if err != nil || d == nil || d.JobVersion != version {
			return false, fmt.Errorf("no deployment of version %d yet (%v)", version, err)
		}
		switch d.Status {
		case "successful":
			return true, nil
		case "failed", "cancelled":
			t.Fatalf("deployment of %s version %d %s: %s", job, version, d.Status, d.StatusDescription)
		}
		return false, fmt.Errorf("%s: %s", d.Status, d.StatusDescription)
	})
	return d
}

// dumpLogsOnFailure prints the end of the gateway and nginx logs of every
// allocation: what the test sees is only the outside.
func dumpLogsOnFailure(t *testing.T, nomadDataDir string) {
	if !t.Failed() {
		return
	}
	for _, task := range []string{"gateway", "nginx"} {
		for _, stream := range []string{"stderr", "stdout"} {
			files, _ := filepath.Glob(filepath.Join(nomadDataDir, "alloc", "*", "alloc", "logs", task+"."+stream+".*"))
			for _, f := range files {
				b, err := os.ReadFile(f)
				if err != nil || len(b) == 0 {
					continue
				}
				if len(b) > 6000 {
					b = b[len(b)-6000:]
				}
				t.Logf("==== %s ====\n%s", f, b)
			}
		}
	}
}

// browser is one browser: a cookie jar, the test certificate as its only
// root, and its own source address, as distinct users have.
type browser struct {
	p       *production
	ip      net.IP
	http    *http.Client
	email   string
	sliceID string
}

func (p *production) newBrowser(t *testing.T, n int) *browser {
	ip := net.IPv4(127, 0, 0, byte(10+n))
	jar, _ := cookiejar.New(nil)
	dialer := &net.Dialer{LocalAddr: &net.TCPAddr{IP: ip}, Timeout: 5 * time.Second}
	tr := &http.Transport{
		DialContext:       dialer.DialContext,
		TLSClientConfig:   &tls.Config{RootCAs: p.roots},
		ForceAttemptHTTP2: true, // what browsers negotiate with nginx
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &browser{p: p, ip: ip, http: &http.Client{Jar: jar, Transport: tr, Timeout: 30 * time.Second}}
}

// do sends a JSON request the way the SPA does (same origin).
func (b *browser) do(ctx context.Context, method, path string, body any) (int, map[string]any, error) {
	var rd io.Reader
	if body != nil {
		j, _ := json.Marshal(body)
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequestWithContext(ctx, method, b.p.base+path, rd)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Origin", b.p.base)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := b.http.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, nil, err
	}
	var out map[string]any
	if len(raw) > 0 && json.Unmarshal(raw, &out) != nil {
		return resp.StatusCode, nil, fmt.Errorf("%s %s: %d, not JSON: %.200q", method, path, resp.StatusCode, raw)
	}
	return resp.StatusCode, out, nil
}

func (b *browser) get(t *testing.T, path string) (*http.Response, string) {
	t.Helper()
	resp, err := b.http.Get(b.p.base + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp, string(raw)
}

func (b *browser) signup(t *testing.T, email string) {
	t.Helper()
	status, body, err := b.do(t.Context(), "POST", "/auth/signup", map[string]string{"email": email, "password": "correct horse battery"})
	if err != nil || status != http.StatusCreated {
		t.Fatalf("signup %s: %d %v %v", email, status, body, err)
	}
	sl, _ := body["slice"].(map[string]any)
	b.email, b.sliceID = email, fmt.Sprint(sl["id"])
	if _, ok := slicehub.ParseSliceID(b.sliceID); !ok {
		t.Fatalf("signup %s: no slice id in %v", email, body)
	}
}

// whoami asks the browser's slice who it is, waiting while it starts (503).
func (b *browser) whoami(t *testing.T) (status int, sliceID string) {
	t.Helper()
	var body map[string]any
	testsupport.Eventually(t, 90*time.Second, b.email+": GET /api/whoami answered by a slice", func() (bool, error) {
		var err error
		status, body, err = b.do(t.Context(), "GET", "/api/whoami", nil)
		return err == nil && status != http.StatusServiceUnavailable, fmt.Errorf("%d %v %v", status, body, err)
	})
	return status, fmt.Sprint(body["slice_id"])
}

func (b *browser) cookieHeader() string {
	var parts []string
	for _, c := range b.http.Jar.Cookies(mustURL(b.p.base)) {
		parts = append(parts, c.Name+"="+c.Value)
	}
	return strings.Join(parts, "; ")
}

func mustURL(s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		panic(err)
	}
	return u
}
