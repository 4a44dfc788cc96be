package jobs_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	consulapi "github.com/hashicorp/consul/api"
	nomadapi "github.com/hashicorp/nomad/api"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/slicehub/slicehub"
	sliceconsul "github.com/slicehub/slicehub/consul"
	"github.com/slicehub/slicehub/jobs"
	"github.com/slicehub/slicehub/testsupport"
)

// The docker half needs the docker driver; testsupport fails the package
// (it does not skip) when Docker is not running.
func TestMain(m *testing.M) { testsupport.Main(m, testsupport.Options{Docker: true}) }

// repoRoot is two levels up from this package's directory.
func repoRoot(t testing.TB) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// sliceBinary builds cmd/slice for the raw_exec job.
func sliceBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "slice")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/slice")
	cmd.Dir = repoRoot(t)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/slice: %v\n%s", err, out)
	}
	return bin
}

// bootstrapGateway plays the gateway's internal bootstrap endpoint: it hands
// each slice the credentials prepared for it, once per allocation, and
// refuses a second claim with 409 as the real gateway does. It listens on
// 127.0.0.1, which the slices reach because they use host networking.
type bootstrapGateway struct {
	srv *httptest.Server

	mu     sync.Mutex
	creds  map[string]slicehub.SliceCredentials // by slice id
	claims map[string]int                       // by alloc id
}

func newBootstrapGateway(t testing.TB) *bootstrapGateway {
	g := &bootstrapGateway{creds: map[string]slicehub.SliceCredentials{}, claims: map[string]int{}}
	g.srv = httptest.NewServer(http.HandlerFunc(g.serve))
	t.Cleanup(g.srv.Close)
	return g
}

func (g *bootstrapGateway) serve(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.URL.Path != slicehub.BootstrapPath {
		http.NotFound(w, r)
		return
	}
	var req slicehub.BootstrapRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.AllocID == "" {
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	creds, ok := g.creds[req.SliceID]
	if !ok {
		http.Error(w, "unknown slice", http.StatusNotFound)
		return
	}
	g.claims[req.AllocID]++
	if g.claims[req.AllocID] > 1 {
		http.Error(w, "already claimed", http.StatusConflict)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(creds)
}

func (g *bootstrapGateway) add(sliceID string, creds slicehub.SliceCredentials) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.creds[sliceID] = creds
}

func (g *bootstrapGateway) claimsOf(allocID string) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.claims[allocID]
}

// hclVars renders HCL2 variable assignments, as a variables file would.
func hclVars(vars map[string]string) string {
	var b strings.Builder
	for k, v := range vars {
		fmt.Fprintf(&b, "%s = %s\n", k, strconv.Quote(v))
	}
	return b.String()
}

// agentClients are the stack's Nomad and Consul clients, with the
// operator's tokens.
func agentClients(t testing.TB) (*nomadapi.Client, *consulapi.Client) {
	t.Helper()
	stack := testsupport.Stack(t)
	nomad, err := stack.Nomad.Client()
	if err != nil {
		t.Fatal(err)
	}
	consul, err := stack.Consul.Client()
	if err != nil {
		t.Fatal(err)
	}
	return nomad, consul
}

