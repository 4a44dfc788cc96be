package devenv

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	consulapi "github.com/hashicorp/consul/api"
)

// Consul is the stack's Consul agent, a single dev-mode server.
type Consul struct {
	Addr string // 127.0.0.1:port, the HTTP API (and the UI under /ui)
	// Token is the management token (operators, tests).
	Token string

	proc *proc
}

// Client returns an API client for the agent. It has no overall timeout, so
// that blocking queries work.
func (c *Consul) Client() (*consulapi.Client, error) {
	return c.client(0)
}

// client with a per-request timeout, for devenv's own calls.
func (c *Consul) client(timeout time.Duration) (*consulapi.Client, error) {
	cfg := consulapi.DefaultConfig()
	cfg.HttpClient = &http.Client{Timeout: timeout, Transport: http.DefaultTransport.(*http.Transport).Clone()}
	cfg.Address = c.Addr
	cfg.Scheme = "http"
	cfg.Token, cfg.TokenFile = c.Token, ""
	return consulapi.NewClient(cfg)
}

// consulAgentSettings are what every agent of a stack runs with beside its
// ACLs. check_update_interval 0s: a check's output reaches the catalog, and
// so the Consul UI, at every change. Consul's default syncs an output whose
// status did not change only every 5 minutes, and the WhatsApp check stays
// "warning" from "starting" to "waits for a QR scan" (jobs/README.md says
// what production sets, where the catalog's write rate matters more).
const consulAgentSettings = "check_update_interval = \"0s\"\n"

func startConsul(ctx context.Context, s *Stack, bin string, ports portSet, o Options) (*Consul, error) {
	const op = "devenv.consul"
	t0 := time.Now()
	c := &Consul{Addr: "127.0.0.1:" + strconv.Itoa(ports.ConsulHTTP), Token: s.ACL.ConsulManagement}
	aclPath := filepath.Join(s.Dir, "consul-acl.hcl")
	if err := os.WriteFile(aclPath, []byte(consulACLConfig(s.ACL, true)+consulAgentSettings), 0o600); err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	// -dev keeps the catalog, KV and sessions in memory, but with a data
	// directory the agent persists the services and checks registered with
	// it (Nomad's) and registers them again when it restarts, as an agent
	// of a real cluster does. Without it, a restarted agent came back
	// empty and the slices reappeared only at each Nomad client's next
	// periodic sync, a fixed 30 s in Nomad 1.6
	// (command/agent/consul/service_client.go, defaultPeriodicInterval):
	// the chaos suite measured 25 s to 1 m 35 s.
	dataDir := filepath.Join(s.Dir, "consul", "data")
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	args := []string{
		"agent", "-dev",
		"-data-dir=" + dataDir,
		"-config-file=" + aclPath,
		"-node=" + o.NodeName,
		"-bind=127.0.0.1",
		"-client=127.0.0.1",
		"-http-port=" + strconv.Itoa(ports.ConsulHTTP),
		// DNS is not used by the platform (the gateway watches the catalog)
		// and 8600 would collide between stacks.
		"-dns-port=-1",
		"-serf-lan-port=" + strconv.Itoa(ports.ConsulSerfLAN),
		"-serf-wan-port=" + strconv.Itoa(ports.ConsulSerfWAN),
		"-server-port=" + strconv.Itoa(ports.ConsulServer),
		"-grpc-port=" + strconv.Itoa(ports.ConsulGRPC),
		// A server defaults its gRPC TLS port to a fixed 8503, even in -dev
		// mode without TLS: turn it off, or a second stack fails to bind.
		"-grpc-tls-port=-1",
		"-ui",
		// -dev logs at DEBUG, which buries anything useful.
		"-log-level=info",
	}
	pr, err := startProc(procSpec{
		name: "consul", path: bin, args: args, dir: s.Dir,
		env:     agentEnv(),
		logPath: filepath.Join(s.Dir, "logs", "consul.log"),
		stopSig: syscall.SIGTERM, group: true,
	})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	c.proc = pr
	if err := s.track(pr); err != nil {
		return c, fmt.Errorf("%s: %w", op, err)
	}
	client, err := c.client(2 * time.Second)
	if err != nil {
		return c, fmt.Errorf("%s: %w", op, err)
	}
	// Ready: a leader is elected, the ACL policies and tokens exist (the
	// agent needs its token to put its node in the catalog), and the
	// agent's own node is in the catalog, so a service registration
	// (Nomad's, next) is accepted.
	aclDone := false
	if err := pr.waitReady(ctx, 50*time.Millisecond, func() (bool, error) {
		if !aclDone {
			if leader, err := client.Status().Leader(); err != nil || leader == "" {
				return false, fmt.Errorf("no leader yet (%v)", err)
			}
			if err := ensureConsulACL(client, s.ACL); err != nil {
				return false, err
			}
			aclDone = true
		}
		return consulReady(client, o.NodeName)
	}); err != nil {
		return c, fmt.Errorf("%s: not ready: %w", op, err)
	}
	s.log.Info("consul ready", "pid", pr.pid, "took", time.Since(t0).Round(time.Millisecond))
	return c, nil
}

// agentEnv is the environment of the HashiCorp agents. CHECKPOINT_DISABLE
// stops them from calling the vendor's update service, which is not
// reachable here and only adds noise to the logs.
func agentEnv() []string {
	env := []string{"CHECKPOINT_DISABLE=1"}
	for _, kv := range os.Environ() {
		// The caller's agent settings (CONSUL_HTTP_ADDR, NOMAD_ADDR, tokens)
		// are for the caller's own cluster, not for these agents.
		if hasAnyPrefix(kv, "CONSUL_", "NOMAD_", "VAULT_", "TMPDIR=") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

func hasAnyPrefix(s string, prefixes ...string) bool {
	for _, p := range prefixes {
		if len(s) >= len(p) && s[:len(p)] == p {
			return true
		}
	}
	return false
}

// consulReady reports whether the agent behind client knows a leader and
// has node in the catalog: then a service registration through it (what
// Nomad does next) is accepted.
func consulReady(client *consulapi.Client, node string) (bool, error) {
	leader, err := client.Status().Leader()
	if err != nil {
		return false, err
	}
	if leader == "" {
		return false, fmt.Errorf("no leader yet")
	}
	n, _, err := client.Catalog().Node(node, nil)
	if err != nil {
		return false, err
	}
	if n == nil {
		return false, fmt.Errorf("node %s not registered yet", node)
	}
	return true, nil
}
