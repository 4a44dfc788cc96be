package hostile_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	consulapi "github.com/hashicorp/consul/api"

	"github.com/slicehub/slicehub"
	slicecsl "github.com/slicehub/slicehub/consul"
	"github.com/slicehub/slicehub/slice"
	"github.com/slicehub/slicehub/testsupport"
)

func TestMain(m *testing.M) {
	testsupport.Main(m, testsupport.Options{Docker: true, SliceNetwork: true})
}

// attempt is what the probe reads (hostile/probe's Attempt) plus what the
// test expects of it.
type attempt struct {
	Name      string `json:"name"`
	Kind      string `json:"kind"`
	Addr      string `json:"addr,omitempty"`
	Query     string `json:"query,omitempty"`
	Method    string `json:"method,omitempty"`
	URL       string `json:"url,omitempty"`
	Unix      string `json:"unix,omitempty"`
	Body      string `json:"body,omitempty"`
	CredsFile string `json:"creds_file,omitempty"`
	Database  string `json:"database,omitempty"`
	Path      string `json:"path,omitempty"`
	TokenFile string `json:"token_file,omitempty"`

	// allow: the attempt must get through (wantStatus, when set, is the
	// HTTP status it must get). Otherwise it must not get through, or get
	// an HTTP status in denyStatus.
	allow      bool
	wantStatus int
	denyStatus []int
	// denyNeeds, for a denial: the attempt must have got as far as an
	// answer (an HTTP status in denyStatus), or fail with this text. A
	// denial for another reason (a socket that is not there, a wrong
	// parameter) would prove nothing.
	denyNeeds string
	// mustAnswer, for a denial: only an HTTP status in denyStatus counts
	// (or, with emptyOK, a 200 listing nothing).
	mustAnswer, emptyOK bool
}

type result struct {
	Name    string `json:"name"`
	Reached bool   `json:"reached"`
	Status  int    `json:"status"`
	Detail  string `json:"detail"`
}

// sliceCtr is one running slice, as the attacker's target or seat.
type sliceCtr struct {
	id, alloc, container, ip string
	port                     int // the container's (and the published) port
	uid                      int
}

