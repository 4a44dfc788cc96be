// Package devenv runs the platform's dependencies on one machine, as child
// processes under one state directory: a private PostgreSQL, a Consul dev
// agent and a Nomad server+client agent. `make run` uses it for the embedded
// default environment and the testsupport package uses it for integration
// tests.
//
// It owns everything under Options.Dir:
//
//	Dir/postgres/   data (initdb'ed once), run/ (unix socket), superuser.password (0600)
//	Dir/nomad/      agent.hcl (rewritten at each start), data/ (Raft, client
//	                state), tmp/ (plugin sockets)
//	Dir/profiles/   the "slice-profiles" host volume (shared by every node)
//	Dir/consul/data/ the Consul agent's registered services and checks
//	Dir/nomad-<i>/, Dir/consul-<i>/  extra client nodes (Options.NomadClients, see Node)
//	Dir/logs/       postgres.log, consul.log, nomad.log (appended, one header per run)
//	Dir/ports.json  the ports chosen, reused by the next run when still free
//	Dir/running.json what is running now, so that Cleanup can stop it if the
//	                starter died; removed by a completed Stop
//	Dir/devenv.lock held by the running stack's starter
//
// It also owns the Docker containers that its Nomad nodes started, found by
// the label com.hashicorp.nomad.node_name = Options.NodeName (and the
// extra nodes' names, Options.NodeName-<i>).
// With Options.SliceNetwork it also owns the slices' Docker network
// slicehub-slices-<node> and the iptables chains SH-IN-<hash> and
// SH-FWD-<hash> (SliceNet), and the symlink /tmp/shnd-<hash> to the Nomad
// data directory.
//
// Consul runs in -dev mode (catalog, KV and sessions in memory: Nomad
// re-registers its services at every start), with a data directory
// (Dir/consul/data) only so that the agent keeps the services registered
// with it across a restart of the agent, as a real agent does. Nomad runs as a
// real server so that jobs survive a restart of `make run`, and PostgreSQL
// keeps its data.
//
// Use:
//
//	stack, err := devenv.Start(ctx, devenv.Options{Dir: ".devenv", Docker: true, Logger: logger})
//	if err != nil {
//		return err // carries the tail of the failing agent's log
//	}
//	defer stack.Stop()
//
// Stop leaves nothing running: without Throwaway it keeps the jobs
// registered and kills what they run (as a power cut would); the next Start
// finds the allocations and Nomad starts their tasks again. To reset a
// directory use RemoveDir, not rm -rf: Nomad leaves tmpfs mounts in it.
//
// One stack per Dir at a time (a flock on Dir/devenv.lock). Stacks in
// different directories run side by side: every port is chosen per stack,
// including the range of ports Nomad hands to tasks.
package devenv

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Options configure a stack. Only Dir is required.
type Options struct {
	// Dir is the state directory. It is created if needed; PostgreSQL runs
	// as the OS user postgres, so Dir's parents must be traversable by it.
	Dir string
	// Ports; 0 picks one (the port of the previous run with this Dir if it
	// is still free, else any free port).
	PostgresPort, ConsulHTTPPort, NomadHTTPPort int
	// SkipPostgres when the user brings a DATABASE_URL.
	SkipPostgres bool
	// Docker enables the Nomad docker driver and makes Start wait until it is
	// healthy. Without it only raw_exec is enabled.
	Docker bool
	// DockerExtraCaps are Linux capabilities allowed to tasks on top of
	// Nomad's default list. Empty by default: Chromium's sandbox works with
	// a seccomp profile that permits user namespaces, which is narrower than
	// granting SYS_ADMIN to every slice.
	DockerExtraCaps []string
	// NodeName is the Nomad node name and the Consul node name. It must be
	// unique per stack on a machine: Stop removes the Docker containers
	// labelled with it. Default "slicehub-dev".
	NodeName string
	// BinDir holds nomad and consul. Default: <repo>/bin, then PATH.
	BinDir string
	// PostgresBinDir holds initdb and postgres. Default: the newest
	// /usr/lib/postgresql/*/bin, then PATH.
	PostgresBinDir string
	// NoFsync turns off fsync and friends in PostgreSQL: much faster
	// database creation, and a crash can corrupt the data (fine for tests).
	NoFsync bool
	// Throwaway: Stop first deregisters and purges every Nomad job and waits
	// until their allocations are terminal, so that nothing they started is
	// left behind. For tests. Without it, Stop keeps the jobs in Nomad's
	// state, kills what they run, and the next Start brings them back.
	Throwaway bool
	// Logger; default slog.Default(). Logged with component=devenv.
	Logger *slog.Logger
	// NomadClients is the number of Nomad client nodes. 0 or 1: the
	// server's own client only (the fast default). 2 or more: extra
	// client-only agents on this machine, each with a Consul client agent
	// of its own, named NodeName-2, NodeName-3, ... (see Node). For node
	// drains and for spreading many slices.
	NomadClients int
	// NomadClientMemoryMB, when set, is the memory each Nomad client
	// advertises instead of the host's (client memory_total_mb). For scale
	// runs of mock_driver slices: each reserves Nomad's minimum of 10 MB,
	// so a 23 GB host "fits" about 2,300 per client, all of them fake.
	NomadClientMemoryMB int
	// SliceNetwork gives the stack a network of its own for slices (see
	// SliceNet): a Docker bridge with a firewall, PostgreSQL listening on
	// the bridge's address too, and the slice job's `network` variable set
	// to it by its users. Needs Docker and iptables (root).
	SliceNetwork bool
	// SliceDenyNets are extra destinations (CIDRs) slices may not reach
	// through the host (link-local always is): in production, the private
	// networks where other nodes' agents listen.
	SliceDenyNets []string
}

