package hostile_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	consulapi "github.com/hashicorp/consul/api"
	nomadapi "github.com/hashicorp/nomad/api"

	"github.com/slicehub/slicehub"
	slicecsl "github.com/slicehub/slicehub/consul"
	"github.com/slicehub/slicehub/jobs"
	"github.com/slicehub/slicehub/testsupport"
)

// TestBridgeCost measures what the slice network costs, in one run on one
// stack: the same docker job on the host's network (the baseline) and on
// the slice network (the bridge, the port published on the node's address),
// dispatches interleaved so that both see the same machine.
//
// For each dispatch it logs where the time goes: dispatch -> container
// started (Nomad's task state), -> first 200 from /api/health at the
// address Consul holds, -> routable in Consul; then a claim of the now warm
// slice: the first user request (a new connection carrying the slice's
// gateway token, as the gateway's first proxied request after a claim) to
// its answer; and requests per second through that address. It takes many
// minutes (each dispatch starts Chromium), so it runs only when asked:
//
//	SLICEHUB_MEASURE_BRIDGE=20 heavy go test -count=1 -v -run TestBridgeCost -timeout 60m ./hostile/
func TestBridgeCost(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("SLICEHUB_MEASURE_BRIDGE"))
	if n <= 0 {
		t.Skip("SKIPPED: a measurement of many minutes; set SLICEHUB_MEASURE_BRIDGE=<dispatches per mode> to run it")
	}
	st := testsupport.Stack(t)
	nomad, err := st.Nomad.Client()
	if err != nil {
		t.Fatal(err)
	}
	consul, err := st.Consul.Client()
	if err != nil {
		t.Fatal(err)
	}
	image := testsupport.SliceImage(t)
	root := testsupport.RepoRoot(t)

	// A bootstrap endpoint every mode reaches (the bridge's address is the
	// host's own too), handing every slice a fresh database.
	ln := testsupport.SliceListener(t)
	var mu sync.Mutex
	creds := map[string]slicehub.SliceCredentials{}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req slicehub.BootstrapRequest
		if r.URL.Path != slicehub.BootstrapPath || json.NewDecoder(r.Body).Decode(&req) != nil {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		mu.Lock()
		c, ok := creds[req.SliceID]
		mu.Unlock()
		if !ok {
			http.Error(w, "unknown slice", http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(c)
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Shutdown(context.Background()) })

	type mode struct{ name, network, jobID string }
	modes := []*mode{
		{name: "host", network: "host"},
		{name: "slice network", network: st.SliceNet.Name},
	}
	for i, m := range modes {
		vars := map[string]string{
			"image": image, "bootstrap_url": "http://" + ln.Addr().String(), "datacenters": "dc1",
			"seccomp_profile": root + "/bin/chromium-seccomp.json", "wa_standin": "true",
			"network": m.network, "profiles_dir": st.Nomad.ProfilesDir,
		}
		var b strings.Builder
		for k, v := range vars {
			fmt.Fprintf(&b, "%s = %q\n", k, v)
		}
		job, err := nomad.Jobs().ParseHCLOpts(&nomadapi.JobsParseRequest{JobHCL: jobs.SliceDocker, Variables: b.String(), Canonicalize: true})
		if err != nil {
			t.Fatal(err)
		}
		id := fmt.Sprintf("slice-cost-%d", i)
		job.ID, job.Name = &id, &id
		if _, _, err := nomad.Jobs().Register(job, nil); err != nil {
			t.Fatal(err)
		}
		m.jobID = id
	}

	type sample struct {
		started, ready, routable, claim time.Duration
		rps                             float64
	}
	samples := map[string][]sample{}
	next := 100
	for i := 0; i < n; i++ {
		for _, m := range modes {
			next++
			sliceID := strconv.Itoa(next)
			url := testsupport.NewDatabase(t)
			if m.network != "host" {
				// On the bridge, PostgreSQL is at the bridge's address.
				url = strings.Replace(url, "127.0.0.1", st.Postgres.SliceHost, 1)
			}
			token := "t-" + sliceID
			mu.Lock()
			creds[sliceID] = slicehub.SliceCredentials{DatabaseURL: url, GatewayToken: token}
			mu.Unlock()
			t0 := time.Now()
			resp, _, err := nomad.Jobs().Dispatch(m.jobID, map[string]string{slicehub.MetaSliceID: sliceID}, nil, "", nil)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				if !t.Failed() {
					return
				}
				allocs, _, _ := nomad.Jobs().Allocations(resp.DispatchedJobID, true, nil)
				for _, a := range allocs {
					for task, ts := range a.TaskStates {
						for _, ev := range ts.Events {
							t.Logf("alloc %s task %s: %s %s", a.ID[:8], task, ev.Type, ev.DisplayMessage)
						}
					}
				}
			})
			readyc := make(chan time.Duration, 1)
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			go func() { readyc <- firstHealthy(ctx, consul, sliceID, t0) }()
			e := passing(t, consul, sliceID)
			s := sample{routable: time.Since(t0)}
			s.ready = <-readyc
			cancel()
			s.started = startedAt(t, nomad, resp.DispatchedJobID).Sub(t0)
			addr := fmt.Sprintf("http://%s:%d", e.Service.Address, e.Service.Port)
			s.claim = firstRequest(t, addr, token)
			s.rps = throughput(addr+"/api/health", 16, 2*time.Second)
			samples[m.name] = append(samples[m.name], s)
			t.Logf("%-20s slice %s: started %v, answers %v, routable %v; claim -> first answer %v; %.0f req/s on %s",
				m.name, sliceID, s.started.Round(time.Millisecond), s.ready.Round(time.Millisecond), s.routable.Round(time.Millisecond),
				s.claim.Round(100*time.Microsecond), s.rps, addr)
			if _, _, err := nomad.Jobs().Deregister(resp.DispatchedJobID, true, nil); err != nil {
				t.Fatal(err)
			}
			testsupport.Eventually(t, time.Minute, "slice "+sliceID+" gone", func() (bool, error) {
				allocs, _, err := nomad.Jobs().Allocations(resp.DispatchedJobID, true, nil)
				if err != nil {
					return true, nil // purged
				}
				for _, a := range allocs {
					if a.ClientStatus == "running" || a.ClientStatus == "pending" {
						return false, nil
					}
				}
				return true, nil
			})
		}
	}
	// Where dispatch -> started goes: Docker's start of a container that
	// does nothing (the slice image, sleeping), on the host's network, on
	// the slice network, and on the slice network with a port published.
	starts := dockerStarts(t, image, st.SliceNet.Name, n)
	stat := func(ds []time.Duration, r time.Duration) string {
		return fmt.Sprintf("%v (%v-%v)", median(ds).Round(r), minDur(ds).Round(r), maxDur(ds).Round(r))
	}
	for _, m := range modes {
		var started, ready, routable, claim []time.Duration
		var rps []float64
		for _, s := range samples[m.name] {
			started, ready, routable, claim = append(started, s.started), append(ready, s.ready), append(routable, s.routable), append(claim, s.claim)
			rps = append(rps, s.rps)
		}
		t.Logf("COST %-20s over %d dispatches, median (min-max): dispatch->started %s, ->answers %s, ->routable %s; claim->first answer %s; /api/health %.0f req/s (16 connections, 2 s each)",
			m.name, len(routable), stat(started, time.Millisecond), stat(ready, time.Millisecond), stat(routable, time.Millisecond),
			stat(claim, 100*time.Microsecond), medianF(rps))
	}
	for _, m := range []string{"host", "slice network", "slice network, published"} {
		t.Logf("DOCKER START %-25s median (min-max) over %d: %s", m, len(starts[m]), stat(starts[m], time.Millisecond))
	}
}

