package devenv

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// SliceNet is the network slices run on (Options.SliceNetwork): a Docker
// user-defined bridge of the stack's own, with inter-container traffic off,
// and two iptables chains, also the stack's own, that leave a slice its
// database, its bootstrap endpoint, DNS and the internet, and nothing else.
//
// Why these two chains (the threat model: code running as the slice's user
// inside its container):
//
//   - INPUT (chain SH-IN-<hash>, jumped to for packets from the bridge):
//     anything a slice sends to an address of this host (the bridge's own
//     address, the host's other addresses, published ports of other
//     containers) is local traffic and crosses INPUT, never FORWARD or
//     DOCKER-USER. Only established flows and the host ports named by
//     AllowHostPort (PostgreSQL, the bootstrap listener) pass; the rest is
//     rejected, so that Consul, Nomad, the gateway's other listeners and
//     every other host service are out of reach.
//   - DOCKER-USER (chain SH-FWD-<hash>): traffic leaving the host. Link-local
//     addresses (169.254.0.0/16: cloud metadata services) and the extra
//     networks of Options.SliceDenyNets are rejected; the internet passes.
//
// Another slice is out of reach through Docker itself: enable_icc=false drops
// traffic between containers of the bridge, and Docker's isolation chains
// drop traffic between bridges (other stacks, docker0).
//
// DNS is Docker's embedded resolver at 127.0.0.11 inside the slice's own
// network namespace: it never crosses the host's INPUT chain.
//
// Names derive from the node name alone (hash), so that Cleanup finds a
// crashed stack's network and chains with nothing but running.json's node
// name, and two stacks side by side never share a chain.
type SliceNet struct {
	// Name is the Docker network (the slice job's `network` variable).
	Name string
	// Bridge is the host interface of the network.
	Bridge string
	// Subnet of the network, e.g. 172.20.0.0/16.
	Subnet string
	// Gateway is this host's address on the bridge: where slices reach
	// PostgreSQL and the bootstrap listener.
	Gateway string
	// InChain and FwdChain are the iptables chains (filter table).
	InChain, FwdChain string

	mu      sync.Mutex
	allowed map[int]bool
}

// sliceNetLabel marks the Docker networks devenv creates, with the node
// name as value (testsupport removes those of vanished test runs).
const sliceNetLabel = "io.slicehub.slicenet.node"

// sliceNetNames derives the network, bridge and chain names from the node
// name. Bridge names are limited to 15 bytes and chain names to 28.
func sliceNetNames(node string) (network, bridge, inChain, fwdChain string) {
	sum := sha256.Sum256([]byte(node))
	h := hex.EncodeToString(sum[:4])
	return "slicehub-slices-" + node, "shb-" + h, "SH-IN-" + h, "SH-FWD-" + h
}

// shortDataDir points a short path (/tmp/shnd-<hash>) at the Nomad agent's
// data directory and returns it, for the agent's data_dir. Nomad creates
// each task's API socket at <data_dir>/alloc/<alloc id>/<task>/secrets/
// api.sock and silently skips it when the path exceeds the 108 bytes of a
// unix socket address, which a test stack's directory under /tmp does. In
// production the path is short and the socket exists in every task: the
// stacks that run slices as production does (Options.SliceNetwork) must
// have it too, or the hostile suite's attempts on it would prove nothing.
func shortDataDir(node, dataDir string) (string, error) {
	link := dataDirLinkPath(node)
	if err := os.Remove(link); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return "", err
	}
	if err := os.Symlink(dataDir, link); err != nil {
		return "", err
	}
	return link, nil
}

func dataDirLinkPath(node string) string {
	sum := sha256.Sum256([]byte(node))
	return filepath.Join(os.TempDir(), "shnd-"+hex.EncodeToString(sum[:4]))
}

// linkLocal is never reachable from a slice: 169.254.169.254 is where cloud
// metadata services hand out the node's credentials.
const linkLocal = "169.254.0.0/16"