// Stack is a running set of agents. A nil member was not started.
type Stack struct {
	Dir      string
	NodeName string
	Postgres *Postgres
	Consul   *Consul
	Nomad    *Nomad
	// Nodes are the extra Nomad client nodes (Options.NomadClients).
	Nodes []*Node
	// SliceNet is the slices' network (Options.SliceNetwork), else nil.
	SliceNet *SliceNet
	// ACL holds the stack's tokens (see acl.go): Consul.Client and
	// Nomad.Client carry the management ones.
	ACL *ACL

	log       *slog.Logger
	throwaway bool
	docker    bool
	noFsync   bool // kept for RestartPostgres

	mu       sync.Mutex
	rec      runRecord
	lock     *os.File // flock on Dir/devenv.lock, held from Start to Stop
	stopOnce sync.Once
	stopErr  error
}

// runRecord is Dir/running.json.
type runRecord struct {
	NodeName  string       `json:"node_name"`
	Throwaway bool         `json:"throwaway"`
	Docker    bool         `json:"docker"`
	NomadAddr string       `json:"nomad_addr,omitempty"`
	Nodes     []string     `json:"nodes,omitempty"` // extra node names, for container removal
	SliceNet  bool         `json:"slice_net,omitempty"`
	Procs     []procRecord `json:"procs"`
}

const (
	runningFile   = "running.json"
	portsFile     = "ports.json"
	defaultNode   = "slicehub-dev"
	superuser     = "slicehub"
	nodeNameLabel = "com.hashicorp.nomad.node_name"
)

