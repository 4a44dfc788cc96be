package chaos

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"text/template"
	"time"

	"github.com/slicehub/slicehub/ops/nginx"
	"github.com/slicehub/slicehub/testsupport"
)

// edge is the nginx in front of the gateway replicas, as production runs
// it: the chaos load reaches the platform only through it, so that a fault
// costs the users what it would cost them behind the real edge (nginx's
// own retries of idempotent requests included, and nothing more).
type edge struct {
	addr string // https listener, 127.0.0.1:port
	tls  *tls.Config
	cmd  *exec.Cmd
	done chan struct{}
	log  string // nginx's stdout and stderr: the access log is on stdout
}

// retries counts the requests in the edge's access log so far that nginx
// sent to more than one replica (its upstream field lists each try:
// "upstream=a:1, b:2"): the retries production's edge makes on its own.
func (e *edge) retries() (int, error) {
	b, err := os.ReadFile(e.log)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, line := range bytes.Split(b, []byte("\n")) {
		if i := bytes.Index(line, []byte(" upstream=")); i >= 0 {
			rest := line[i+len(" upstream="):]
			if j := bytes.Index(rest, []byte(" status=")); j >= 0 && bytes.Contains(rest[:j], []byte(", ")) {
				n++
			}
		}
	}
	return n, nil
}

// upstream is what consul-template's `service` returns, as the template
// reads it.
type upstream struct {
	Address string
	Port    int
}

// startEdge renders the production template (ops/nginx/slicehub.conf.ctmpl)
// with the replicas as its upstreams and a self-signed certificate, and
// runs nginx with the edge job's arguments. consul-template would remove a
// dead replica from the list within about a second; here the list stays as
// it was rendered, which is the edge during that second: nginx's own
// max_fails/proxy_next_upstream is what steers around the dead replica.
func startEdge(t *testing.T, gws []*gateway) *edge {
	t.Helper()
	bin, err := exec.LookPath("nginx")
	if err != nil {
		t.Fatalf("nginx is needed for the chaos edge (apt install nginx): %v", err)
	}
	dir := t.TempDir()
	// nginx's workers (nobody) read the task directory's temp paths.
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	secrets := filepath.Join(dir, "secrets")
	if err := os.Mkdir(secrets, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("bash", filepath.Join(root(), "ops", "nginx", "selfsigned.sh"), secrets, "127.0.0.1").CombinedOutput(); err != nil {
		t.Fatalf("ops/nginx/selfsigned.sh: %v\n%s", err, out)
	}
	e := &edge{addr: testsupport.FreeAddr(t), done: make(chan struct{})}
	_, httpsPort, _ := net.SplitHostPort(e.addr)
	env := map[string]string{
		"NOMAD_TASK_DIR":    dir,
		"NOMAD_SECRETS_DIR": secrets,
		"NOMAD_ADDR_https":  e.addr,
		"NOMAD_PORT_https":  httpsPort,
		"NOMAD_ADDR_http":   testsupport.FreeAddr(t),
		// Slices bootstrap from replica b directly (see TestChaos); the
		// edge's private listener is rendered but unused.
		"NOMAD_ADDR_internal": testsupport.FreeAddr(t),
	}
	var public, internal []upstream
	for _, g := range gws {
		public = append(public, hostPort(t, g.public))
		internal = append(internal, hostPort(t, g.internal))
	}
	tmpl, err := template.New("edge").Funcs(template.FuncMap{
		"env": func(k string) string { return env[k] },
		"service": func(name string) []upstream {
			if name == "gateway-internal" {
				return internal
			}
			return public // "gateway" and "gateway|any"
		},
	}).Parse(nginx.Template)
	if err != nil {
		t.Fatalf("parsing the edge template: %v", err)
	}
	var conf bytes.Buffer
	if err := tmpl.Execute(&conf, nil); err != nil {
		t.Fatalf("rendering the edge template: %v", err)
	}
	path := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(path, conf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	// The edge job's arguments (jobs/edge.nomad.hcl).
	e.cmd = exec.Command(bin, "-p", dir+"/", "-c", path, "-e", "stderr", "-g", "daemon off;")
	logf, err := os.Create(filepath.Join(dir, "edge.log"))
	if err != nil {
		t.Fatal(err)
	}
	e.log = logf.Name()
	e.cmd.Stdout, e.cmd.Stderr = logf, logf
	e.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := e.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = e.cmd.Wait(); close(e.done) }()
	t.Cleanup(func() {
		_ = e.cmd.Process.Signal(syscall.SIGQUIT) // graceful, as the job stops it
		select {
		case <-e.done:
		case <-time.After(15 * time.Second):
			_ = syscall.Kill(-e.cmd.Process.Pid, syscall.SIGKILL)
			<-e.done
		}
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			if len(b) > 8000 {
				b = b[len(b)-8000:]
			}
			t.Logf("edge log tail:\n%s", b)
		}
	})
	pem, err := os.ReadFile(filepath.Join(secrets, "tls.crt"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatal("the edge's certificate does not parse")
	}
	e.tls = &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}
	testsupport.Eventually(t, 30*time.Second, "the edge listening", func() (bool, error) {
		select {
		case <-e.done:
			b, _ := os.ReadFile(logf.Name())
			return false, fmt.Errorf("nginx exited: %v\n%s", e.cmd.ProcessState, b)
		default:
		}
		c, err := tls.Dial("tcp", e.addr, e.tls)
		if err == nil {
			c.Close()
		}
		return err == nil, err
	})
	return e
}

func hostPort(t *testing.T, addr string) upstream {
	t.Helper()
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	n, _ := strconv.Atoi(p)
	return upstream{Address: h, Port: n}
}

// The edge renders from the production template, starts, and proxies to
// the replicas over TLS, round robin. No agents: two plain
// backends stand in for the replicas.
func TestEdgeProxiesToReplicas(t *testing.T) {
	var gws []*gateway
	var srvs []*httptest.Server
	for i := 0; i < 2; i++ {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("X-Forwarded-Proto") != "https" {
				http.Error(w, "no X-Forwarded-Proto https", http.StatusBadRequest)
				return
			}
			fmt.Fprintf(w, "replica %d", i)
		}))
		t.Cleanup(srv.Close)
		srvs = append(srvs, srv)
		gws = append(gws, &gateway{public: srv.Listener.Addr().String(), internal: testsupport.FreeAddr(t)})
	}
	e := startEdge(t, gws)
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: e.tls}, Timeout: 5 * time.Second}
	seen := map[string]bool{}
	for i := 0; i < 8; i++ {
		resp, err := c.Get("https://" + e.addr + "/api/whoami")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("GET through the edge: %d %s", resp.StatusCode, b)
		}
		seen[string(b)] = true
	}
	if len(seen) != 2 {
		t.Errorf("answers through the edge: %v; want both replicas (round robin)", seen)
	}
	// A replica gone: nginx retries on the other (a GET is idempotent),
	// the client sees no failure, and the access log shows the retry.
	srvs[0].Close()
	for i := 0; i < 4; i++ {
		resp, err := c.Get("https://" + e.addr + "/api/whoami")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("GET with one replica gone: %d, want 200 (nginx's retry)", resp.StatusCode)
		}
	}
	testsupport.Eventually(t, 5*time.Second, "the retry in the edge's access log", func() (bool, error) {
		n, err := e.retries()
		return n >= 1, err
	})
}