func TestHostileSlice(t *testing.T) {
	st := testsupport.Stack(t)
	sn := st.SliceNet
	root := testsupport.RepoRoot(t)
	image := testsupport.SliceImage(t)
	tmp := t.TempDir()
	daemon := filepath.Join(tmp, "slicehub")
	probe := filepath.Join(tmp, "probe")
	for bin, pkg := range map[string]string{daemon: "./cmd/slicehub", probe: "./hostile/probe"} {
		cmd := exec.Command("go", "build", "-o", bin, pkg)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", pkg, err, out)
		}
	}
	internet := startInternet(t, probe)

	// The bootstrap-only listener's port, opened in the firewall.
	bl := testsupport.SliceListener(t)
	bootstrapAddr := bl.Addr().String()
	bl.Close()
	// The gateway's other listeners on every address of the host, and a
	// host service of the same kind: only the firewall keeps slices away.
	public, internal := freePortAll(t), freePortAll(t)
	decoy := hostService(t)

	cmd := exec.Command(daemon, "serve",
		"-addr", public, "-internal-addr", internal, "-bootstrap-addr", bootstrapAddr,
		"-database-url", testsupport.NewDatabase(t),
		"-consul-addr", st.Consul.Addr, "-nomad-addr", st.Nomad.Addr,
		"-min-warm", "2", "-max-slices", "3", "-reconcile-interval", "1s",
		// Warm slices are recycled (retired) after this: the end of the test
		// watches a retired slice's profile go. It leaves Chromium the
		// time checkChromium gives it, on a loaded machine.
		"-warm-ttl", "120s",
		"-slice-image", image, "-slice-network", sn.Name, "-slice-db-host", st.Postgres.SliceHost,
		"-wa-standin", "true", "-log-format", "text")
	cmd.Dir = root
	var daemonLog bytes.Buffer
	cmd.Stdout, cmd.Stderr = &daemonLog, &daemonLog
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
		}
		if t.Failed() {
			t.Logf("daemon log:\n%s", tail(daemonLog.String(), 60))
		}
	})

	slices := waitSlices(t, 2)
	a, b := slices[0], slices[1]
	// Chromium runs in the confined slice (its sandbox included, on the
	// bridge): the stand-in's QR code is up, which the WhatsApp check
	// reports as a warning (waiting for a scan); a browser that cannot
	// start is critical. First, before the warm TTL retires the slice.
	checkChromium(t, a)
	t.Logf("attacker: slice %s (alloc %s, uid %d, %s); neighbour: slice %s (%s:%d)", a.id, a.alloc[:8], a.uid, a.ip, b.id, b.ip, b.port)

	// What the firewall must hold before anything is sent towards
	// link-local: without its rule the probe's packets would leave this
	// machine.
	if _, err := exec.Command("iptables", "-w", "5", "-C", sn.FwdChain, "-d", "169.254.0.0/16", "-j", "REJECT", "--reject-with", "icmp-admin-prohibited").CombinedOutput(); err != nil {
		t.Fatalf("the slice network's forward chain %s has no link-local reject: %v", sn.FwdChain, err)
	}
	// The decoy answers from the host: a denial below is the firewall's.
	if c, err := net.DialTimeout("tcp", net.JoinHostPort(sn.Gateway, strconv.Itoa(decoy)), 2*time.Second); err != nil {
		t.Fatalf("the host service does not answer on the bridge's address from the host: %v", err)
	} else {
		c.Close()
	}

	attempts := buildAttempts(t, st.Dir, sn.Gateway, bootstrapAddr, public, internal, decoy, internet, a, b)
	results := runProbe(t, probe, a, attempts)

	denied, allowed, failures := 0, 0, 0
	for i, at := range attempts {
		r := results[i]
		ok := false
		switch {
		case at.allow && at.wantStatus != 0:
			ok = r.Reached && r.Status == at.wantStatus
		case at.allow:
			ok = r.Reached
		case at.mustAnswer:
			ok = r.Reached && (contains(at.denyStatus, r.Status) || (at.emptyOK && r.Status == 200 && r.Detail == "[]"))
		case at.denyNeeds != "":
			ok = (r.Reached && contains(at.denyStatus, r.Status)) || (!r.Reached && strings.Contains(r.Detail, at.denyNeeds))
		default:
			ok = !r.Reached || (r.Status != 0 && contains(at.denyStatus, r.Status))
		}
		verdict := "denied"
		if at.allow {
			verdict = "allowed"
		}
		if !ok {
			failures++
			t.Errorf("%s: want %s, got reached=%v status=%d: %s", at.Name, verdict, r.Reached, r.Status, r.Detail)
			continue
		}
		if at.allow {
			allowed++
		} else {
			denied++
		}
		t.Logf("ok  %-7s %s (%s)", verdict, at.Name, r.Detail)
	}

	// Host-side facts the attempts stand on: the slices' uids differ, their
	// profile directories are their own (0700), and the container mounts
	// only its own.
	failures += checkStorage(t, st.Dir, a, b)
	failures += checkProcesses(t, a)
	// No job the attacker tried to submit exists (an operator's view).
	if nc, err := st.Nomad.Client(); err != nil {
		t.Errorf("nomad client: %v", err)
		failures++
	} else if _, _, err := nc.Jobs().Info("hostile", nil); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("FAIL: the job the attacker submitted exists, or Nomad could not say (%v)", err)
		failures++
	}

	t.Logf("hostile slice: %d attempts from inside slice %s as uid %d: %d denied as required, %d allowed as required, %d failures",
		len(attempts), a.id, a.uid, denied, allowed, failures)

	// Retired (the warm TTL), its profile goes from the node: the WhatsApp
	// login in it is a credential.
	profile := filepath.Join(st.Dir, "profiles", a.id)
	t0 := time.Now()
	testsupport.Eventually(t, 4*time.Minute, "the retired slice's profile deleted", func() (bool, error) {
		_, err := os.Lstat(profile)
		if os.IsNotExist(err) {
			return true, nil
		}
		return false, fmt.Errorf("%s: %v", profile, err)
	})
	t.Logf("slice %s retired by the warm TTL; its profile was deleted %v after the attack", a.id, time.Since(t0).Round(time.Second))
}

