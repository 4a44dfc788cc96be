package devenv

import (
	"context"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
)

// TestSliceNetLifecycle: a stack with a slice network has its bridge (no
// inter-container traffic), both chains hooked where slice traffic passes,
// PostgreSQL with a password on the bridge's address and its port open;
// Stop leaves neither network nor chain, and a second stack's names differ.
func TestSliceNetLifecycle(t *testing.T) {
	t.Parallel()
	dir := newDir(t)
	node := nodeName(t)
	s := start(t, Options{Dir: dir, NodeName: node, Docker: true, Throwaway: true, NoFsync: true, SliceNetwork: true, Logger: testLogger(t)})
	sn := s.SliceNet
	if sn == nil {
		t.Fatal("no SliceNet")
	}
	icc, err := exec.Command("docker", "network", "inspect", "-f", `{{index .Options "com.docker.network.bridge.enable_icc"}}`, sn.Name).Output()
	if err != nil || strings.TrimSpace(string(icc)) != "false" {
		t.Errorf("network %s: enable_icc %q (%v), want false", sn.Name, icc, err)
	}
	for _, rule := range [][]string{
		{"INPUT", "-i", sn.Bridge, "-j", sn.InChain},
		{"DOCKER-USER", "-i", sn.Bridge, "-j", sn.FwdChain},
		{sn.InChain, "-p", "tcp", "-d", sn.Gateway, "--dport", strconv.Itoa(s.Postgres.Port), "-j", "ACCEPT"},
		{sn.FwdChain, "-d", linkLocal, "-j", "REJECT", "--reject-with", "icmp-admin-prohibited"},
	} {
		if out, err := exec.Command("iptables", append([]string{"-w", "5", "-C"}, rule...)...).CombinedOutput(); err != nil {
			t.Errorf("rule %v missing: %v %s", rule, err, out)
		}
	}
	if s.Postgres.SliceHost != sn.Gateway {
		t.Errorf("Postgres.SliceHost %q, want %q", s.Postgres.SliceHost, sn.Gateway)
	}
	connect := func(url string) (*pgx.Conn, error) { return pgx.Connect(t.Context(), url) }
	url := strings.Replace(s.Postgres.URL, "127.0.0.1", sn.Gateway, 1)
	conn, err := connect(url)
	if err != nil {
		t.Fatalf("PostgreSQL on the bridge's address: %v", err)
	}
	conn.Close(context.Background())
	bad := strings.Replace(url, s.Postgres.Password, "wrong", 1)
	if conn, err := connect(bad); err == nil {
		conn.Close(context.Background())
		t.Fatal("PostgreSQL on the bridge's address accepted a wrong password")
	}

	ln, err := sn.ListenForSlices(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	if err := sn.DisallowHostPort(t.Context(), port); err != nil {
		t.Fatal(err)
	}
	if err := exec.Command("iptables", "-w", "5", "-C", sn.InChain, "-p", "tcp", "-d", sn.Gateway, "--dport", strconv.Itoa(port), "-j", "ACCEPT").Run(); err == nil {
		t.Errorf("port %d still open after DisallowHostPort", port)
	}

	_, bridge2, in2, _ := sliceNetNames(node + "-other")
	if bridge2 == sn.Bridge || in2 == sn.InChain {
		t.Errorf("two nodes share names: %s %s", bridge2, in2)
	}

	if err := s.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if err := exec.Command("docker", "network", "inspect", sn.Name).Run(); err == nil {
		t.Errorf("network %s left after Stop", sn.Name)
	}
	out, _ := exec.Command("iptables", "-w", "5", "-S").Output()
	for _, c := range []string{sn.InChain, sn.FwdChain} {
		if strings.Contains(string(out), c) {
			t.Errorf("chain %s left after Stop", c)
		}
	}
}
