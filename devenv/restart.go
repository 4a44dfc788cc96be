package devenv

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Restarting one agent of a running stack, for convergence tests: the
// platform must come back to the same state after any of its dependencies
// restarts, without duplicating anything.

// RestartConsul stops the Consul agent and starts it again on the same
// ports, as an upgrade or a crash of the agent would. Consul runs in -dev
// mode, so its catalog, sessions and KV (the leader lock) are gone; the
// services registered with it (Nomad's) come back from its data directory
// as soon as it has a leader and its ACL token, as a real agent's do,
// without waiting for Nomad's next periodic sync (30 s). It returns once
// the new agent has a leader and its node.
func (s *Stack) RestartConsul(ctx context.Context) error {
	const op = "devenv.restart_consul"
	s.mu.Lock()
	c := s.Consul
	s.mu.Unlock()
	if c == nil || c.proc == nil {
		return fmt.Errorf("%s: consul was not started", op)
	}
	bin, err := s.binaryOf(c.proc, "consul")
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	ports, err := s.savedPorts()
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	if err := c.proc.stop(15 * time.Second); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	s.log.Info("consul stopped; starting it again", "addr", c.Addr)
	nc, err := startConsul(ctx, s, bin, ports, Options{NodeName: s.NodeName})
	if nc != nil && nc.proc != nil {
		s.mu.Lock()
		c.proc = nc.proc // keep s.Consul: callers hold it
		s.mu.Unlock()
	}
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	// The extra nodes' Consul client agents joined the old server at their
	// start (-retry-join) and do not look for a new one: join them again,
	// or their slices stay out of the catalog. Their own agents kept the
	// services, and sync them to the new catalog when told (below).
	s.mu.Lock()
	nodes := append([]*Node(nil), s.Nodes...)
	s.mu.Unlock()
	for _, nd := range nodes {
		if nd.Consul == nil {
			continue
		}
		cc, err := nd.Consul.client(10 * time.Second)
		if err != nil {
			return fmt.Errorf("%s: %w", op, err)
		}
		if err := cc.Agent().Join("127.0.0.1:"+strconv.Itoa(ports.ConsulSerfLAN), false); err != nil {
			return fmt.Errorf("%s: %s rejoining: %w", op, nd.Name, err)
		}
		// The new server is back at the address the agent knew, within
		// its failure detection: to the agent that is the same server
		// updated, not a server joining, and only a join makes a client
		// agent sync its services at once (Consul 1.14,
		// agent/consul/client_serf.go: nodeJoin calls ServerUp, nodeUpdate
		// does not). The -dev server lost its catalog, so the node's
		// services would be missing until the agent's next periodic full
		// sync, a minute or more (the chaos suite measured 47 to 95 s).
		// A real server keeps its state and needs none of this. Changing
		// the agent's token is the API that triggers a full sync (only
		// when the token changes: hence there and back, through a token
		// that is also valid).
		for _, tok := range []string{s.ACL.ConsulManagement, s.ACL.ConsulAgent} {
			if _, err := cc.Agent().UpdateAgentACLToken(tok, nil); err != nil {
				return fmt.Errorf("%s: %s resync: %w", op, nd.Name, err)
			}
		}
	}
	return nil
}

// RestartNomad stops the Nomad agent with SIGTERM and starts it again with
// the same configuration, data directory and ports, as an agent upgrade
// would. Tasks keep running meanwhile: Nomad starts its executors in
// sessions of their own, which this signal does not reach (Stop, unlike
// this, kills them), and the restarted client reattaches to them. It
// returns once the agent has a leader and its node is ready again.
func (s *Stack) RestartNomad(ctx context.Context) error {
	const op = "devenv.restart_nomad"
	s.mu.Lock()
	n := s.Nomad
	s.mu.Unlock()
	if n == nil || n.proc == nil {
		return fmt.Errorf("%s: nomad was not started", op)
	}
	bin, err := s.binaryOf(n.proc, "nomad")
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	p := n.proc
	if !p.exited() {
		_ = syscall.Kill(-p.pid, syscall.SIGTERM)
		if !p.waitExit(30 * time.Second) {
			_ = syscall.Kill(-p.pid, syscall.SIGKILL)
			if !p.waitExit(10 * time.Second) {
				return fmt.Errorf("%s: nomad (pid %d) survived SIGKILL", op, p.pid)
			}
		}
	}
	s.log.Info("nomad stopped; starting it again", "addr", n.Addr)
	base := filepath.Dir(n.ConfigPath)
	env := agentEnv()
	if tmp := filepath.Join(base, "tmp"); len(tmp)+len("/plugin0123456789") < 100 {
		env = append(env, "TMPDIR="+tmp)
	}
	pr, err := startProc(procSpec{
		name: "nomad", path: bin, args: []string{"agent", "-config=" + n.ConfigPath}, dir: base,
		env:     env,
		logPath: filepath.Join(s.Dir, "logs", "nomad.log"),
		stopSig: syscall.SIGTERM, group: true,
	})
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	s.mu.Lock()
	n.proc = pr
	s.mu.Unlock()
	// The record keeps the old entry too; Cleanup skips a pid that is gone.
	if err := s.track(pr); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	client, err := n.client(2 * time.Second)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	if err := pr.waitReady(ctx, 100*time.Millisecond, func() (bool, error) {
		return nomadReady(client, n.NodeName, s.docker)
	}); err != nil {
		return fmt.Errorf("%s: not ready: %w", op, err)
	}
	return nil
}