// buildAttempts lists what the attacker in slice a tries.
func buildAttempts(t *testing.T, dir, gw, bootstrap, public, internal string, decoy int, internet string, a, b sliceCtr) []attempt {
	t.Helper()
	var ports map[string]int
	raw, err := os.ReadFile(filepath.Join(dir, "ports.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &ports); err != nil {
		t.Fatal(err)
	}
	hosts := hostAddrs(t)
	deny := func(name, addr string) attempt { return attempt{Name: name, Kind: "tcp", Addr: addr} }
	var at []attempt
	names := make([]string, 0, len(ports))
	for n := range ports {
		names = append(names, n)
	}
	sort.Strings(names)
	_, publicPort, _ := net.SplitHostPort(public)
	_, internalPort, _ := net.SplitHostPort(internal)
	_, bootstrapPort, _ := net.SplitHostPort(bootstrap)
	for _, h := range hosts {
		for _, n := range names {
			if n == "postgres" && h == gw {
				continue // its own database: allowed below
			}
			at = append(at, deny(fmt.Sprintf("host %s: %s port", h, n), net.JoinHostPort(h, strconv.Itoa(ports[n]))))
		}
		at = append(at,
			deny("host "+h+": gateway public listener", net.JoinHostPort(h, publicPort)),
			deny("host "+h+": gateway internal listener", net.JoinHostPort(h, internalPort)),
			deny("host "+h+": another host service", net.JoinHostPort(h, strconv.Itoa(decoy))),
			deny("host "+h+": Docker API (2375)", net.JoinHostPort(h, "2375")),
			deny("host "+h+": Docker API TLS (2376)", net.JoinHostPort(h, "2376")),
			deny("host "+h+": Consul DNS (8600)", net.JoinHostPort(h, "8600")),
			deny("host "+h+": the neighbour's published port", net.JoinHostPort(h, strconv.Itoa(b.port))),
			attempt{Name: "host " + h + ": DNS query to Consul's DNS port", Kind: "udp-dns", Addr: net.JoinHostPort(h, "8600"), Query: "consul.service.consul"},
		)
		if h != gw {
			at = append(at, deny("host "+h+": bootstrap port on another address", net.JoinHostPort(h, bootstrapPort)))
		}
	}
	bootstrapBase := "http://" + bootstrap
	at = append(at,
		deny("the neighbour slice, directly", net.JoinHostPort(b.ip, strconv.Itoa(b.port))),
		deny("link-local metadata 169.254.169.254:80", "169.254.169.254:80"),
		attempt{Name: "bootstrap listener: /metrics", Kind: "http", URL: bootstrapBase + "/metrics", denyStatus: []int{404}},
		attempt{Name: "bootstrap listener: /readyz", Kind: "http", URL: bootstrapBase + "/readyz", denyStatus: []int{404}},
		attempt{Name: "bootstrap listener: /healthz", Kind: "http", URL: bootstrapBase + "/healthz", denyStatus: []int{404}},
		attempt{Name: "bootstrap listener: /METRICS", Kind: "http", URL: bootstrapBase + "/METRICS", denyStatus: []int{404}},
		attempt{Name: "Docker socket /var/run/docker.sock", Kind: "http", Unix: "/var/run/docker.sock", URL: "http://docker/containers/json"},
		attempt{Name: "Docker socket /run/docker.sock", Kind: "http", Unix: "/run/docker.sock", URL: "http://docker/containers/json"},
		// Nomad's task API socket: a path to Nomad that no firewall sees.
		// Without a token it must refuse everything (Nomad ACLs). The
		// socket must be there (it is in every task in production; devenv
		// keeps the path short enough for it): a refusal, not a missing
		// file, is what counts.
		attempt{Name: "Nomad task API: list jobs", Kind: "http", Unix: "/secrets/api.sock", URL: "http://nomad/v1/jobs", denyStatus: []int{401, 403}, mustAnswer: true},
		attempt{Name: "Nomad task API: submit a job", Kind: "http", Unix: "/secrets/api.sock", Method: "PUT", URL: "http://nomad/v1/jobs",
			Body:       `{"Job":{"ID":"hostile","Name":"hostile","Type":"batch","Datacenters":["dc1"],"TaskGroups":[{"Name":"g","Tasks":[{"Name":"t","Driver":"raw_exec","Config":{"command":"/bin/true"}}]}]}}`,
			denyStatus: []int{401, 403}, mustAnswer: true},
		attempt{Name: "Nomad task API: read variables", Kind: "http", Unix: "/secrets/api.sock", URL: "http://nomad/v1/vars?prefix=nomad/jobs", denyStatus: []int{401, 403}, mustAnswer: true},
		attempt{Name: "Nomad task API: read the gateway's variables", Kind: "http", Unix: "/secrets/api.sock", URL: "http://nomad/v1/var/nomad/jobs/gateway", denyStatus: []int{401, 403}, mustAnswer: true},
		// The same with the task's workload identity, should the job hand it
		// over (identity { file = true } writes secrets/nomad_token): it
		// may read nothing, and nothing may be stored where it could.
		attempt{Name: "Nomad task API with the workload identity: list jobs", Kind: "http", Unix: "/secrets/api.sock", URL: "http://nomad/v1/jobs", TokenFile: "/secrets/nomad_token", denyStatus: []int{401, 403}, mustAnswer: true},
		// Nomad 1.6 answers a job registration with a workload identity 500
		// "ACL token is invalid" (its register endpoint resolves no
		// identity claims): a refusal too, and the test checks below, as an
		// operator, that no job "hostile" exists.
		attempt{Name: "Nomad task API with the workload identity: submit a job", Kind: "http", Unix: "/secrets/api.sock", Method: "PUT", URL: "http://nomad/v1/jobs", TokenFile: "/secrets/nomad_token",
			Body:       `{"Job":{"ID":"hostile","Name":"hostile","Type":"batch","Datacenters":["dc1"],"TaskGroups":[{"Name":"g","Tasks":[{"Name":"t","Driver":"raw_exec","Config":{"command":"/bin/true"}}]}]}}`,
			denyStatus: []int{401, 403, 500}, mustAnswer: true},
		attempt{Name: "Nomad task API with the workload identity: list variables", Kind: "http", Unix: "/secrets/api.sock", URL: "http://nomad/v1/vars", TokenFile: "/secrets/nomad_token", denyStatus: []int{401, 403}, mustAnswer: true, emptyOK: true},
		attempt{Name: "Nomad task API with the workload identity: read the gateway's variables", Kind: "http", Unix: "/secrets/api.sock", URL: "http://nomad/v1/var/nomad/jobs/gateway", TokenFile: "/secrets/nomad_token", denyStatus: []int{401, 403}, mustAnswer: true},
		attempt{Name: "the neighbour's database with our credentials", Kind: "pg", CredsFile: "/secrets/credentials.json", Database: slicehub.DatabaseName(mustID(t, b.id)), denyNeeds: "permission denied"},
		attempt{Name: "the neighbour's profile (old shared mount path)", Kind: "list", Path: "/profiles/" + b.id},
		attempt{Name: "the neighbour's profile (beside ours)", Kind: "list", Path: "/profile/../" + b.id},
		attempt{Name: "the profiles volume root", Kind: "list", Path: "/profiles"},
		// The allowance.
		attempt{Name: "its own database", Kind: "pg", CredsFile: "/secrets/credentials.json", allow: true},
		attempt{Name: "the bootstrap endpoint", Kind: "http", Method: "POST", URL: bootstrapBase + slicehub.BootstrapPath, Body: "{}", allow: true, wantStatus: 400},
		attempt{Name: "DNS (Docker's resolver)", Kind: "udp-dns", Addr: "127.0.0.11:53", Query: a.container, allow: true},
		attempt{Name: "the internet (TEST-NET stand-in " + internet + ")", Kind: "http", URL: "http://" + internet + "/", allow: true, wantStatus: 200},
		attempt{Name: "its own profile", Kind: "list", Path: "/profile", allow: true},
	)
	return at
}

// runProbe copies the probe into a's container and runs the attempts there
// as a's uid.
func runProbe(t *testing.T, probe string, a sliceCtr, attempts []attempt) []result {
	t.Helper()
	if out, err := exec.Command("docker", "cp", probe, a.container+":/tmp/probe").CombinedOutput(); err != nil {
		t.Fatalf("docker cp: %v: %s", err, out)
	}
	in, err := json.Marshal(attempts)
	if err != nil {
		t.Fatal(err)
	}
	user := fmt.Sprintf("%d:%d", a.uid, a.uid)
	cmd := exec.Command("docker", "exec", "-i", "-u", user, a.container, "/tmp/probe")
	cmd.Stdin = bytes.NewReader(in)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	t0 := time.Now()
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("probe: %v: %s", err, stderr.String())
	}
	var rs []result
	dec := json.NewDecoder(bytes.NewReader(out))
	for dec.More() {
		var r result
		if err := dec.Decode(&r); err != nil {
			t.Fatalf("probe output: %v", err)
		}
		rs = append(rs, r)
	}
	if len(rs) != len(attempts) {
		t.Fatalf("probe answered %d of %d attempts", len(rs), len(attempts))
	}
	t.Logf("probe ran %d attempts as %s in %v", len(attempts), user, time.Since(t0).Round(time.Millisecond))
	return rs
}