// dockerStarts times `docker start` of an idle container n times per
// network mode, interleaved.
func dockerStarts(t *testing.T, image, network string, n int) map[string][]time.Duration {
	t.Helper()
	modes := []struct {
		name string
		args []string
	}{
		{"host", []string{"--network", "host"}},
		{"slice network", []string{"--network", network}},
		{"slice network, published", []string{"--network", network, "-p", "127.0.0.1::8080"}},
	}
	out := map[string][]time.Duration{}
	for i := 0; i < n; i++ {
		for _, m := range modes {
			args := append(append([]string{"create", "--label", "io.slicehub.test=" + testsupport.Stack(t).NodeName, "--entrypoint", "sleep"}, m.args...), image, "60")
			id, err := exec.Command("docker", args...).Output()
			if err != nil {
				t.Fatalf("docker %v: %v", args, err)
			}
			ctr := strings.TrimSpace(string(id))
			t0 := time.Now()
			if b, err := exec.Command("docker", "start", ctr).CombinedOutput(); err != nil {
				t.Fatalf("docker start: %v: %s", err, b)
			}
			out[m.name] = append(out[m.name], time.Since(t0))
			if b, err := exec.Command("docker", "rm", "-f", ctr).CombinedOutput(); err != nil {
				t.Fatalf("docker rm: %v: %s", err, b)
			}
		}
	}
	return out
}