// Start starts every agent and returns when each one is ready. If anything
// fails it stops what it started and returns an error that carries the tail
// of the failing agent's log. ctx bounds the start only.
//
// Agents left running by an earlier starter of the same Dir that died
// without stopping them are stopped first.
func Start(ctx context.Context, o Options) (*Stack, error) {
	const op = "devenv.start"
	t0 := time.Now()
	if o.Dir == "" {
		return nil, fmt.Errorf("%s: Options.Dir is required", op)
	}
	dir, err := filepath.Abs(o.Dir)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	o.Dir = dir
	if o.NodeName == "" {
		o.NodeName = defaultNode
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	log := o.Logger.With("component", "devenv", "dir", dir)

	bins, err := findBinaries(o)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	if o.Docker {
		if err := dockerReachable(ctx); err != nil {
			return nil, fmt.Errorf("%s: %w", op, err)
		}
	}
	for _, d := range []string{dir, filepath.Join(dir, "logs"), filepath.Join(dir, "nomad"), filepath.Join(dir, "profiles")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("%s: %w", op, err)
		}
	}
	// Each slice mounts only its own <id> directory (jobs/slice.nomad.hcl)
	// and its entrypoint gives that to the slice's own uid: the root stays
	// root's, and no uid may list it.
	profiles := filepath.Join(dir, "profiles")
	if err := os.Chown(profiles, 0, 0); err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	if err := os.Chmod(profiles, 0o711); err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	lock, err := lockDir(dir)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	if err := cleanupLocked(ctx, dir, o.Logger); err != nil {
		lock.Close()
		return nil, fmt.Errorf("%s: stopping what an earlier run left: %w", op, err)
	}
	ports, err := choosePorts(filepath.Join(dir, portsFile), portSet{
		Postgres: o.PostgresPort, ConsulHTTP: o.ConsulHTTPPort, NomadHTTP: o.NomadHTTPPort,
	})
	if err != nil {
		lock.Close()
		return nil, fmt.Errorf("%s: choosing ports: %w", op, err)
	}

	acl, err := loadACL(dir)
	if err != nil {
		lock.Close()
		return nil, fmt.Errorf("%s: ACL tokens: %w", op, err)
	}
	s := &Stack{
		Dir: dir, NodeName: o.NodeName, log: log, throwaway: o.Throwaway, docker: o.Docker, noFsync: o.NoFsync,
		rec:  runRecord{NodeName: o.NodeName, Throwaway: o.Throwaway, Docker: o.Docker, SliceNet: o.SliceNetwork},
		lock: lock, ACL: acl,
	}
	if o.SliceNetwork {
		// Before PostgreSQL, which listens on the bridge's address too.
		if !o.Docker {
			lock.Close()
			return nil, fmt.Errorf("%s: SliceNetwork needs Docker", op)
		}
		if err := s.saveRecordLocked(); err != nil {
			lock.Close()
			return nil, fmt.Errorf("%s: %w", op, err)
		}
		if s.SliceNet, err = createSliceNet(ctx, o.NodeName, o.SliceDenyNets); err != nil {
			lock.Close()
			return nil, fmt.Errorf("%s: %w", op, err)
		}
		log.Info("slice network ready", "network", s.SliceNet.Name, "bridge", s.SliceNet.Bridge,
			"subnet", s.SliceNet.Subnet, "gateway", s.SliceNet.Gateway)
	}
	log.Info("starting", "node", o.NodeName, "docker", o.Docker, "postgres", !o.SkipPostgres)

	// PostgreSQL does not depend on the agents: start it alongside them.
	// Nomad needs Consul's address only, but starting it after Consul is
	// ready avoids a burst of connection errors in its log.
	// A kept directory's allocations are restored by Nomad, which does not
	// build their task directories again; give them back the tmpfs that
	// the last Stop unmounted, before any client starts.
	if err := remountTaskSecrets(dir); err != nil {
		_ = s.Stop()
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	var pgErr error
	if !o.SkipPostgres {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var pg *Postgres
			pg, pgErr = startPostgres(ctx, s, bins, ports.Postgres, o)
			s.mu.Lock()
			s.Postgres = pg
			s.mu.Unlock()
		}()
	}
	agentErr := func() error {
		c, err := startConsul(ctx, s, bins.consul, ports, o)
		s.mu.Lock()
		s.Consul = c
		s.mu.Unlock()
		if err != nil {
			return err
		}
		n, err := startNomad(ctx, s, bins.nomad, ports, o)
		s.mu.Lock()
		s.Nomad = n
		s.mu.Unlock()
		if err != nil {
			return err
		}
		for i := 2; i <= o.NomadClients; i++ {
			if _, err := startNode(ctx, s, bins, ports, i, o); err != nil {
				return err
			}
		}
		return nil
	}()
	if agentErr != nil {
		cancel() // no use waiting for PostgreSQL
	}
	wg.Wait()
	if err := errors.Join(agentErr, pgErr); err != nil {
		if stopErr := s.Stop(); stopErr != nil {
			log.Warn("stopping after a failed start", "err", stopErr)
		}
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	attrs := []any{"took", time.Since(t0).Round(time.Millisecond), "consul", "http://" + s.Consul.Addr, "nomad", s.Nomad.Addr}
	if s.Postgres != nil {
		attrs = append(attrs, "postgres", s.Postgres.Host+":"+fmt.Sprint(s.Postgres.Port))
	}
	log.Info("ready", attrs...)
	return s, nil
}

// track records a started process in running.json before anything waits on
// it, so that a starter dying at any point leaves enough for Cleanup.
func (s *Stack) track(p *proc) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rec.Procs = append(s.rec.Procs, p.record())
	return s.saveRecordLocked()
}