// checkStorage: distinct uids, each profile directory its slice's own with
// mode 0700, one bind mount per container (its own directory).
func checkStorage(t *testing.T, dir string, slices ...sliceCtr) int {
	t.Helper()
	failures := 0
	uids := map[int]string{}
	for _, s := range slices {
		if other, dup := uids[s.uid]; dup {
			t.Errorf("slices %s and %s share uid %d", s.id, other, s.uid)
			failures++
		}
		uids[s.uid] = s.id
		p := filepath.Join(dir, "profiles", s.id)
		fi, err := os.Stat(p)
		if err != nil {
			t.Errorf("profile of slice %s: %v", s.id, err)
			failures++
			continue
		}
		stt := fi.Sys().(*syscall.Stat_t)
		if int(stt.Uid) != s.uid || fi.Mode().Perm() != 0o700 {
			t.Errorf("profile %s: owner %d mode %o, want %d 0700", p, stt.Uid, fi.Mode().Perm(), s.uid)
			failures++
		}
		out, err := exec.Command("docker", "inspect", "-f", `{{range .Mounts}}{{.Type}} {{.Source}} {{.Destination}}{{"\n"}}{{end}}`, s.container).Output()
		if err != nil {
			t.Fatalf("docker inspect %s: %v", s.container, err)
		}
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			f := strings.Fields(line)
			if len(f) == 3 && strings.HasPrefix(f[1], filepath.Join(dir, "profiles")) && f[1] != p {
				t.Errorf("slice %s mounts %s, not only its own profile %s", s.id, f[1], p)
				failures++
			}
		}
	}
	return failures
}

