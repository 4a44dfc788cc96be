package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	consulapi "github.com/hashicorp/consul/api"

	"github.com/slicehub/slicehub"
	"github.com/slicehub/slicehub/testsupport"
)

// The operator's entry points, end to end on real Nomad (docker driver,
// the real slice with Chromium and the stand-in WhatsApp page), Consul and
// PostgreSQL:
//   - `nomad job dispatch -meta slice_id=<id> slice`, run with the nomad
//     CLI as README says, grows the pool by one slice: adopted, warm,
//     claimed by a new user, routed, and back after a docker kill;
//   - the slice's WhatsApp check in Consul goes from warning (a QR code to
//     scan) to passing (linked) without ever unrouting it, and the Consul
//     UI shows it (screenshots in test-artifacts/consul-ui/).
func TestHandDispatchJoinsThePoolAndConsulShowsWhatsApp(t *testing.T) {
	const id = 4242
	ctx := context.Background()
	// After the platform stops (cleanups run last first): purge this
	// test's children, or the next test's scheduler, with a database of
	// its own, would adopt the hand dispatch as a new slice 4242.
	var m *Main
	t.Cleanup(func() {
		if m == nil {
			return
		}
		cs, err := m.Nomad.Children(context.Background())
		if err != nil {
			t.Logf("cleanup: %v", err)
			return
		}
		for _, c := range cs {
			if c.SliceID == id {
				if err := m.Nomad.Stop(context.Background(), c.JobID, true); err != nil {
					t.Logf("cleanup: %v", err)
				}
			}
		}
	})
	m = startPlatform(t, "-min-warm", "0", "-alert-whatsapp-down", "3m")
	st := testsupport.Stack(t)
	t.Cleanup(func() { // before the platform stops: the slice's own log says why it failed
		if rt, ok := m.Routes.Lookup(id); ok && t.Failed() {
			out := testsupport.ContainerLogTail("slice-"+rt.AllocID, 40)
			t.Logf("the slice's log:\n%s", out)
		}
	})

	// The operator's command, verbatim.
	cmd := exec.Command("nomad", "job", "dispatch", "-detach", "-meta", fmt.Sprintf("slice_id=%d", id), slicehub.NomadJobID)
	cmd.Env = append(os.Environ(), "NOMAD_ADDR="+st.Nomad.Addr)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("nomad job dispatch: %v\n%s", err, out)
	}
	m1 := regexp.MustCompile(`Dispatched Job ID = (\S+)`).FindSubmatch(out)
	if m1 == nil {
		t.Fatalf("no dispatched job ID in %q", out)
	}
	job := string(m1[1])
	t0 := time.Now()
	testsupport.Eventually(t, 3*time.Minute, "the hand dispatch adopted and warm", func() (bool, error) {
		sl, err := m.DB.Slice(ctx, id)
		if err != nil {
			return false, err
		}
		return sl.State == slicehub.StateWarm && sl.JobID == job, fmt.Errorf("slice %+v", sl)
	})
	t.Logf("nomad job dispatch to a warm slice: %s", time.Since(t0).Round(time.Millisecond))
	evs, err := m.DB.SliceEvents(ctx, id)
	if err != nil || len(evs) == 0 || evs[0].Actor != "operator:nomad-dispatch" || !strings.Contains(evs[0].Reason, job) {
		t.Fatalf("events %+v, %v; want the first naming the operator's dispatch %s", evs, err, job)
	}

	cc, err := consulapi.NewClient(&consulapi.Config{Address: st.Consul.Addr})
	if err != nil {
		t.Fatal(err)
	}
	// whatsapp returns the slice's instance and its WhatsApp check.
	whatsapp := func() (*consulapi.ServiceEntry, *consulapi.HealthCheck, error) {
		entries, _, err := cc.Health().Service(slicehub.ConsulService, "", false, &consulapi.QueryOptions{
			Filter: fmt.Sprintf("Service.Meta.%s == \"%d\"", slicehub.MetaSliceID, id)})
		if err != nil {
			return nil, nil, err
		}
		for _, e := range entries {
			for _, c := range e.Checks {
				if c.Name == slicehub.WhatsAppCheck {
					return e, c, nil
				}
			}
		}
		return nil, nil, fmt.Errorf("no %s check on slice %d (%d instances)", slicehub.WhatsAppCheck, id, len(entries))
	}
	waitCheck := func(status, words string) (*consulapi.ServiceEntry, *consulapi.HealthCheck) {
		t.Helper()
		var e *consulapi.ServiceEntry
		var c *consulapi.HealthCheck
		testsupport.Eventually(t, 90*time.Second, "WhatsApp check "+status+" saying "+words, func() (bool, error) {
			var err error
			e, c, err = whatsapp()
			if err != nil {
				return false, err
			}
			return c.Status == status && strings.Contains(c.Output, words), fmt.Errorf("check %s: %q", c.Status, c.Output)
		})
		return e, c
	}

	// 1. The stand-in shows a QR code: warning, and the slice is routed.
	entry, c := waitCheck(consulapi.HealthWarning, "waits for a QR scan")
	t.Logf("WhatsApp check while waiting: %s %q", c.Status, c.Output)
	if rt, ok := m.Routes.Lookup(id); !ok {
		t.Fatal("a warning WhatsApp check unrouted the slice")
	} else if strings.Contains(rt.Addr, ":0") {
		t.Fatalf("route %+v", rt)
	}
	// The gateway's -alert-whatsapp-down reached the check.
	parent, _, err := m.Nomad.API.Jobs().Info(slicehub.NomadJobID, nil)
	if err != nil {
		t.Fatal(err)
	}
	path := ""
	for _, ch := range parent.TaskGroups[0].Services[0].Checks {
		if ch.Name == slicehub.WhatsAppCheck {
			path = ch.Path
		}
	}
	if !strings.Contains(path, slicehub.DownAfterParam+"=3m0s") {
		t.Errorf("WhatsApp check path %q; want %s=3m0s from -alert-whatsapp-down", path, slicehub.DownAfterParam)
	}

	// The Consul UI shows the warning and its words on the instance.
	b := testsupport.NewBrowser(t, "http://"+st.Consul.Addr, "consul-ui", 1280)
	b.ThirdParty = true
	b.DoTimeout = 30 * time.Second
	checksPage := fmt.Sprintf("%s/ui/dc1/services/%s/instances/%s/%s/health-checks",
		b.Base, slicehub.ConsulService, entry.Node.Node, entry.Service.ID)
	// ACLs are on: the UI asks for a token, as it asks an operator for
	// CONSUL_HTTP_TOKEN (README); it keeps the one given in localStorage.
	cc0, err := st.Consul.Client()
	if err != nil {
		t.Fatal(err)
	}
	self, _, err := cc0.ACL().TokenReadSelf(nil)
	if err != nil {
		t.Fatalf("reading the operator's token: %v", err)
	}
	tok, _ := json.Marshal(map[string]string{"AccessorID": self.AccessorID, "SecretID": self.SecretID})
	b.Do("open the Consul UI", chromedp.Navigate(b.Base+"/ui/"))
	if _, err := chromedp.Run(b.Ctx, chromedp.Evaluate[bool](fmt.Sprintf(`(localStorage.setItem("consul:token", %q), true)`, tok))); err != nil {
		t.Fatalf("giving the Consul UI the operator's token: %v", err)
	}
	b.Do("open the instance's health checks", chromedp.Navigate(checksPage))
	b.WaitWithin("the WhatsApp check warning with its output", `document.body.innerText.includes("`+slicehub.WhatsAppCheck+`") &&
		document.body.innerText.includes("waits for a QR scan")`, 30*time.Second)
	b.Shot("slice-instance-whatsapp-qr")

	// 2. A new user claims it (the pool holds nothing else) and reaches it.
	alice := newClient(t, m)
	if got := alice.signup("handdispatch@example.com"); got != id {
		t.Fatalf("signup got slice %d; want the adopted %d", got, id)
	}
	if status, who := alice.whoami(); status != http.StatusOK || who != fmt.Sprint(id) {
		t.Fatalf("whoami = %d %q; want 200 from slice %d", status, who, id)
	}

	// 3. The phone scans: passing.
	if status, body := alice.do("POST", "/api/dev/scan", nil); status != http.StatusNoContent {
		t.Fatalf("POST /api/dev/scan = %d %v", status, body)
	}
	entry, c = waitCheck(consulapi.HealthPassing, "WhatsApp connected")
	t.Logf("WhatsApp check once linked: %s %q", c.Status, c.Output)

	// 4. The Consul UI shows the check on the service "slice", with its
	// output (its warning was shot above).
	b.Do("open the slice service", chromedp.Navigate(b.Base+"/ui/dc1/services/"+slicehub.ConsulService+"/instances"))
	b.WaitWithin("the slice's instance listed", `document.body.innerText.includes("`+entry.Service.ID+`")`, 30*time.Second)
	b.Shot("slice-service-instances")
	b.Do("open the instance's health checks", chromedp.Navigate(checksPage))
	b.WaitWithin("the WhatsApp check passing with its output", `document.body.innerText.includes("`+slicehub.WhatsAppCheck+`") &&
		document.body.innerText.includes("WhatsApp connected") && document.body.innerText.includes("slice health")`, 30*time.Second)
	b.Shot("slice-instance-whatsapp-connected")

	// 5. docker kill: Nomad restarts the task, the user reaches the same
	// slice again, and the adopted job is still its job.
	rt, ok := m.Routes.Lookup(id)
	if !ok || rt.AllocID == "" {
		t.Fatalf("route %+v, %v", rt, ok)
	}
	container := "slice-" + rt.AllocID
	t0 = time.Now()
	if out, err := exec.Command("docker", "kill", "-s", "KILL", container).CombinedOutput(); err != nil {
		t.Fatalf("docker kill %s: %v: %s", container, err, out)
	}
	testsupport.Eventually(t, 2*time.Minute, "the slice answers again after docker kill", func() (bool, error) {
		status, body := alice.do("GET", "/api/whoami", nil)
		return status == http.StatusOK && fmt.Sprint(body["slice_id"]) == fmt.Sprint(id), fmt.Errorf("whoami %d %v", status, body)
	})
	t.Logf("docker kill to answering again: %s", time.Since(t0).Round(time.Millisecond))
	sl, err := m.DB.Slice(ctx, id)
	if err != nil || sl.State != slicehub.StateAssigned || sl.JobID != job {
		t.Fatalf("after the kill %+v, %v; want assigned, still on %s", sl, err, job)
	}
}
