package devenv

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
)

// portSet is every port a stack listens on. Fixed defaults (8500, 8300,
// 4647, ...) would make two stacks on one machine collide, so each one is
// chosen here.
type portSet struct {
	Postgres      int `json:"postgres"`
	ConsulHTTP    int `json:"consul_http"`
	ConsulSerfLAN int `json:"consul_serf_lan"`
	ConsulSerfWAN int `json:"consul_serf_wan"`
	ConsulServer  int `json:"consul_server"`
	ConsulGRPC    int `json:"consul_grpc"`
	NomadHTTP     int `json:"nomad_http"`
	NomadRPC      int `json:"nomad_rpc"`
	NomadSerf     int `json:"nomad_serf"`
}

func (p *portSet) fields() []*int {
	return []*int{&p.Postgres, &p.ConsulHTTP, &p.ConsulSerfLAN, &p.ConsulSerfWAN, &p.ConsulServer,
		&p.ConsulGRPC, &p.NomadHTTP, &p.NomadRPC, &p.NomadSerf}
}

// choosePorts fills in every port not fixed by the caller. A port chosen by
// an earlier run with the same state directory is reused when it is still
// free: the URLs a developer bookmarked keep working across `make run`, and
// Nomad's single-server Raft keeps the peer address it persisted.
//
// Every candidate stays bound (TCP and UDP, Serf speaks both) until all are
// chosen, so that one stack never gets the same port twice. Another program
// can still take a port between here and the agent's bind; the agent then
// fails to start and says so in its log, which Start reports.
func choosePorts(path string, fixed portSet) (portSet, error) {
	var saved portSet
	if b, err := os.ReadFile(path); err == nil {
		_ = json.Unmarshal(b, &saved) // a damaged file only costs new ports
	} else if !errors.Is(err, fs.ErrNotExist) {
		return portSet{}, err
	}
	out := fixed
	var held []func()
	defer func() {
		for _, release := range held {
			release()
		}
	}()
	savedFields := saved.fields()
	for i, f := range out.fields() {
		if *f != 0 {
			continue
		}
		if p := *savedFields[i]; p != 0 {
			if release, ok := hold(p); ok {
				held = append(held, release)
				*f = p
				continue
			}
		}
		p, release, err := freePort()
		if err != nil {
			return portSet{}, err
		}
		held = append(held, release)
		*f = p
	}
	b, _ := json.MarshalIndent(out, "", "  ")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return portSet{}, err
	}
	return out, nil
}

// hold binds port on 127.0.0.1 for TCP and UDP.
func hold(port int) (release func(), ok bool) {
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, false
	}
	u, err := net.ListenPacket("udp", addr)
	if err != nil {
		l.Close()
		return nil, false
	}
	return func() { l.Close(); u.Close() }, true
}

// freePort finds a port that is free for both TCP and UDP on 127.0.0.1.
//
// It does not ask the kernel for one (port 0): the kernel hands out ports from
// its ephemeral range (32768-60999 here), the range every outgoing connection
// on the machine draws its local port from, so between this check and the
// agent's bind a test's HTTP client could take it ("bind: address already in
// use", seen with two test packages and builds running at once). A random
// port in 10000-19999, below Nomad's dynamic port range (dynamicPortsMin..)
// and the ephemeral range, is never taken that way; only another listener
// could, and another stack draws 9 of 10,000.
func freePort() (int, func(), error) {
	const lo, hi = 10000, dynamicPortsMin
	for range 200 {
		p := lo + rand.IntN(hi-lo)
		if release, ok := hold(p); ok {
			return p, release, nil
		}
	}
	return 0, nil, fmt.Errorf("no port in %d-%d free for both TCP and UDP on 127.0.0.1", lo, hi-1)
}