// checkProcesses: nothing in the container runs as root but Docker's init
// and the entrypoint's exec chain (none left once the slice runs), and
// the container drops every capability it does not name.
func checkProcesses(t *testing.T, a sliceCtr) int {
	t.Helper()
	failures := 0
	out, err := exec.Command("docker", "top", a.container, "-eo", "uid,pid,comm").Output()
	if err != nil {
		t.Fatalf("docker top: %v", err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) < 3 {
			continue
		}
		if f[0] != strconv.Itoa(a.uid) && f[2] != "docker-init" {
			t.Errorf("slice %s runs %s (pid %s) as uid %s, want %d", a.id, f[2], f[1], f[0], a.uid)
			failures++
		}
	}
	hc, err := exec.Command("docker", "inspect", "-f",
		`capdrop={{json .HostConfig.CapDrop}} capadd={{json .HostConfig.CapAdd}} pids={{.HostConfig.PidsLimit}} {{range .HostConfig.SecurityOpt}}{{if eq . "no-new-privileges"}}no-new-privileges{{end}}{{end}}`,
		a.container).Output()
	if err != nil {
		t.Fatal(err)
	}
	s := strings.TrimSpace(string(hc))
	if !strings.Contains(strings.ToLower(s), `capdrop=["all"]`) || !strings.HasSuffix(s, "no-new-privileges") || strings.Contains(s, "pids=0 ") {
		t.Errorf("container settings %s: want cap_drop ALL, no-new-privileges and a pids limit", s)
		failures++
	}
	t.Logf("container %s: %s", a.container, s)
	return failures
}