func (s *Stack) setNomadAddr(addr string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rec.NomadAddr = addr
	return s.saveRecordLocked()
}

func (s *Stack) saveRecordLocked() error {
	b, err := json.MarshalIndent(s.rec, "", "  ")
	if err != nil {
		return err
	}
	path := filepath.Join(s.Dir, runningFile)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// Stop stops every agent: Nomad first (purging its jobs when the stack is
// throwaway), then the Docker containers of its node, Consul, and
// PostgreSQL last (the others may still talk to it). It is safe on a nil or
// partly started stack and idempotent: later calls return the first result.
func (s *Stack) Stop() error {
	if s == nil {
		return nil
	}
	s.stopOnce.Do(func() { s.stopErr = s.stop(context.Background()) })
	return s.stopErr
}

// stop does the work of Stop. ctx can only cut the waits short; each step
// also has its own deadline.
func (s *Stack) stop(ctx context.Context) error {
	const op = "devenv.stop"
	t0 := time.Now()
	s.mu.Lock()
	pg, c, n, nodes := s.Postgres, s.Consul, s.Nomad, append([]*Node(nil), s.Nodes...)
	s.mu.Unlock()
	var errs []error
	// With extra nodes, the purge goes through the server while every
	// client still runs, so that each client stops its own tasks; then the
	// clients stop, and the server last.
	purgeFirst := s.throwaway && len(nodes) > 0 && n != nil && n.proc != nil && !n.proc.exited() && n.Addr != ""
	if purgeFirst {
		if err := n.purgeAll(ctx, s.log); err != nil {
			errs = append(errs, fmt.Errorf("purging jobs: %w", err))
		}
	}
	for _, nd := range nodes {
		if err := nd.stopNomad(ctx, s); err != nil {
			errs = append(errs, err)
		}
	}
	if n != nil {
		if err := n.stop(ctx, s.throwaway && !purgeFirst, s.log); err != nil {
			errs = append(errs, err)
		}
	}
	if k := sweepOrphans(s.Dir); k > 0 {
		s.log.Warn("killed processes an earlier Nomad agent of this stack left behind", "count", k)
	}
	if s.docker {
		ctx, cancel := context.WithTimeout(ctx, time.Minute)
		names := map[string]bool{s.NodeName: true}
		for _, nd := range nodes {
			names[nd.Name] = true
		}
		removed, err := RemoveContainers(ctx, func(node string) bool { return names[node] })
		cancel()
		if err != nil {
			errs = append(errs, err)
		} else if removed > 0 && s.throwaway {
			// After a purge Nomad has stopped them itself; any found here
			// were left by a task Nomad could not stop, or by a kill.
			s.log.Warn("removed leftover containers", "node", s.NodeName, "count", removed)
		} else if removed > 0 {
			// Expected: the jobs stay, their containers do not; the next
			// Start's client restores the allocations and starts new ones.
			s.log.Info("removed the node's containers", "node", s.NodeName, "count", removed)
		}
	}
	if s.rec.SliceNet {
		// After the containers: a network with endpoints cannot be removed.
		// A kept stack keeps its network (its address), never its rules.
		ctx, cancel := context.WithTimeout(ctx, time.Minute)
		remove := removeSliceFirewall
		if s.throwaway {
			remove = removeSliceNet
		}
		if err := remove(ctx, s.NodeName); err != nil {
			errs = append(errs, err)
		}
		cancel()
	}
	for _, nd := range nodes {
		if err := nd.stopConsul(); err != nil {
			errs = append(errs, err)
		}
	}
	if c != nil {
		if err := c.proc.stop(15 * time.Second); err != nil {
			errs = append(errs, err)
		}
	}
	if pg != nil {
		if err := pg.proc.stop(30 * time.Second); err != nil {
			errs = append(errs, err)
		}
	}
	// Nomad's clients mount a tmpfs for each task's secrets/ and private/
	// and leave them mounted when they stop. A throwaway directory must be
	// removable; a kept one (make run) must not leave two mounts per
	// allocation on the host after Ctrl-C: the next Start mounts fresh ones
	// for the allocations Nomad will restore (remountTaskSecrets). Every
	// node's data directory (nomad, nomad-2, ...) is under s.Dir.
	if err := unmountUnder(s.Dir); err != nil {
		errs = append(errs, err)
	}
	if len(errs) == 0 {
		if err := os.Remove(filepath.Join(s.Dir, runningFile)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	// Released even after errors: running.json, kept then, tells the next
	// Start or Cleanup what may still need stopping.
	if s.lock != nil {
		s.lock.Close()
	}
	if err := errors.Join(errs...); err != nil {
		s.log.Warn("stopped with errors", "took", time.Since(t0).Round(time.Millisecond), "err", err)
		return fmt.Errorf("%s: %w", op, err)
	}
	s.log.Info("stopped", "took", time.Since(t0).Round(time.Millisecond))
	return nil
}

// PIDs returns the process id of each agent that was started, by name
// ("postgres", "consul", "nomad", and "nomad-<i>", "consul-<i>" of the
// extra nodes).
func (s *Stack) PIDs() map[string]int {
	m := map[string]int{}
	if s == nil {
		return m
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.Postgres != nil && s.Postgres.proc != nil {
		m["postgres"] = s.Postgres.proc.pid
	}
	if s.Consul != nil && s.Consul.proc != nil {
		m["consul"] = s.Consul.proc.pid
	}
	if s.Nomad != nil && s.Nomad.proc != nil {
		m["nomad"] = s.Nomad.proc.pid
	}
	for _, nd := range s.Nodes {
		if nd.Nomad != nil && nd.Nomad.proc != nil {
			m["nomad-"+strconv.Itoa(nd.index)] = nd.Nomad.proc.pid
		}
		if nd.Consul != nil && nd.Consul.proc != nil {
			m["consul-"+strconv.Itoa(nd.index)] = nd.Consul.proc.pid
		}
	}
	return m
}

// ErrInUse: the state directory belongs to a stack that is running, in
// this process or another.
var ErrInUse = errors.New("the state directory is in use by a running stack")

// lockDir takes Dir/devenv.lock. The kernel releases a flock when its
// holder dies, however it dies, so a held lock means a live owner, and a
// stale running.json can be cleaned up without asking anyone.
func lockDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, "devenv.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%s: %w", dir, ErrInUse)
		}
		return nil, err
	}
	return f, nil
}