// firstHealthy: how long after t0 the slice first answers 200 on
// /api/health at the address Consul holds for it (polled; the same path as
// Consul's check and the gateway's).
func firstHealthy(ctx context.Context, consul *consulapi.Client, sliceID string, t0 time.Time) time.Duration {
	client := &http.Client{Timeout: time.Second}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	addr := ""
	for {
		select {
		case <-ctx.Done():
			return -1
		case <-tick.C:
		}
		if addr == "" {
			es, _, err := consul.Health().Service(slicehub.ConsulService, "", false, (&consulapi.QueryOptions{
				Filter: fmt.Sprintf("Service.Meta.%s == %q", slicehub.MetaSliceID, sliceID)}).WithContext(ctx))
			if err != nil || len(es) == 0 || es[0].Service.Address == "" || es[0].Service.Port == 0 {
				continue
			}
			addr = fmt.Sprintf("http://%s:%d/api/health", es[0].Service.Address, es[0].Service.Port)
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, addr, nil)
		if resp, err := client.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return time.Since(t0)
			}
		}
	}
}

// startedAt is when Nomad says the slice's task started. The client
// reports task states to the servers in batches: the slice can be routable
// before the servers know.
func startedAt(t *testing.T, nomad *nomadapi.Client, jobID string) time.Time {
	t.Helper()
	var at time.Time
	testsupport.Eventually(t, 30*time.Second, "the start time of "+jobID+"'s task", func() (bool, error) {
		allocs, _, err := nomad.Jobs().Allocations(jobID, false, nil)
		if err != nil || len(allocs) == 0 {
			return false, fmt.Errorf("allocations: %v (%d)", err, len(allocs))
		}
		// The stubs of the list leave StartedAt out.
		a, _, err := nomad.Allocations().Info(allocs[0].ID, nil)
		if err != nil {
			return false, err
		}
		if ts := a.TaskStates["slice"]; ts != nil && !ts.StartedAt.IsZero() {
			at = ts.StartedAt
			return true, nil
		}
		return false, fmt.Errorf("allocation %s: no start time yet", a.ID)
	})
	return at
}

// firstRequest: a claimed slice's first user request, as the gateway
// sends it (a new connection, the slice's gateway token, a user id), to a
// 200.
func firstRequest(t *testing.T, base, token string) time.Duration {
	t.Helper()
	client := &http.Client{Transport: &http.Transport{}, Timeout: 10 * time.Second}
	defer client.CloseIdleConnections()
	req, err := http.NewRequest(http.MethodGet, base+"/api/contacts", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set(slicehub.HeaderGatewayToken, token)
	req.Header.Set(slicehub.HeaderUserID, "1")
	t0 := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("first request to %s: %v", base, err)
	}
	d := time.Since(t0)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("first request to %s: %d %s", base, resp.StatusCode, body)
	}
	return d
}

func passing(t *testing.T, consul *consulapi.Client, sliceID string) *consulapi.ServiceEntry {
	t.Helper()
	var index uint64
	var found *consulapi.ServiceEntry
	testsupport.Eventually(t, 3*time.Minute, "slice "+sliceID+" passing", func() (bool, error) {
		es, meta, err := consul.Health().Service(slicehub.ConsulService, "", false, &consulapi.QueryOptions{
			Filter: fmt.Sprintf("Service.Meta.%s == %q", slicehub.MetaSliceID, sliceID), WaitIndex: index, WaitTime: 2 * time.Second})
		if err != nil {
			index = 0
			return false, err
		}
		if meta.LastIndex < index {
			index = 0
		} else {
			index = meta.LastIndex
		}
		// The WhatsApp check (a QR code waiting) does not count.
		routable := slicecsl.RoutableOnly(es)
		if len(routable) == 0 {
			var why []string
			for _, e := range es {
				for _, c := range e.Checks {
					why = append(why, fmt.Sprintf("%s:%s %s", c.Name, c.Status, c.Output))
				}
			}
			return false, fmt.Errorf("%d instances, checks %q", len(es), why)
		}
		es = routable
		found = es[0]
		return true, nil
	})
	return found
}

// throughput: GETs per second over conns keep-alive connections for d.
func throughput(url string, conns int, d time.Duration) float64 {
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: conns}, Timeout: 5 * time.Second}
	var count atomic.Int64
	deadline := time.Now().Add(d)
	var wg sync.WaitGroup
	for i := 0; i < conns; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				resp, err := client.Get(url)
				if err != nil {
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode == 200 {
					count.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	return float64(count.Load()) / d.Seconds()
}

func median(ds []time.Duration) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 0 {
		return (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return s[len(s)/2]
}

func medianF(fs []float64) float64 {
	s := append([]float64(nil), fs...)
	sort.Float64s(s)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 0 {
		return (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return s[len(s)/2]
}

func minDur(ds []time.Duration) time.Duration {
	m := ds[0]
	for _, d := range ds {
		m = min(m, d)
	}
	return m
}

func maxDur(ds []time.Duration) time.Duration {
	m := ds[0]
	for _, d := range ds {
		m = max(m, d)
	}
	return m
}