// chromiumBudget is how long Chromium gets to show the stand-in's QR code
// in a slice that is already routable, on a machine shared by several test
// runs; the warm TTL of TestHostileSlice is longer.
const chromiumBudget = 110 * time.Second

// checkChromium waits until slice s's WhatsApp check says a QR code is
// shown (warning) or linked (passing). It reads the check in Consul's
// catalog, as operators and the gateway see it: devenv's agents sync a
// check's output at every change (check_update_interval 0s). Before that,
// the catalog kept a warning's first output ("starting") for up to five
// minutes while the slice already showed its QR code, which is why this
// check once "stayed starting" under load. On failure it shows the slice's
// own answer and the end of its log.
func checkChromium(t *testing.T, s sliceCtr) {
	t.Helper()
	consul, err := testsupport.Stack(t).Consul.Client()
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	status := "no " + slicehub.WhatsAppCheck + " check yet"
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for time.Since(t0) < chromiumBudget {
		es, _, err := consul.Health().Service(slicehub.ConsulService, "", false, &consulapi.QueryOptions{
			Filter: fmt.Sprintf("Service.Meta.%s == %q", slicehub.MetaSliceID, s.id)})
		if err != nil {
			status = err.Error()
		}
		for _, e := range es {
			for _, c := range e.Checks {
				if c.Name != slicehub.WhatsAppCheck {
					continue
				}
				status = c.Status + ": " + strings.TrimSpace(c.Output)
				// "starting" is a warning too: only the QR code proves that
				// Chromium rendered the page.
				if (c.Status == consulapi.HealthWarning && strings.Contains(c.Output, "QR")) || c.Status == consulapi.HealthPassing {
					t.Logf("slice %s: Chromium runs in the confined slice, %v after it was routable (WhatsApp check %s)",
						s.id, time.Since(t0).Round(time.Second), tail(status, 1))
					return
				}
			}
		}
		<-tick.C
	}
	direct := "no answer"
	if resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d%s", s.port, slicehub.WhatsAppCheckPath)); err == nil {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		direct = fmt.Sprintf("%d %s", resp.StatusCode, strings.TrimSpace(string(body)))
	} else {
		direct = err.Error()
	}
	logs := testsupport.ContainerLogTail(s.container, 40)
	t.Fatalf("slice %s's Chromium showed no QR code in %v: the catalog's WhatsApp check says %q; the slice itself answers %s; its log ends:\n%s",
		s.id, chromiumBudget, status, direct, logs)
}

