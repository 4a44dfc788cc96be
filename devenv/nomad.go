package devenv

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	nomadapi "github.com/hashicorp/nomad/api"
)

// Nomad is the stack's Nomad agent: one server (bootstrap_expect = 1) and
// one client in the same process.
type Nomad struct {
	Addr       string // http://127.0.0.1:port
	NodeName   string
	DataDir    string
	ConfigPath string
	// ProfilesDir backs the host volume "slice-profiles".
	ProfilesDir string
	// MinDynamicPort and MaxDynamicPort bound the ports Nomad gives tasks.
	MinDynamicPort, MaxDynamicPort int
	// Token is the management token (operators, tests).
	Token string

	// dataDirLink, when set, is the short path (a symlink to DataDir) the
	// agent is configured with: see shortDataDir.
	dataDirLink string

	proc     *proc
	slotLock *os.File
}

// agentDataDir is the data_dir the agent is given.
func (n *Nomad) agentDataDir() string {
	if n.dataDirLink != "" {
		return n.dataDirLink
	}
	return n.DataDir
}

// Client returns an API client for the agent, ignoring NOMAD_* variables
// meant for some other cluster. It has no overall timeout, so that blocking
// queries work; bound calls with QueryOptions.WithContext.
func (n *Nomad) Client() (*nomadapi.Client, error) {
	return n.client(0)
}

// client with a per-request timeout, for devenv's own calls: a port taken by
// another program may accept a connection and never answer.
func (n *Nomad) client(timeout time.Duration) (*nomadapi.Client, error) {
	cfg := nomadapi.DefaultConfig()
	cfg.HttpClient = &http.Client{Timeout: timeout, Transport: http.DefaultTransport.(*http.Transport).Clone()}
	cfg.Address = n.Addr
	cfg.Region = ""
	cfg.Namespace = ""
	cfg.SecretID = n.Token
	cfg.HttpAuth = nil
	cfg.TLSConfig = &nomadapi.TLSConfig{}
	return nomadapi.NewClient(cfg)
}

// HostVolume is the name of the client host volume that keeps Chromium
// profiles across dispatches (see the architecture notes).
const HostVolume = "slice-profiles"

