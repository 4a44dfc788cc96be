package devenv

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Node is an extra Nomad client node of the stack (Options.NomadClients >
// 1): a client-only Nomad agent joined to the stack's server, with a Consul
// client agent of its own joined to the stack's Consul server.
//
// It needs its own Consul agent because a Nomad client deregisters, at
// every sync, the Nomad services of its Consul agent that it does not know
// itself (command/agent/consul/service_client.go in Nomad 1.6): two Nomad
// clients on one Consul agent would remove each other's slices from the
// route table. One Consul agent per Nomad client is also how production
// runs.
//
// What it shares with the first node, on purpose: the "slice-profiles" host
// volume (Dir/profiles), so that a slice moved between the two nodes (a
// drain) finds its Chromium profile; the Docker daemon (its containers are
// labelled with its own node name). What it has of its own: a data
// directory (with the alloc dir), the agents' ports, its range of dynamic
// ports for tasks, its TMPDIR (so the orphan sweep tells its helpers
// apart), and its logs.
//
//	Dir/nomad-<i>/   agent.hcl, data/ (client state, alloc/), tmp/
//	Dir/consul-<i>/  data/
//	Dir/logs/        nomad-<i>.log, consul-<i>.log
type Node struct {
	Name   string // Nomad and Consul node name: Options.NodeName + "-<i>"
	Consul *Consul
	Nomad  *Nomad

	index int
}

// NodeNames returns the Nomad node names of the stack: the server's own
// client first, then the extra nodes.
func (s *Stack) NodeNames() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	names := []string{s.NodeName}
	for _, n := range s.Nodes {
		names = append(names, n.Name)
	}
	return names
}

func extraNodeName(base string, i int) string { return base + "-" + strconv.Itoa(i) }

