package hostile_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
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
// stack: dispatch -> passing in Consul, and requests per second through the
// address Consul holds (what the gateway proxies to), for the same docker
// job on the host's network and on the slice network, dispatches
// interleaved so that both see the same machine. It takes several minutes
// (each dispatch starts Chromium), so it runs only when asked:
//
//	SLICEHUB_MEASURE_BRIDGE=20 heavy go test -count=1 -v -run TestBridgeCost -timeout 60m ./hostile/
func TestBridgeCost(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("SLICEHUB_MEASURE_BRIDGE"))
	if n <= 0 {
		t.Skip("SKIPPED: a measurement of several minutes; set SLICEHUB_MEASURE_BRIDGE=<dispatches per mode> to run it")
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

	// A bootstrap endpoint both modes reach (the bridge's address is the
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

	modes := []string{"host", st.SliceNet.Name}
	jobIDs := map[string]string{}
	for _, network := range modes {
		vars := map[string]string{
			"image": image, "bootstrap_url": "http://" + ln.Addr().String(), "datacenters": "dc1",
			"seccomp_profile": root + "/bin/chromium-seccomp.json", "wa_standin": "true",
			"network": network, "profiles_dir": st.Nomad.ProfilesDir,
		}
		var b strings.Builder
		for k, v := range vars {
			fmt.Fprintf(&b, "%s = %q\n", k, v)
		}
		job, err := nomad.Jobs().ParseHCLOpts(&nomadapi.JobsParseRequest{JobHCL: jobs.SliceDocker, Variables: b.String(), Canonicalize: true})
		if err != nil {
			t.Fatal(err)
		}
		id := "slice-" + strings.ReplaceAll(network, "slicehub-slices-", "bridge-")
		job.ID, job.Name = &id, &id
		if _, _, err := nomad.Jobs().Register(job, nil); err != nil {
			t.Fatal(err)
		}
		jobIDs[network] = id
	}

	took := map[string][]time.Duration{}
	rps := map[string][]float64{}
	next := 100
	for i := 0; i < n; i++ {
		for _, network := range modes {
			next++
			sliceID := strconv.Itoa(next)
			url := testsupport.NewDatabase(t)
			if network != "host" {
				// On the bridge, PostgreSQL is at the bridge's address.
				url = strings.Replace(url, "127.0.0.1", st.Postgres.SliceHost, 1)
			}
			mu.Lock()
			creds[sliceID] = slicehub.SliceCredentials{DatabaseURL: url, GatewayToken: "t-" + sliceID}
			mu.Unlock()
			t0 := time.Now()
			resp, _, err := nomad.Jobs().Dispatch(jobIDs[network], map[string]string{slicehub.MetaSliceID: sliceID}, nil, "", nil)
			if err != nil {
				t.Fatal(err)
			}
			e := passing(t, consul, sliceID)
			d := time.Since(t0)
			took[network] = append(took[network], d)
			addr := fmt.Sprintf("http://%s:%d/api/health", e.Service.Address, e.Service.Port)
			r := throughput(addr, 16, 2*time.Second)
			rps[network] = append(rps[network], r)
			t.Logf("%-28s slice %s: dispatch->passing %v, %.0f req/s on %s", network, sliceID, d.Round(time.Millisecond), r, addr)
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
	for _, network := range modes {
		t.Logf("COST %s: dispatch->passing median %v over %d (min %v, max %v); /api/health median %.0f req/s (16 connections, 2 s each)",
			network, median(took[network]).Round(time.Millisecond), len(took[network]), minDur(took[network]).Round(time.Millisecond),
			maxDur(took[network]).Round(time.Millisecond), medianF(rps[network]))
	}
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
		es = slicecsl.RoutableOnly(es)
		if len(es) == 0 {
			return false, nil
		}
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