func TestSliceJobs(t *testing.T) {
	nomad, consul := agentClients(t)
	gw := newBootstrapGateway(t)
	_, wa := newStandIn(t)

	cases := []struct {
		name    string
		hcl     string
		sliceID string
		vars    func(t *testing.T) map[string]string
	}{
		{"raw_exec", jobs.SliceRawExec, "42", func(t *testing.T) map[string]string {
			return map[string]string{"slice_binary": sliceBinary(t)}
		}},
		{"docker", jobs.SliceDocker, "43", func(t *testing.T) map[string]string {
			image := testsupport.SliceImage(t)
			profileDir(t, "43")
			return dockerVars(map[string]string{"image": image, "seccomp_profile": seccompProfile(t)})
		}},
	}
	// Both files define the same job ID, "slice": the cases register and
	// dispatch one after the other. A dispatched child keeps its own copy of
	// the spec, so the raw_exec child keeps running when the docker variant
	// replaces the parent.
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			creds := slicehub.SliceCredentials{
				DatabaseURL:  testsupport.NewDatabase(t),
				GatewayToken: "token-for-slice-" + c.sliceID + "-" + strconv.FormatInt(time.Now().UnixNano(), 36),
			}
			gw.add(c.sliceID, creds)

			vars := c.vars(t)
			vars["bootstrap_url"] = gw.srv.URL
			vars["datacenters"] = "dc1"
			vars["wa_url"] = wa.URL + "/"
			job, err := nomad.Jobs().ParseHCLOpts(&nomadapi.JobsParseRequest{
				JobHCL: c.hcl, Variables: hclVars(vars), Canonicalize: true,
			})
			if err != nil {
				t.Fatalf("ParseHCLOpts: %v", err)
			}
			checkJobShape(t, job)
			if _, _, err := nomad.Jobs().RegisterOpts(job, nil, nil); err != nil {
				t.Fatalf("RegisterOpts: %v", err)
			}

			t0 := time.Now()
			// memory_soft_mb: a dispatch's own value over the job-wide
			// variable (far above any use: the governor never acts here).
			resp, _, err := nomad.Jobs().Dispatch(slicehub.NomadJobID, map[string]string{slicehub.MetaSliceID: c.sliceID, "memory_soft_mb": "100000"}, nil, "", nil)
			if err != nil {
				t.Fatalf("Dispatch: %v", err)
			}
			child := resp.DispatchedJobID
			t.Cleanup(func() {
				if _, _, err := nomad.Jobs().Deregister(child, true, nil); err != nil {
					t.Errorf("deregister %s: %v", child, err)
				}
			})

			entry := waitPassing(t, consul, c.sliceID)
			t.Logf("%s: dispatch to passing in Consul: %v", c.name, time.Since(t0).Round(time.Millisecond))
			if entry.Service.Meta[slicehub.MetaSliceID] != c.sliceID {
				t.Fatalf("service meta %v, want slice_id=%s", entry.Service.Meta, c.sliceID)
			}
			allocID := entry.Service.Meta["alloc_id"]
			addr := fmt.Sprintf("%s:%d", entry.Service.Address, entry.Service.Port)

			// The credentials reached the slice and only the slice: the token
			// works, and neither secret is in the job Nomad stores.
			checkWhoami(t, addr, creds.GatewayToken, c.sliceID)
			checkSoftThreshold(t, addr, creds.GatewayToken, 100000<<20)
			stored, _, err := nomad.Jobs().Info(child, nil)
			if err != nil {
				t.Fatal(err)
			}
			spec, _ := json.Marshal(stored)
			for _, secret := range []string{creds.DatabaseURL, creds.GatewayToken} {
				if bytes.Contains(spec, []byte(secret)) {
					t.Fatalf("a credential is in the stored job %s", child)
				}
			}

			// A task restart inside the allocation reuses the cached
			// credentials: the gateway sees no second claim (it would answer
			// 409 and the slice would never become healthy).
			alloc, _, err := nomad.Allocations().Info(allocID, nil)
			if err != nil {
				t.Fatal(err)
			}
			tr := time.Now()
			if err := nomad.Allocations().Restart(alloc, "slice", nil); err != nil {
				t.Fatalf("restart task: %v", err)
			}
			testsupport.Eventually(t, time.Minute, "task restarted", func() (bool, error) {
				a, _, err := nomad.Allocations().Info(allocID, nil)
				if err != nil {
					return false, err
				}
				ts := a.TaskStates["slice"]
				return ts != nil && ts.Restarts >= 1 && ts.State == "running", nil
			})
			// Consul keeps the last check result across the restart, so ask
			// the new process itself.
			testsupport.Eventually(t, time.Minute, "restarted slice healthy", func() (bool, error) {
				resp, err := http.Get("http://" + addr + "/api/health")
				if err != nil {
					return false, err
				}
				resp.Body.Close()
				return resp.StatusCode == http.StatusOK, fmt.Errorf("health %d", resp.StatusCode)
			})
			t.Logf("%s: task restart to healthy in %v", c.name, time.Since(tr).Round(time.Millisecond))
			checkWhoami(t, addr, creds.GatewayToken, c.sliceID)
			if n := gw.claimsOf(allocID); n != 1 {
				t.Fatalf("allocation %s claimed the credentials %d times, want 1", allocID, n)
			}
			checkLogs(t, nomad, child, allocID, c.name == "docker")
		})
	}
}