// waitSlices waits until n slices pass their Consul check, and describes
// them.
func waitSlices(t *testing.T, n int) []sliceCtr {
	t.Helper()
	consul, err := testsupport.Stack(t).Consul.Client()
	if err != nil {
		t.Fatal(err)
	}
	var entries []*consulapi.ServiceEntry
	testsupport.Eventually(t, 5*time.Minute, fmt.Sprintf("%d slices routable in Consul", n), func() (bool, error) {
		// Routable, as the gateway's route table says: the WhatsApp check
		// (a QR code waiting for a scan) does not count.
		entries, _, err = consul.Health().Service(slicehub.ConsulService, "", false, nil)
		if err != nil {
			return false, err
		}
		entries = slicecsl.RoutableOnly(entries)
		return len(entries) >= n, fmt.Errorf("%d passing", len(entries))
	})
	var out []sliceCtr
	for _, e := range entries[:n] {
		s := sliceCtr{id: e.Service.Meta[slicehub.MetaSliceID], alloc: e.Service.Meta["alloc_id"], port: e.Service.Port}
		s.container = "slice-" + s.alloc
		ip, err := exec.Command("docker", "inspect", "-f", `{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}`, s.container).Output()
		if err != nil {
			t.Fatalf("docker inspect %s: %v", s.container, err)
		}
		s.ip = strings.TrimSpace(string(ip))
		if s.uid, err = slice.SliceUID(s.id, 0); err != nil {
			t.Fatal(err)
		}
		// The gateway and Consul reach the slice on the node's address.
		if e.Service.Address != "127.0.0.1" {
			t.Errorf("slice %s registered at %s, want the node's address 127.0.0.1 (the published port)", s.id, e.Service.Address)
		}
		out = append(out, s)
	}
	return out
}