// createSliceNet creates the stack's slice network and installs its
// firewall; whatever an earlier run of the same node left is removed first.
func createSliceNet(ctx context.Context, node string, denyNets []string) (*SliceNet, error) {
	const op = "devenv.slicenet"
	// Rules are never kept: whatever an earlier run left is replaced.
	if err := removeSliceFirewall(ctx, node); err != nil {
		return nil, fmt.Errorf("%s: removing an earlier run's rules: %w", op, err)
	}
	name, bridge, in, fwd := sliceNetNames(node)
	n := &SliceNet{Name: name, Bridge: bridge, InChain: in, FwdChain: fwd, allowed: map[int]bool{}}
	// The network itself is kept by a stack that is not throwaway (`make
	// run`): its address must not change under the slices that Nomad
	// restores at the next start, which keep their bootstrap URL and
	// database host.
	if _, err := run(ctx, "docker", "network", "inspect", name); err != nil {
		if _, err := run(ctx, "docker", "network", "create", "--driver", "bridge",
			"--opt", "com.docker.network.bridge.enable_icc=false",
			"--opt", "com.docker.network.bridge.name="+bridge,
			"--label", sliceNetLabel+"="+node, name); err != nil {
			return nil, fmt.Errorf("%s: %w", op, err)
		}
	}
	out, err := run(ctx, "docker", "network", "inspect", "-f", `{{range .IPAM.Config}}{{.Subnet}} {{.Gateway}}{{end}} {{index .Options "com.docker.network.bridge.enable_icc"}}`, name)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("%s: %w", op, err), removeSliceNet(ctx, node))
	}
	f := strings.Fields(out)
	if len(f) != 3 || net.ParseIP(f[1]) == nil || f[2] != "false" {
		return nil, errors.Join(fmt.Errorf("%s: unexpected network %s: %q (want one subnet, inter-container traffic off)", op, name, out), removeSliceNet(ctx, node))
	}
	n.Subnet, n.Gateway = f[0], f[1]
	if err := n.install(ctx, denyNets); err != nil {
		return nil, errors.Join(fmt.Errorf("%s: %w", op, err), removeSliceNet(ctx, node))
	}
	return n, nil
}

// install creates both chains and the jumps to them.
func (n *SliceNet) install(ctx context.Context, denyNets []string) error {
	rules := [][]string{
		{"-N", n.InChain},
		{"-A", n.InChain, "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"},
		// AllowHostPort inserts its ACCEPTs here, before the rejects.
		{"-A", n.InChain, "-p", "tcp", "-j", "REJECT", "--reject-with", "tcp-reset"},
		{"-A", n.InChain, "-j", "REJECT", "--reject-with", "icmp-admin-prohibited"},
		{"-I", "INPUT", "1", "-i", n.Bridge, "-j", n.InChain},
		{"-N", n.FwdChain},
		{"-A", n.FwdChain, "-d", linkLocal, "-j", "REJECT", "--reject-with", "icmp-admin-prohibited"},
	}
	for _, d := range denyNets {
		rules = append(rules, []string{"-A", n.FwdChain, "-d", d, "-j", "REJECT", "--reject-with", "icmp-admin-prohibited"})
	}
	rules = append(rules,
		[]string{"-A", n.FwdChain, "-j", "RETURN"},
		// DOCKER-USER exists once dockerd has started; the driver is healthy
		// by now.
		[]string{"-I", "DOCKER-USER", "1", "-i", n.Bridge, "-j", n.FwdChain},
	)
	for _, r := range rules {
		if _, err := run(ctx, "iptables", append([]string{"-w", "5"}, r...)...); err != nil {
			return err
		}
	}
	return nil
}

// AllowHostPort lets slices open TCP connections to port on Gateway (this
// host's address on the bridge). The platform allows PostgreSQL and the
// bootstrap listener; tests allow the stand-ins they serve. Idempotent.
func (n *SliceNet) AllowHostPort(ctx context.Context, port int) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.allowed[port] {
		return nil
	}
	if _, err := run(ctx, "iptables", "-w", "5", "-I", n.InChain, "2", "-p", "tcp", "-d", n.Gateway,
		"--dport", strconv.Itoa(port), "-j", "ACCEPT"); err != nil {
		return fmt.Errorf("devenv.slicenet: allow port %d: %w", port, err)
	}
	n.allowed[port] = true
	return nil
}