// checkLogs asserts that the slice's logs of both runs (before and after
// the task restart) are readable through Nomad's logs API and through
// `slicectl slices logs` (through the admin API).
// The docker slice (logs disabled in the job, slice/logrotate.go) must get
// them with no logmon and no docker_logger for its allocation; the
// raw_exec slice, which keeps Nomad's logmon, shows that the helpers are
// found when they exist.
func checkLogs(t *testing.T, nc *nomadapi.Client, jobID, allocID string, ownLogs bool) {
	t.Helper()
	helpers := allocHelpers(testsupport.Stack(t).PIDs()["nomad"], allocID)
	if ownLogs && len(helpers) != 0 {
		t.Errorf("allocation %s has Nomad log helpers %v; want none (logs disabled)", allocID, helpers)
	}
	if !ownLogs && !slicesContains(helpers, "logmon") {
		t.Errorf("allocation %s (Nomad's logs): helpers %v; want a logmon, or this check cannot see them", allocID, helpers)
	}
	alloc, _, err := nc.Allocations().Info(allocID, nil)
	if err != nil {
		t.Fatal(err)
	}
	if ownLogs {
		files, _, err := nc.AllocFS().List(alloc, "alloc/logs", nil)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, f := range files {
			names = append(names, f.Name)
		}
		t.Logf("alloc/logs: %v", names)
		if !slicesContains(names, "slice.stderr.0") {
			t.Errorf("alloc/logs holds %v; want slice.stderr.0 written by the slice", names)
		}
	}
	// The first run's last line (written as it stopped: the entrypoint
	// drained it before the container ended) and the second run's first.
	want := []string{`"msg":"shutting down"`, `"msg":"reusing the credentials cached for this allocation"`}
	read := func(what string, open func() (io.ReadCloser, error)) {
		var seen string
		testsupport.Eventually(t, time.Minute, what+" holding both runs' lines", func() (ok bool, err error) {
			defer func() {
				// Each distinct miss once: a later error (an agent's rate
				// limit) must not hide the first.
				if err != nil && err.Error() != seen {
					seen = err.Error()
					t.Logf("%s: %v", what, err)
				}
			}()
			r, err := open()
			if err != nil {
				return false, err
			}
			defer r.Close()
			b, err := io.ReadAll(r)
			if err != nil {
				return false, err
			}
			for _, w := range want {
				if !strings.Contains(string(b), w) {
					return false, fmt.Errorf("%d bytes without %s", len(b), w)
				}
			}
			return strings.Count(string(b), `"msg":"listening"`) >= 2, fmt.Errorf("fewer than 2 listening lines")
		})
	}
	read("Nomad's logs API", func() (io.ReadCloser, error) {
		cancel := make(chan struct{})
		frames, errs := nc.AllocFS().Logs(alloc, false, "slice", "stderr", "start", 0, cancel, nil)
		return nomadapi.NewFrameReader(frames, errs, cancel), nil
	})
	slicectl := slicectlLogs(t, nc, jobID)
	read("slicectl slices logs", func() (io.ReadCloser, error) {
		out, err := slicectl()
		return io.NopCloser(strings.NewReader(out)), err
	})
}