func startNomad(ctx context.Context, s *Stack, bin string, ports portSet, o Options) (*Nomad, error) {
	const op = "devenv.nomad"
	t0 := time.Now()
	base := filepath.Join(s.Dir, "nomad")
	n := &Nomad{
		Addr:        "http://127.0.0.1:" + strconv.Itoa(ports.NomadHTTP),
		NodeName:    o.NodeName,
		DataDir:     filepath.Join(base, "data"),
		ConfigPath:  filepath.Join(base, "agent.hcl"),
		ProfilesDir: filepath.Join(s.Dir, "profiles"),
		Token:       s.ACL.NomadManagement,
	}
	if err := os.MkdirAll(n.DataDir, 0o755); err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	if o.SliceNetwork {
		var err error
		if n.dataDirLink, err = shortDataDir(o.NodeName, n.DataDir); err != nil {
			return nil, fmt.Errorf("%s: %w", op, err)
		}
	}
	n.MinDynamicPort, n.MaxDynamicPort, n.slotLock = claimPortSlot()
	if n.slotLock == nil {
		s.log.Warn("every dynamic port slot is taken; tasks of stacks running side by side may collide on ports")
	}
	if err := os.WriteFile(n.ConfigPath, []byte(nomadConfig(n, ports, s.ACL.ConsulNomad, o)), 0o600); err != nil {
		n.releaseSlot()
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	env, err := nomadEnv(base)
	if err != nil {
		n.releaseSlot()
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	pr, err := startProc(procSpec{
		name: "nomad", path: bin, args: []string{"agent", "-config=" + n.ConfigPath}, dir: base,
		env:     env,
		logPath: filepath.Join(s.Dir, "logs", "nomad.log"),
		stopSig: syscall.SIGTERM, group: true,
	})
	if err != nil {
		n.releaseSlot()
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	n.proc = pr
	if err := s.track(pr); err != nil {
		return n, fmt.Errorf("%s: %w", op, err)
	}
	if err := s.setNomadAddr(n.Addr); err != nil {
		return n, fmt.Errorf("%s: %w", op, err)
	}
	client, err := n.client(2 * time.Second)
	if err != nil {
		return n, fmt.Errorf("%s: %w", op, err)
	}
	aclDone := false
	if err := pr.waitReady(ctx, 100*time.Millisecond, func() (bool, error) {
		if !aclDone {
			if leader, err := client.Status().Leader(); err != nil || leader == "" {
				return false, fmt.Errorf("no leader yet (%v)", err)
			}
			made, err := ensureNomadACL(client, s.ACL)
			if err != nil {
				return false, err
			}
			if made {
				if err := s.ACL.save(s.Dir); err != nil {
					return false, err
				}
			}
			aclDone = true
		}
		return nomadReady(client, o.NodeName, o.Docker)
	}); err != nil {
		return n, fmt.Errorf("%s: not ready: %w", op, err)
	}
	if err := ensureOversubscription(client); err != nil {
		return n, fmt.Errorf("%s: %w", op, err)
	}
	s.log.Info("nomad ready", "pid", pr.pid, "took", time.Since(t0).Round(time.Millisecond))
	return n, nil
}

// ensureOversubscription turns memory oversubscription on through the
// operator API when the cluster's scheduler configuration has it off: the
// server block's default_scheduler_config applies only when a cluster is
// bootstrapped, so a data directory kept from before (or a configuration
// changed since) would otherwise silently ignore the slices' memory_max.
func ensureOversubscription(client *nomadapi.Client) error {
	cfg, _, err := client.Operator().SchedulerGetConfiguration(nil)
	if err != nil {
		return fmt.Errorf("scheduler configuration: %w", err)
	}
	if cfg.SchedulerConfig == nil {
		return errors.New("scheduler configuration: empty answer")
	}
	if cfg.SchedulerConfig.MemoryOversubscriptionEnabled {
		return nil
	}
	sc := *cfg.SchedulerConfig
	sc.MemoryOversubscriptionEnabled = true
	resp, _, err := client.Operator().SchedulerCASConfiguration(&sc, nil)
	if err != nil {
		return fmt.Errorf("enable memory oversubscription: %w", err)
	}
	if !resp.Updated {
		return errors.New("enable memory oversubscription: the scheduler configuration changed meanwhile")
	}
	return nil
}

// nomadReady: a leader, our node registered and ready, and every driver we
// asked for detected and healthy. A node turns "ready" before the docker
// driver's first fingerprint, so the driver is checked on its own.
func nomadReady(client *nomadapi.Client, nodeName string, docker bool) (bool, error) {
	leader, err := client.Status().Leader()
	if err != nil {
		return false, err
	}
	if leader == "" {
		return false, errors.New("no leader yet")
	}
	nodes, _, err := client.Nodes().List(nil)
	if err != nil {
		return false, err
	}
	var id string
	for _, nd := range nodes {
		if nd.Name == nodeName {
			if nd.Status != nomadapi.NodeStatusReady {
				return false, fmt.Errorf("node %s is %s", nodeName, nd.Status)
			}
			id = nd.ID
		}
	}
	if id == "" {
		return false, fmt.Errorf("node %s not registered yet", nodeName)
	}
	node, _, err := client.Nodes().Info(id, nil)
	if err != nil {
		return false, err
	}
	drivers := []string{"raw_exec"}
	if docker {
		drivers = append(drivers, "docker")
	}
	for _, d := range drivers {
		info := node.Drivers[d]
		switch {
		case info == nil || !info.Detected:
			return false, fmt.Errorf("driver %s not detected", d)
		case !info.Healthy:
			return false, fmt.Errorf("driver %s unhealthy: %s", d, info.HealthDescription)
		}
	}
	return true, nil
}

// nomadConfig renders the configuration of the stack's server+client
// agent.
func nomadConfig(n *Nomad, ports portSet, consulToken string, o Options) string {
	return renderNomadConfig(n, nomadRole{
		http: ports.NomadHTTP, rpc: ports.NomadRPC, serf: ports.NomadSerf,
		consulAddr: "127.0.0.1:" + strconv.Itoa(ports.ConsulHTTP), consulToken: consulToken,
	}, o)
}

// nomadRole is what differs between the server+client agent and an extra
// client-only agent (node.go).
type nomadRole struct {
	http, rpc, serf int
	consulAddr      string
	// consulToken is Nomad's own Consul token (service:write and reads).
	consulToken string
	// servers: the RPC addresses a client-only agent joins; empty for the
	// agent that is the server.
	servers []string
}

// renderNomadConfig renders an agent configuration. Paths are quoted with
// %q, whose escapes HCL shares.
func renderNomadConfig(n *Nomad, r nomadRole, o Options) string {
	// mock_driver (compiled into a Nomad built without the `release` tag)
	// runs fake tasks: the scheduler's tests and benchmarks dispatch
	// hundreds of children with it. It only fingerprints; no job of the
	// platform uses it.
	drivers := "raw_exec,mock_driver"
	if o.Docker {
		drivers += ",docker"
	}
	serverBlock := `server {
  enabled          = true
  bootstrap_expect = 1
  # Applied once, when the cluster is bootstrapped: lets a task's memory_max
  # exceed its reservation (Chromium's heap grows while idle).
  default_scheduler_config {
    memory_oversubscription_enabled = true
  }
}
`
	joinLine := ""
	if len(r.servers) > 0 {
		serverBlock = ""
		joinLine = "  servers = " + hclList(r.servers) + "\n"
	}
	memoryLine := ""
	if o.NomadClientMemoryMB > 0 {
		memoryLine = fmt.Sprintf("  # Options.NomadClientMemoryMB: not the host's memory.\n  memory_total_mb = %d\n", o.NomadClientMemoryMB)
	}
	var b strings.Builder
	fmt.Fprintf(&b, `# Written by devenv at every start; edits are lost.
name                 = %q
data_dir             = %q
bind_addr            = "127.0.0.1"
log_level            = "INFO"
disable_update_check = true

# Without advertise, a bind to 127.0.0.1 is refused as "unsafe".
advertise {
  http = "127.0.0.1"
  rpc  = "127.0.0.1"
  serf = "127.0.0.1"
}

ports {
  http = %d
  rpc  = %d
  serf = %d
}

%s
client {
  enabled = true
%s  # Fingerprint the loopback interface so that services register in Consul
  # with 127.0.0.1 addresses, reachable from the gateway on this host.
  network_interface = %q
  # Each Nomad believes it owns the host's ports. Stacks running side by
  # side get disjoint ranges (see claimPortSlot), below the kernel's
  # ephemeral range where the agents' own ports come from.
  min_dynamic_port = %d
  max_dynamic_port = %d
%s  options {
    # Only the drivers the platform uses: fingerprinting exec, java and qemu
    # costs start time and logs noise.
    "driver.allowlist" = %q
    # The cloud fingerprinters probe metadata endpoints that do not answer
    # here, and delay the node's first ready status.
    "fingerprint.denylist" = "env_aws,env_gce,env_azure,env_digitalocean"
  }
  host_volume %q {
    path      = %q
    read_only = false
  }
}

# ACLs on: a task (a slice) reaches nothing in Nomad without a token, and
# holds none (see acl.go).
acl {
  enabled = true
}

consul {
  address = %q
  token   = %q
}

plugin "raw_exec" {
  config {
    enabled = true
  }
}
`, n.NodeName, n.agentDataDir(), r.http, r.rpc, r.serf, serverBlock, joinLine,
		loopbackInterface(), n.MinDynamicPort, n.MaxDynamicPort, memoryLine, drivers, HostVolume, n.ProfilesDir,
		r.consulAddr, r.consulToken)
	if o.Docker {
		fmt.Fprintf(&b, `
plugin "docker" {
  config {
    # Images are built locally and no registry is reachable: an image
    # removed by GC could never be pulled back.
    #
    # The dangling-container reconciler removes containers that carry
    # Nomad's labels but that this client does not track: with a second
    # client on this machine (Options.NomadClients), or stacks side by
    # side, those are the other clients' live slices. Stop removes this
    # stack's containers by node name instead.
    gc {
      image = false
      dangling_containers {
        enabled = false
      }
    }
    # Host paths in tasks (seccomp profiles, bind mounts).
    volumes {
      enabled = true
    }
    # node_name lets Stop (and the next test run) find this node's
    # containers even when Nomad is gone.
    extra_labels = ["job_name", "node_name"]
    allow_caps   = %s
    # No disable_log_collection: it would cover every docker task on the
    # node, the profile reaper's too. The slice job's logs { disabled =
    # true } alone starts no docker_logger for slices (jobs/README.md).
  }
}
`, hclList(allowCaps(o.DockerExtraCaps)))
	}
	return b.String()
}

// defaultCaps is Nomad 1.6's default allow_caps; setting allow_caps
// replaces the list, so extra capabilities are appended to it.
var defaultCaps = []string{"audit_write", "chown", "dac_override", "fowner", "fsetid", "kill", "mknod",
	"net_bind_service", "setfcap", "setgid", "setpcap", "setuid", "sys_chroot"}

func allowCaps(extra []string) []string {
	caps := append([]string(nil), defaultCaps...)
	for _, c := range extra {
		c = strings.ToLower(strings.TrimPrefix(strings.ToUpper(c), "CAP_"))
		dup := false
		for _, d := range caps {
			dup = dup || d == c
		}
		if !dup {
			caps = append(caps, c)
		}
	}
	return caps
}

func hclList(xs []string) string {
	q := make([]string, len(xs))
	for i, x := range xs {
		q[i] = strconv.Quote(x)
	}
	return "[" + strings.Join(q, ", ") + "]"
}

// loopbackInterface names the interface that carries 127.0.0.1 ("lo" on
// Linux).
func loopbackInterface() string {
	ifs, err := net.Interfaces()
	if err == nil {
		for _, i := range ifs {
			if i.Flags&net.FlagLoopback != 0 && i.Flags&net.FlagUp != 0 {
				return i.Name
			}
		}
	}
	return "lo"
}

// stop stops the agent. A throwaway stack first has every job purged and
// waits until Nomad reports their allocations terminal, so that Nomad
// itself stops the tasks and containers (with their kill signals and
// timeouts). Whatever outlives the agent is then killed: Nomad starts its
// executors and loggers in sessions of their own and leaves them running
// when it exits, by design, so that a restarted client can reattach.
func (n *Nomad) stop(ctx context.Context, throwaway bool, log *slog.Logger) error {
	defer n.releaseSlot()
	if n.proc == nil || n.proc.exited() {
		return nil
	}
	var errs []error
	if throwaway && n.Addr != "" {
		if err := n.purgeAll(ctx, log); err != nil {
			errs = append(errs, fmt.Errorf("purging jobs: %w", err))
		}
	}
	if err := n.proc.stop(30 * time.Second); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (n *Nomad) purgeAll(ctx context.Context, log *slog.Logger) error {
	client, err := n.client(10 * time.Second)
	if err != nil {
		return err
	}
	listCtx, cancelList := context.WithTimeout(ctx, time.Minute)
	defer cancelList()
	jobs, _, err := client.Jobs().List((&nomadapi.QueryOptions{Namespace: "*"}).WithContext(listCtx))
	if err != nil {
		return err
	}
	// A minute for a test's few jobs; a scale run leaves thousands, each
	// stopped by its client and deregistered from Consul in turn.
	ctx, cancel := context.WithTimeout(ctx, time.Minute+time.Duration(len(jobs))*50*time.Millisecond)
	defer cancel()
	all := (&nomadapi.QueryOptions{Namespace: "*"}).WithContext(ctx)
	for _, j := range jobs {
		w := (&nomadapi.WriteOptions{Namespace: j.Namespace}).WithContext(ctx)
		if _, _, err := client.Jobs().DeregisterOpts(j.ID, &nomadapi.DeregisterOptions{Purge: true, NoShutdownDelay: true}, w); err != nil {
			return fmt.Errorf("deregister %s: %w", j.ID, err)
		}
	}
	if len(jobs) > 0 {
		log.Info("purged nomad jobs", "count", len(jobs))
	}
	// Purged jobs keep their allocations until GC; wait for the client to
	// report each one terminal, i.e. its tasks stopped.
	return pollCtx(ctx, 100*time.Millisecond, func() (bool, error) {
		allocs, _, err := client.Allocations().List(all)
		if err != nil {
			return false, err
		}
		for _, a := range allocs {
			switch a.ClientStatus {
			case nomadapi.AllocClientStatusComplete, nomadapi.AllocClientStatusFailed, nomadapi.AllocClientStatusLost:
			default:
				// A pending allocation that was never placed on a client
				// stays pending forever once stopped: nothing runs.
				if a.ClientStatus == nomadapi.AllocClientStatusPending && a.DesiredStatus != nomadapi.AllocDesiredStatusRun && a.NodeID == "" {
					continue
				}
				return false, fmt.Errorf("allocation %s of %s is %s", a.ID[:8], a.JobID, a.ClientStatus)
			}
		}
		return true, nil
	})
}

// Nomad's default dynamic port range, cut into slots, one per stack.
const (
	dynamicPortsMin  = 20000
	dynamicPortsMax  = 32000
	dynamicSlotWidth = 1000
)

// claimPortSlot takes the first free slot of Nomad's dynamic port range, by
// flock on a file per slot in the temporary directory: the lock dies with
// its holder, so a crashed stack never keeps a slot. Without a free slot it
// returns the whole range and a nil lock.
func claimPortSlot() (minPort, maxPort int, lock *os.File) {
	for slot := 0; dynamicPortsMin+(slot+1)*dynamicSlotWidth-1 <= dynamicPortsMax; slot++ {
		path := filepath.Join(os.TempDir(), fmt.Sprintf("slicehub-devenv-ports-%d.lock", slot))
		f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
		if err != nil {
			continue
		}
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			f.Close()
			continue
		}
		lo := dynamicPortsMin + slot*dynamicSlotWidth
		return lo, lo + dynamicSlotWidth - 1, f
	}
	return dynamicPortsMin, dynamicPortsMax, nil
}

func (n *Nomad) releaseSlot() {
	if n.slotLock != nil {
		n.slotLock.Close()
		n.slotLock = nil
	}
}

// nomadEnv is a Nomad agent's environment, with its TMPDIR under base.
// go-plugin puts the unix sockets of logmon and docker_logger in TMPDIR
// and leaves them when a plugin is killed; inside the state directory they
// go away with it. A socket path is limited to 107 bytes, so a deep base
// keeps the default.
func nomadEnv(base string) ([]string, error) {
	env := agentEnv()
	if tmp := filepath.Join(base, "tmp"); len(tmp)+len("/plugin0123456789") < 100 {
		if err := os.MkdirAll(tmp, 0o755); err != nil {
			return nil, err
		}
		env = append(env, "TMPDIR="+tmp)
	}
	return env, nil
}