// Cleanup stops whatever a stack started in dir left running, as recorded
// in dir/running.json, with the same steps as Stop (including the purge of
// Nomad jobs for a throwaway stack, while Nomad is still up). Use it when
// the process that called Start died: testsupport's watchdog does, and so
// does Start. It does nothing when nothing is recorded, and returns
// ErrInUse, touching nothing, while the stack's starter is alive.
func Cleanup(ctx context.Context, dir string, logger *slog.Logger) error {
	const op = "devenv.cleanup"
	if _, err := os.Stat(filepath.Join(dir, runningFile)); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	lock, err := lockDir(dir)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	defer lock.Close()
	return cleanupLocked(ctx, dir, logger)
}

func cleanupLocked(ctx context.Context, dir string, logger *slog.Logger) error {
	const op = "devenv.cleanup"
	b, err := os.ReadFile(filepath.Join(dir, runningFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	var rec runRecord
	if err := json.Unmarshal(b, &rec); err != nil {
		// A half-written record cannot name any process; the containers are
		// still found by node name below.
		rec = runRecord{}
	}
	if logger == nil {
		logger = slog.Default()
	}
	s := &Stack{
		Dir: dir, NodeName: rec.NodeName, throwaway: rec.Throwaway, docker: rec.Docker, rec: rec,
		log: logger.With("component", "devenv", "dir", dir),
	}
	for i, name := range rec.Nodes {
		s.Nodes = append(s.Nodes, &Node{Name: name, index: i + 2})
	}
	var alive []string
	for _, r := range rec.Procs {
		p := reattach(r)
		if !p.exited() {
			alive = append(alive, fmt.Sprintf("%s (pid %d)", p.name, p.pid))
		}
		switch r.Name {
		case "postgres":
			s.Postgres = &Postgres{proc: p}
		case "consul":
			s.Consul = &Consul{proc: p}
		case "nomad":
			s.Nomad = &Nomad{Addr: rec.NomadAddr, NodeName: rec.NodeName, proc: p, Token: savedNomadToken(dir)}
		default:
			kind, i, ok := nodeIndex(r.Name)
			if !ok || i-2 >= len(s.Nodes) {
				continue
			}
			nd := s.Nodes[i-2]
			if kind == "nomad" {
				nd.Nomad = &Nomad{NodeName: nd.Name, proc: p}
			} else if kind == "consul" {
				nd.Consul = &Consul{proc: p}
			}
		}
	}
	if len(alive) > 0 {
		s.log.Warn("stopping agents whose starter is gone", "agents", strings.Join(alive, ", "))
	}
	if rec.NodeName == "" {
		s.docker = false
	}
	if err := s.stop(ctx); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	return nil
}

// RemoveDir stops what a stack left in dir (Cleanup), unmounts what Nomad
// left mounted there and removes dir. For throwaway directories. A
// directory in use by a running stack is left alone (ErrInUse).
func RemoveDir(ctx context.Context, dir string, logger *slog.Logger) error {
	err := Cleanup(ctx, dir, logger)
	if errors.Is(err, ErrInUse) {
		return err
	}
	// After a failed Cleanup, still remove what can be removed.
	return errors.Join(err, removeAll(dir))
}

func removeAll(dir string) error {
	var errs []error
	if err := unmountUnder(dir); err != nil {
		errs = append(errs, err)
	}
	if err := os.RemoveAll(dir); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// RemoveContainers force-removes the Docker containers that a Nomad node
// whose name satisfies match started (label com.hashicorp.nomad.node_name,
// which the docker plugin sets through extra_labels). It shells out to the
// docker CLI, and returns how many it removed.
func RemoveContainers(ctx context.Context, match func(nodeName string) bool) (int, error) {
	const op = "devenv.remove_containers"
	docker, err := exec.LookPath("docker")
	if err != nil {
		return 0, fmt.Errorf("%s: docker CLI not found: %w", op, err)
	}
	out, err := exec.CommandContext(ctx, docker, "ps", "-a", "--no-trunc",
		"--filter", "label="+nodeNameLabel,
		"--format", `{{.ID}} {{.Label "`+nodeNameLabel+`"}}`).Output()
	if err != nil {
		return 0, fmt.Errorf("%s: docker ps: %w", op, cmdErr(err))
	}
	var ids []string
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		id, node, ok := strings.Cut(strings.TrimSpace(line), " ")
		if ok && match(node) {
			ids = append(ids, id)
		}
	}
	if len(ids) == 0 {
		return 0, nil
	}
	if out, err := exec.CommandContext(ctx, docker, append([]string{"rm", "-f", "-v"}, ids...)...).CombinedOutput(); err != nil {
		return 0, fmt.Errorf("%s: docker rm: %w: %s", op, err, strings.TrimSpace(string(out)))
	}
	return len(ids), nil
}

func dockerReachable(ctx context.Context) error {
	docker, err := exec.LookPath("docker")
	if err != nil {
		return fmt.Errorf("Docker was requested but the docker CLI is not installed: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, docker, "version", "--format", "{{.Server.Version}}").CombinedOutput(); err != nil {
		return fmt.Errorf("Docker was requested but the Docker Engine does not answer: %w: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

// cmdErr adds a command's stderr to its error.
func cmdErr(err error) error {
	var ee *exec.ExitError
	if errors.As(err, &ee) && len(ee.Stderr) > 0 {
		return fmt.Errorf("%w: %s", err, strings.TrimSpace(string(ee.Stderr)))
	}
	return err
}