func slicesContains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// checkJobShape asserts the parts of the contract that the spec itself
// carries.
func checkJobShape(t *testing.T, job *nomadapi.Job) {
	t.Helper()
	if *job.ID != slicehub.NomadJobID || *job.Type != "batch" {
		t.Fatalf("job %s type %s, want %s batch", *job.ID, *job.Type, slicehub.NomadJobID)
	}
	if job.ParameterizedJob == nil || len(job.ParameterizedJob.MetaRequired) != 1 || job.ParameterizedJob.MetaRequired[0] != slicehub.MetaSliceID {
		t.Fatalf("parameterized %+v, want meta_required [slice_id]", job.ParameterizedJob)
	}
	// The governor's threshold and the stand-in's weight: job-wide meta
	// from the variables, which a dispatch may override.
	if opt := strings.Join(job.ParameterizedJob.MetaOptional, ","); opt != "memory_soft_mb,wa_standin_weight" {
		t.Fatalf("meta_optional %q, want memory_soft_mb,wa_standin_weight", opt)
	}
	if _, ok := job.Meta["memory_soft_mb"]; !ok {
		t.Fatalf("job meta %v: want the memory_soft_mb default", job.Meta)
	}
	g := job.TaskGroups[0]
	if g.RestartPolicy == nil || *g.RestartPolicy.Mode != "delay" {
		t.Fatalf("restart %+v, want mode delay (a batch job's default gives up)", g.RestartPolicy)
	}
	if g.ReschedulePolicy == nil || !*g.ReschedulePolicy.Unlimited {
		t.Fatalf("reschedule %+v, want unlimited", g.ReschedulePolicy)
	}
	if len(g.Services) != 1 || g.Services[0].Name != slicehub.ConsulService || g.Services[0].Provider != "consul" {
		t.Fatalf("services %+v, want one consul service %q", g.Services, slicehub.ConsulService)
	}
	// Two checks: "slice health" routes and restarts; the WhatsApp check
	// only informs (no check_restart), with the alert's threshold.
	checks := map[string]nomadapi.ServiceCheck{}
	for _, c := range g.Services[0].Checks {
		checks[c.Name] = c
	}
	if h, ok := checks["slice health"]; !ok || h.CheckRestart == nil {
		t.Fatalf("checks %+v: want \"slice health\" with check_restart", checks)
	}
	if w, ok := checks[slicehub.WhatsAppCheck]; !ok || w.CheckRestart != nil ||
		!strings.HasPrefix(w.Path, slicehub.WhatsAppCheckPath+"?"+slicehub.DownAfterParam+"=") {
		t.Fatalf("checks %+v: want %q on %s?%s=..., without check_restart", checks, slicehub.WhatsAppCheck, slicehub.WhatsAppCheckPath, slicehub.DownAfterParam)
	}
	env := g.Tasks[0].Env
	for k := range env {
		if k == "DATABASE_URL" || k == "SLICEHUB_GATEWAY_TOKEN" {
			t.Fatalf("the job sets %s: credentials must come from the bootstrap", k)
		}
	}
}

// waitPassing waits until the slice's service instance is passing in Consul
// and returns it. It uses blocking queries, so it returns as soon as Consul
// knows (the measured dispatch-to-passing time is not rounded to a poll).
func waitPassing(t testing.TB, consul *consulapi.Client, sliceID string) *consulapi.ServiceEntry {
	t.Helper()
	var index uint64
	var found *consulapi.ServiceEntry
	testsupport.Eventually(t, 3*time.Minute, "slice "+sliceID+" passing in Consul", func() (bool, error) {
		// Routable, not passingOnly: the WhatsApp check may be a warning.
		entries, meta, err := consul.Health().Service(slicehub.ConsulService, "", false, &consulapi.QueryOptions{
			Filter:    fmt.Sprintf("Service.Meta.%s == %q", slicehub.MetaSliceID, sliceID),
			WaitIndex: index, WaitTime: 2 * time.Second,
		})
		if err != nil {
			index = 0
			return false, err
		}
		if meta.LastIndex < index {
			index = 0 // the index went backwards: start over
		} else {
			index = meta.LastIndex
		}
		entries = sliceconsul.RoutableOnly(entries)
		if len(entries) == 0 {
			return false, fmt.Errorf("no passing instance of slice %s", sliceID)
		}
		found = entries[0]
		return true, nil
	})
	return found
}

// checkWhoami calls the slice as the gateway would, and without the token.
// checkSoftThreshold reads the slice's /api/metrics: the governor's soft
// threshold is the one the dispatch gave.
func checkSoftThreshold(t *testing.T, addr, token string, want float64) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/api/metrics", nil)
	req.Header.Set(slicehub.HeaderGatewayToken, token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("/api/metrics: %d %v", resp.StatusCode, err)
	}
	ms := fams["slicehub_slice_memory_soft_bytes"].GetMetric()
	if len(ms) != 1 || ms[0].GetGauge().GetValue() != want {
		t.Fatalf("slicehub_slice_memory_soft_bytes = %v; want %v (the dispatch's memory_soft_mb)", ms, want)
	}
}

func checkWhoami(t *testing.T, addr, token, sliceID string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/api/whoami", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("whoami without token = %d, want 401", resp.StatusCode)
	}
	req.Header.Set(slicehub.HeaderGatewayToken, token)
	req.Header.Set(slicehub.HeaderUserID, "9")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var who struct {
		SliceID string `json:"slice_id"`
		UserID  string `json:"user_id"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&who); err != nil || resp.StatusCode != 200 {
		t.Fatalf("whoami with token = %d %v", resp.StatusCode, err)
	}
	if who.SliceID != sliceID || who.UserID != "9" {
		t.Fatalf("whoami = %+v, want slice %s user 9", who, sliceID)
	}
}