// startNode starts extra node number i (2, 3, ...) and waits until its
// Nomad node is ready with every driver asked for.
func startNode(ctx context.Context, s *Stack, b binaries, ports portSet, i int, o Options) (*Node, error) {
	op := "devenv.node" + strconv.Itoa(i)
	t0 := time.Now()
	nd := &Node{Name: extraNodeName(o.NodeName, i), index: i}
	s.mu.Lock()
	s.Nodes = append(s.Nodes, nd)
	s.rec.Nodes = append(s.rec.Nodes, nd.Name)
	err := s.saveRecordLocked()
	s.mu.Unlock()
	if err != nil {
		return nd, fmt.Errorf("%s: %w", op, err)
	}
	// Seven ports, held together so that none is handed out twice. Not
	// saved in ports.json: nobody bookmarks an extra node.
	p, err := freePorts(7)
	if err != nil {
		return nd, fmt.Errorf("%s: %w", op, err)
	}
	consulHTTP, consulSerf, consulServer, nomadHTTP, nomadRPC, nomadSerf, consulWAN := p[0], p[1], p[2], p[3], p[4], p[5], p[6]

	// Consul client agent.
	cdir := filepath.Join(s.Dir, "consul-"+strconv.Itoa(i))
	if err := os.MkdirAll(filepath.Join(cdir, "data"), 0o755); err != nil {
		return nd, fmt.Errorf("%s: %w", op, err)
	}
	nd.Consul = &Consul{Addr: "127.0.0.1:" + strconv.Itoa(consulHTTP), Token: s.ACL.ConsulManagement}
	aclPath := filepath.Join(cdir, "acl.hcl")
	if err := os.WriteFile(aclPath, []byte(consulACLConfig(s.ACL, false)+consulAgentSettings), 0o600); err != nil {
		return nd, fmt.Errorf("%s: %w", op, err)
	}
	cpr, err := startProc(procSpec{
		name: "consul-" + strconv.Itoa(i), path: b.consul, dir: cdir,
		args: []string{
			"agent",
			"-config-file=" + aclPath,
			"-node=" + nd.Name,
			"-data-dir=" + filepath.Join(cdir, "data"),
			"-bind=127.0.0.1",
			"-client=127.0.0.1",
			"-http-port=" + strconv.Itoa(consulHTTP),
			"-dns-port=-1",
			"-serf-lan-port=" + strconv.Itoa(consulSerf),
			"-serf-wan-port=" + strconv.Itoa(consulWAN),
			"-server-port=" + strconv.Itoa(consulServer),
			"-grpc-port=-1",
			"-retry-join=127.0.0.1:" + strconv.Itoa(ports.ConsulSerfLAN),
			"-log-level=info",
		},
		env:     agentEnv(),
		logPath: filepath.Join(s.Dir, "logs", "consul-"+strconv.Itoa(i)+".log"),
		stopSig: syscall.SIGTERM, group: true,
	})
	if err != nil {
		return nd, fmt.Errorf("%s: %w", op, err)
	}
	nd.Consul.proc = cpr
	if err := s.track(cpr); err != nil {
		return nd, fmt.Errorf("%s: %w", op, err)
	}
	cc, err := nd.Consul.client(2 * time.Second)
	if err != nil {
		return nd, fmt.Errorf("%s: %w", op, err)
	}
	// Ready: joined (it knows the leader) and its node is in the catalog,
	// so that Nomad's registrations through it are accepted.
	if err := cpr.waitReady(ctx, 50*time.Millisecond, func() (bool, error) {
		return consulReady(cc, nd.Name)
	}); err != nil {
		return nd, fmt.Errorf("%s: consul not ready: %w", op, err)
	}

	// Nomad client agent.
	base := filepath.Join(s.Dir, "nomad-"+strconv.Itoa(i))
	n := &Nomad{
		Addr:        "http://127.0.0.1:" + strconv.Itoa(nomadHTTP),
		NodeName:    nd.Name,
		DataDir:     filepath.Join(base, "data"),
		ConfigPath:  filepath.Join(base, "agent.hcl"),
		ProfilesDir: filepath.Join(s.Dir, "profiles"),
		Token:       s.ACL.NomadManagement,
	}
	nd.Nomad = n
	if err := os.MkdirAll(n.DataDir, 0o755); err != nil {
		return nd, fmt.Errorf("%s: %w", op, err)
	}
	// Both clients believe they own the host's ports: disjoint ranges.
	n.MinDynamicPort, n.MaxDynamicPort, n.slotLock = claimPortSlot()
	cfg := renderNomadConfig(n, nomadRole{
		http: nomadHTTP, rpc: nomadRPC, serf: nomadSerf,
		consulAddr: nd.Consul.Addr, consulToken: s.ACL.ConsulNomad,
		servers: []string{"127.0.0.1:" + strconv.Itoa(ports.NomadRPC)},
	}, o)
	if err := os.WriteFile(n.ConfigPath, []byte(cfg), 0o600); err != nil {
		return nd, fmt.Errorf("%s: %w", op, err)
	}
	env, err := nomadEnv(base)
	if err != nil {
		return nd, fmt.Errorf("%s: %w", op, err)
	}
	npr, err := startProc(procSpec{
		name: "nomad-" + strconv.Itoa(i), path: b.nomad, args: []string{"agent", "-config=" + n.ConfigPath}, dir: base,
		env:     env,
		logPath: filepath.Join(s.Dir, "logs", "nomad-"+strconv.Itoa(i)+".log"),
		stopSig: syscall.SIGTERM, group: true,
	})
	if err != nil {
		return nd, fmt.Errorf("%s: %w", op, err)
	}
	n.proc = npr
	if err := s.track(npr); err != nil {
		return nd, fmt.Errorf("%s: %w", op, err)
	}
	// Asked through the server: the node is ready there once it registered
	// and fingerprinted.
	server, err := s.Nomad.client(2 * time.Second)
	if err != nil {
		return nd, fmt.Errorf("%s: %w", op, err)
	}
	if err := npr.waitReady(ctx, 100*time.Millisecond, func() (bool, error) {
		return nomadReady(server, nd.Name, o.Docker)
	}); err != nil {
		return nd, fmt.Errorf("%s: nomad not ready: %w", op, err)
	}
	s.log.Info("extra nomad client ready", "node", nd.Name, "nomad", n.Addr, "consul", nd.Consul.Addr,
		"took", time.Since(t0).Round(time.Millisecond))
	return nd, nil
}

// stopNomad stops the node's Nomad agent (its allocations were purged
// through the server first when the stack is throwaway).
func (nd *Node) stopNomad(ctx context.Context, s *Stack) error {
	if nd.Nomad == nil {
		return nil
	}
	return nd.Nomad.stop(ctx, false, s.log)
}

func (nd *Node) stopConsul() error {
	if nd.Consul == nil || nd.Consul.proc == nil {
		return nil
	}
	return nd.Consul.proc.stop(15 * time.Second)
}

// nodeIndex parses the i of a "nomad-<i>" or "consul-<i>" record name.
func nodeIndex(procName string) (kind string, i int, ok bool) {
	kind, num, found := strings.Cut(procName, "-")
	if !found {
		return "", 0, false
	}
	i, err := strconv.Atoi(num)
	if err != nil || i < 2 {
		return "", 0, false
	}
	return kind, i, true
}

// freePorts returns n distinct ports free for TCP and UDP.
func freePorts(n int) ([]int, error) {
	var out []int
	var held []func()
	defer func() {
		for _, r := range held {
			r()
		}
	}()
	for range n {
		p, release, err := freePort()
		if err != nil {
			return nil, err
		}
		held = append(held, release)
		out = append(out, p)
	}
	return out, nil
}