// startInternet stands in for the internet: a container of the test's own
// on a network of its own with a TEST-NET-3 subnet (203.0.113.0/24, never
// routed), serving HTTP on port 80, and the "uplink": the two rules that
// let the slice network's traffic into that network (Docker otherwise
// isolates its bridges from each other, as the real internet is not).
func startInternet(t *testing.T, probe string) string {
	t.Helper()
	st := testsupport.Stack(t)
	removeInternetLeftovers(t)
	name := "slicehub-inet-" + st.NodeName
	var subnet, ip string
	for i := 0; i < 16; i++ {
		base := i * 16
		subnet = fmt.Sprintf("203.0.113.%d/28", base)
		ip = fmt.Sprintf("203.0.113.%d", base+10)
		out, err := exec.Command("docker", "network", "create", "--subnet", subnet, "--label", "io.slicehub.test="+st.NodeName, name).CombinedOutput()
		if err == nil {
			break
		}
		if !strings.Contains(string(out), "overlap") {
			t.Fatalf("docker network create %s: %v: %s", name, err, out)
		}
		subnet = ""
	}
	if subnet == "" {
		t.Fatal("no free /28 in TEST-NET-3")
	}
	t.Cleanup(func() { _ = exec.Command("docker", "network", "rm", name).Run() })
	ctr := name + "-www"
	base := strings.TrimSpace(mustOutput(t, "docker", "image", "inspect", "-f", `{{index .Config.Labels "io.slicehub.base"}}`, testsupport.SliceImage(t)))
	if out, err := exec.Command("docker", "run", "-d", "--name", ctr, "--network", name, "--ip", ip,
		"--label", "io.slicehub.test="+st.NodeName,
		"-v", probe+":/probe:ro", "--entrypoint", "/probe", base, "serve", ":80").CombinedOutput(); err != nil {
		t.Fatalf("docker run: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("docker", "rm", "-f", ctr).Run() })
	inetBridge := "br-" + strings.TrimSpace(mustOutput(t, "docker", "network", "inspect", "-f", "{{.Id}}", name))[:12]
	sliceBridge := st.SliceNet.Bridge
	rules := [][]string{
		{"DOCKER-USER", "-i", sliceBridge, "-o", inetBridge, "-j", "ACCEPT"},
		{"DOCKER-USER", "-i", inetBridge, "-o", sliceBridge, "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"},
	}
	for _, r := range rules {
		// After the slice network's own jump (position 1), so that its
		// rejects still come first.
		args := append([]string{"-w", "5", "-I", r[0], "2"}, r[1:]...)
		if out, err := exec.Command("iptables", args...).CombinedOutput(); err != nil {
			t.Fatalf("iptables %v: %v: %s", args, err, out)
		}
		t.Cleanup(func() {
			_ = exec.Command("iptables", append([]string{"-w", "5", "-D", r[0]}, r[1:]...)...).Run()
		})
	}
	addr := ip + ":80"
	testsupport.Eventually(t, 30*time.Second, "the TEST-NET server answers from the host", func() (bool, error) {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return false, err
		}
		c.Close()
		return true, nil
	})
	return addr
}

// removeInternetLeftovers removes what a run that died left of its
// stand-in internet: the network and container (labelled with the node
// name of a test process that is gone) and the uplink rules whose
// interfaces no longer exist.
func removeInternetLeftovers(t *testing.T) {
	t.Helper()
	dead := func(node string) bool {
		pid, err := strconv.Atoi(strings.TrimPrefix(node, testsupport.Prefix))
		return err == nil && pid > 0 && pid != os.Getpid() && syscall.Kill(pid, 0) == syscall.ESRCH
	}
	out, _ := exec.Command("docker", "network", "ls", "--filter", "label=io.slicehub.test", "--format", `{{.Name}} {{.Label "io.slicehub.test"}}`).Output()
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		if len(f) != 2 || !dead(f[1]) {
			continue
		}
		ids, _ := exec.Command("docker", "ps", "-aq", "--filter", "label=io.slicehub.test="+f[1]).Output()
		if ids := strings.Fields(string(ids)); len(ids) > 0 {
			_ = exec.Command("docker", append([]string{"rm", "-f"}, ids...)...).Run()
		}
		_ = exec.Command("docker", "network", "rm", f[0]).Run()
		t.Logf("removed the stand-in internet %s of a run that died", f[0])
	}
	rules, _ := exec.Command("iptables", "-w", "5", "-S", "DOCKER-USER").Output()
	for _, line := range strings.Split(string(rules), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || f[0] != "-A" || !strings.Contains(line, " br-") || !strings.Contains(line, " shb-") {
			continue
		}
		gone := false
		for i := 0; i+1 < len(f); i++ {
			if f[i] == "-i" || f[i] == "-o" {
				if _, err := net.InterfaceByName(f[i+1]); err != nil {
					gone = true
				}
			}
		}
		if gone {
			_ = exec.Command("iptables", append([]string{"-w", "5", "-D"}, f[1:]...)...).Run()
		}
	}
}

// hostService is another service of the host, listening on every address.
func hostService(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "host secret") })}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Shutdown(context.Background()) })
	return ln.Addr().(*net.TCPAddr).Port
}

// freePortAll is a free port, as an address on every interface.
func freePortAll(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// hostAddrs: every IPv4 address of this host but loopback (a slice's
// loopback is its own).
func hostAddrs(t *testing.T) []string {
	t.Helper()
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, a := range addrs {
		ipn, ok := a.(*net.IPNet)
		if !ok || ipn.IP.To4() == nil || ipn.IP.IsLoopback() {
			continue
		}
		out = append(out, ipn.IP.String())
	}
	return out
}

func mustID(t *testing.T, s string) int64 {
	id, ok := slicehub.ParseSliceID(s)
	if !ok {
		t.Fatalf("bad slice id %q", s)
	}
	return id
}

func mustOutput(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).Output()
	if err != nil {
		t.Fatalf("%s %v: %v", name, args, err)
	}
	return string(out)
}

func contains(xs []int, x int) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