// DisallowHostPort undoes AllowHostPort.
func (n *SliceNet) DisallowHostPort(ctx context.Context, port int) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.allowed[port] {
		return nil
	}
	if _, err := run(ctx, "iptables", "-w", "5", "-D", n.InChain, "-p", "tcp", "-d", n.Gateway,
		"--dport", strconv.Itoa(port), "-j", "ACCEPT"); err != nil {
		return fmt.Errorf("devenv.slicenet: disallow port %d: %w", port, err)
	}
	delete(n.allowed, port)
	return nil
}

// ListenForSlices listens on Gateway:0 and lets slices reach the port:
// for a bootstrap endpoint or a stand-in that slices must reach. Closing
// the listener does not remove the rule; the stack's Stop does.
func (n *SliceNet) ListenForSlices(ctx context.Context) (net.Listener, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort(n.Gateway, "0"))
	if err != nil {
		return nil, err
	}
	if err := n.AllowHostPort(ctx, ln.Addr().(*net.TCPAddr).Port); err != nil {
		ln.Close()
		return nil, err
	}
	return ln, nil
}

// removeSliceNet removes the network and chains of node, whatever is left
// of them. Containers still attached are disconnected by force first (they
// are the node's own slices, removed by Stop just before).
func removeSliceNet(ctx context.Context, node string) error {
	name, _, _, _ := sliceNetNames(node)
	errs := []error{removeSliceFirewall(ctx, node)}
	if _, err := run(ctx, "docker", "network", "inspect", name); err == nil {
		if out, err := run(ctx, "docker", "network", "inspect", "-f", `{{range $id, $c := .Containers}}{{$id}} {{end}}`, name); err == nil {
			for _, id := range strings.Fields(out) {
				_, _ = run(ctx, "docker", "network", "disconnect", "-f", name, id)
			}
		}
		if _, err := run(ctx, "docker", "network", "rm", name); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// removeSliceFirewall removes node's chains, the jumps to them and the
// short data_dir link, whatever is left of them.
func removeSliceFirewall(ctx context.Context, node string) error {
	_, bridge, in, fwd := sliceNetNames(node)
	var errs []error
	if err := os.Remove(dataDirLinkPath(node)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		errs = append(errs, err)
	}
	for _, r := range [][]string{
		{"-D", "INPUT", "-i", bridge, "-j", in},
		{"-D", "DOCKER-USER", "-i", bridge, "-j", fwd},
	} {
		// A jump inserted twice (a crash between two runs) is removed twice.
		for i := 0; i < 4; i++ {
			if _, err := run(ctx, "iptables", append([]string{"-w", "5"}, r...)...); err != nil {
				break
			}
		}
	}
	for _, c := range []string{in, fwd} {
		if _, err := run(ctx, "iptables", "-w", "5", "-n", "-L", c); err != nil {
			continue // no such chain
		}
		if _, err := run(ctx, "iptables", "-w", "5", "-F", c); err != nil {
			errs = append(errs, err)
		}
		if _, err := run(ctx, "iptables", "-w", "5", "-X", c); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// SliceNetNodes lists the node names of the slice networks devenv created
// on this machine (for testsupport's removal of vanished runs' leftovers).
func SliceNetNodes(ctx context.Context) ([]string, error) {
	out, err := run(ctx, "docker", "network", "ls", "--filter", "label="+sliceNetLabel,
		"--format", `{{.Label "`+sliceNetLabel+`"}}`)
	if err != nil {
		return nil, err
	}
	return strings.Fields(out), nil
}

// RemoveSliceNet removes node's slice network and firewall chains.
func RemoveSliceNet(ctx context.Context, node string) error { return removeSliceNet(ctx, node) }

// run runs a command with a deadline and returns its trimmed stdout; the
// error carries stderr.
func run(ctx context.Context, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).Output()
	if err != nil {
		return "", fmt.Errorf("%s %s: %w", name, strings.Join(args, " "), cmdErr(err))
	}
	return strings.TrimSpace(string(out)), nil
}