// binaryOf returns the program a running agent was started from, so that a
// restart runs the same binary the stack found at Start; failing that, it
// looks again as Start would.
func (s *Stack) binaryOf(p *proc, name string) (string, error) {
	if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", p.pid)); err == nil && !strings.HasSuffix(exe, " (deleted)") {
		return exe, nil
	}
	bins, err := findBinaries(Options{SkipPostgres: true})
	if err != nil {
		return "", err
	}
	if name == "nomad" {
		return bins.nomad, nil
	}
	return bins.consul, nil
}

// savedPorts reads the ports this stack was started with.
func (s *Stack) savedPorts() (portSet, error) {
	var ports portSet
	b, err := os.ReadFile(filepath.Join(s.Dir, portsFile))
	if err != nil {
		return ports, err
	}
	if err := json.Unmarshal(b, &ports); err != nil {
		return ports, err
	}
	if ports.ConsulHTTP == 0 {
		return ports, errors.New("no consul port recorded")
	}
	return ports, nil
}

// KillPostgres kills PostgreSQL the way a crash of its host process would:
// SIGKILL to the postmaster and every backend at once,
// with no shutdown checkpoint, then starts it again on the same data
// directory and port, where it replays its WAL (crash recovery). It
// returns once a login works again. What survives depends on the settings
// the stack started with: with synchronous_commit on, every acknowledged
// commit. A killed process leaves the kernel's page cache intact, so this
// does not test fsync; only a power loss would.
func (s *Stack) KillPostgres(ctx context.Context) error {
	const op = "devenv.kill_postgres"
	s.mu.Lock()
	p := s.Postgres
	s.mu.Unlock()
	if p == nil || p.proc == nil {
		return fmt.Errorf("%s: postgres was not started", op)
	}
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", p.proc.pid))
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	// Every backend is its own process group (PostgreSQL's children call
	// setsid), so the postmaster's group is not enough: the tree, taken
	// while the postmaster lives, is killed in one pass.
	tree := descendants(p.proc.pid)
	if err := syscall.Kill(p.proc.pid, syscall.SIGKILL); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	for _, c := range tree {
		_ = syscall.Kill(c.pid, syscall.SIGKILL)
	}
	if !p.proc.waitExit(10 * time.Second) {
		return fmt.Errorf("%s: postgres (pid %d) survived SIGKILL", op, p.proc.pid)
	}
	// A backend still alive holds the shared memory, and the new
	// postmaster would refuse to start.
	if !pollUntil(10*time.Second, func() bool {
		for _, c := range tree {
			if sameProcess(c.pid, c.start) {
				if st, err := readStat(c.pid); err == nil && st.state != 'Z' {
					return false
				}
			}
		}
		return true
	}) {
		return fmt.Errorf("%s: postgres backends survived SIGKILL", op)
	}
	s.log.Info("postgres killed; starting it again", "port", p.Port)
	np, err := startPostgres(ctx, s, binaries{postgres: exe}, p.Port, Options{NoFsync: s.noFsync})
	if np != nil && np.proc != nil {
		s.mu.Lock()
		p.proc = np.proc // keep s.Postgres: callers hold it
		s.mu.Unlock()
	}
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	return nil
}

// FreezePostgres stops the postmaster and every backend with SIGSTOP and
// returns the function that continues them. To clients this is a database
// that does not answer, not one that is gone: connections stay open, and
// devenv's supervision sees no exit. Call thaw exactly once, even after a
// failed test (t.Cleanup), or the stack's PostgreSQL stays stopped.
func (s *Stack) FreezePostgres() (thaw func(), err error) {
	const op = "devenv.freeze_postgres"
	s.mu.Lock()
	p := s.Postgres
	s.mu.Unlock()
	if p == nil || p.proc == nil {
		return nil, fmt.Errorf("%s: postgres was not started", op)
	}
	root := p.proc.pid
	stop := func(sig syscall.Signal) []int {
		pids := []int{root}
		for _, c := range descendants(root) {
			pids = append(pids, c.pid)
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, sig)
		}
		return pids
	}
	stopped := stop(syscall.SIGSTOP)
	return func() {
		// A backend forked just before the postmaster stopped is continued
		// too: the tree is read again.
		stop(syscall.SIGCONT)
		for _, pid := range stopped {
			_ = syscall.Kill(pid, syscall.SIGCONT)
		}
	}, nil
}
