package jobs_test

// TestSoak is `make soak` (issue 17): real docker slices whose stand-in
// page carries a weight profile (heavy by default: figures are "modelled"),
// each with the memory governor on and the profile's own budget, run for
// SLICEHUB_SOAK_DURATION while a phone sends them a message now and then.
// Every 10 s it reads each slice's /api/metrics (its own cgroup's anon,
// shmem and file, and the governor's restarts) and WhatsApp state through
// the slice's gateway token, as telemetry does. It fails on a governor
// restart loop, on memory over memory_max (an OOM kill, a task restart, a
// Chromium crash, or anon+shmem at the limit), on a lost session (a QR code
// after the link) and on any message sent that is not in the slice's CRM
// at the end. It writes docs/reports/soak-YYYY-MM-DD.md only with
// SLICEHUB_SOAK_REPORT=1 (else the test's temporary directory).
//
// Each slice serves its own stand-in (the job's wa_standin): the phone's
// messages then go to that slice only, through the stand-in's development
// API (POST /api/dev/phone/messages), and the page adds each to its models
// as WhatsApp Web does, so that the page grows with the run.

import (
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	nomadapi "github.com/hashicorp/nomad/api"

	"github.com/slicehub/slicehub"
	"github.com/slicehub/slicehub/slice/standin"
	"github.com/slicehub/slicehub/sliceclient"
	"github.com/slicehub/slicehub/testsupport"
)

// soakBudget is a weight profile's memory budget, in MiB.
type soakBudget struct {
	// Soft is the governor's threshold on anon+shmem (memory_soft_mb, per
	// dispatch); Max the container's hard limit (memory_max_mb, a job
	// variable: Nomad cannot take resources from dispatch meta); Reserve
	// what placement counts (memory_mb).
	Soft, Max, Reserve int
	// Source says which measurement the figures come from.
	Source string
}

// soakBudgets are the profiles' own budgets. Only heavy's is decided here;
// the typical profile's reservations are the job's defaults
// (jobs/slice.nomad.hcl), which this test leaves alone. Another profile
// needs SLICEHUB_SOAK_SOFT_MB and SLICEHUB_SOAK_MAX_MB.
//
// heavy, from two measurements on 2026-12-08 (2 shared cores):
//   - `heavy env SLICEHUB_GOVERNOR_PROFILE=heavy go test -run
//     TestGovernorRestart -v ./slice/` (Chromium's processes only, no
//     container): the built page 1,461 MiB anon+shmem; read back from
//     IndexedDB after a governor restart 1,346 MiB (0.92 of it).
//   - This test's smoke (1 slice, 3 min, `SLICEHUB_SOAK_DURATION=3m`), the
//     container's own cgroup with the slice's process and stand-in: anon+
//     shmem p50 1,746, max 1,974 MiB in the 3 minutes after the build;
//     anon+file max 2,440; the cgroup's high-water mark, build included,
//     2,655 MiB. The container's figure, not Chromium's, is the budget's.
//
// The arithmetic (rounded up to 256 MiB):
//   - Soft = ⌈1.25 × 1,974⌉ = 2,560: a fresh heavy slice plus 25 % for the
//     growth the governor is there to cut. What a restart leaves (about
//     0.92 of a fresh page) sits far below it, so a restart cannot loop.
//   - Max = 1.5 × Soft = 3,840: room above the threshold for the growth
//     between the governor's readings (15 s) and its wait for a quiet
//     moment (up to 2 min), and for the page cache of IndexedDB's writes,
//     which the limit counts (the build's high-water mark was 2,655).
//   - Reserve = ⌈p50 1,746⌉ = 1,792: what a heavy slice holds most of the
//     time.
var soakBudgets = map[string]soakBudget{
	"heavy": {Soft: 2560, Max: 3840, Reserve: 1792, Source: "measured 2026-12-08: the container's anon+shmem after the heavy build " +
		"p50 1,746 MiB, max 1,974 MiB (TestSoak, 1 slice, 3 min); Chromium alone 1,461 MiB built and 1,346 MiB read back after a governor restart " +
		"(TestGovernorRestart, SLICEHUB_GOVERNOR_PROFILE=heavy). Soft = ⌈1.25 × 1,974⌉, max = 1.5 × soft, reservation = ⌈1,746⌉, rounded up to 256 MiB " +
		"(jobs/soak_test.go, soakBudgets)."},
}

// The governor's loop guard and alert (slice/governor.go's defaults, which
// the job does not change): a restart loop is the governor finding the
// slice over its threshold again within soakLoopWithin of a restart (its
// suppressed_loop decision: a freshly loaded page does not fit the
// budget), or soakLoopRestarts restarts within soakLoopWindow (its alert).
const (
	soakLoopWithin   = 10 * time.Minute // GovernorConfig.MinInterval
	soakLoopRestarts = 3                // GovernorConfig.AlertAfter
	soakLoopWindow   = 6 * time.Hour    // GovernorConfig.AlertWindow
	soakEvery        = 10 * time.Second // the sampling period
)

// soakSample is one reading of one slice.
type soakSample struct {
	At                 time.Time
	Anon, Shmem, File  float64 // MiB, the slice's own cgroup
	Restarts           int     // governor restarts (result=restarted), cumulative
	Deferred, LoopHeld int     // deferred_busy, suppressed_loop, cumulative
	State              string  // WhatsApp state
}

// soakSlice is one slice of the run.
type soakSlice struct {
	ID, Token, AllocID string
	api                sliceAPI
	Linked             time.Time
	WeightMS           int // the page's build of the weight model
	Samples            []soakSample
	Failed             int // readings that got no answer
	Sent               []soakMessage
	SendErrors         []string
	InCRM              int
	Launches, Crashes  int // "Chromium started" / "Chromium stopped; restarting" in its log
	TaskRestarts       int
	OOMKills           int
	LimitMB            float64 // the container's memory limit, read from its cgroup
	MaxUsageMB         float64 // the cgroup's own high-water mark (anon + page cache)
	QRAfterLink        []time.Time
}

type soakMessage struct{ From, Body string }

func TestSoak(t *testing.T) {
	if os.Getenv("SLICEHUB_SOAK") != "1" {
		t.Skip("SKIPPED LOUDLY: TestSoak runs only with SLICEHUB_SOAK=1 (make soak): docker slices with the heavy profile for an hour")
	}
	n := envInt("SLICEHUB_SOAK_SLICES", 2)
	duration := time.Hour
	if v := os.Getenv("SLICEHUB_SOAK_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			t.Fatalf("SLICEHUB_SOAK_DURATION=%q: want a duration such as 1h", v)
		}
		duration = d
	}
	msgEvery := 30 * time.Second
	if v := os.Getenv("SLICEHUB_SOAK_MESSAGE_EVERY"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			t.Fatalf("SLICEHUB_SOAK_MESSAGE_EVERY=%q: want a duration", v)
		}
		msgEvery = d
	}
	profile := os.Getenv("SLICEHUB_SOAK_PROFILE")
	if profile == "" {
		profile = "heavy"
	}
	if _, err := standin.ParseWeight(profile); err != nil || profile == "none" {
		t.Fatalf("SLICEHUB_SOAK_PROFILE=%q: %v", profile, err)
	}
	budget := soakBudgets[profile]
	if v := envInt("SLICEHUB_SOAK_SOFT_MB", 0); v > 0 {
		budget.Soft, budget.Source = v, "SLICEHUB_SOAK_SOFT_MB/SLICEHUB_SOAK_MAX_MB (not the profile's measured budget)"
	}
	if v := envInt("SLICEHUB_SOAK_MAX_MB", 0); v > 0 {
		budget.Max = v
	}
	if budget.Reserve == 0 {
		budget.Reserve = budget.Soft
	}
	if budget.Soft == 0 || budget.Max <= budget.Soft {
		t.Fatalf("profile %s has no budget (soft %d MiB, max %d MiB): set SLICEHUB_SOAK_SOFT_MB and SLICEHUB_SOAK_MAX_MB", profile, budget.Soft, budget.Max)
	}
	facts := readMachineFacts()
	t.Logf("soak: %d slice(s), profile %s, %s, soft %d MiB, memory_max %d MiB; %s", n, profile, duration, budget.Soft, budget.Max, facts)

	testsupport.Stack(t)
	nomad, consul := agentClients(t)
	gw := newBootstrapGateway(t)
	// memory_max and the reservation are job variables (resources cannot
	// come from dispatch meta); the threshold and the profile go per
	// dispatch, so that the job's defaults (the typical slice's) stay.
	registerSliceJob(t, nomad, map[string]string{
		"image": testsupport.SliceImage(t), "bootstrap_url": gw.srv.URL, "datacenters": "dc1",
		"seccomp_profile": seccompProfile(t), "wa_standin": "true",
		"memory_mb": strconv.Itoa(budget.Reserve), "memory_max_mb": strconv.Itoa(budget.Max),
	})

	dir := t.TempDir()
	if os.Getenv("SLICEHUB_SOAK_REPORT") == "1" {
		dir = filepath.Join("..", "docs", "reports")
	}
	path := filepath.Join(dir, "soak-"+time.Now().UTC().Format("2006-01-02")+".md")

	// The slices one after another: a heavy page's build takes the
	// machine's CPU for minutes.
	ss := make([]*soakSlice, n)
	for i := range ss {
		id := strconv.Itoa(1700 + i + 1)
		s := &soakSlice{ID: id, Token: "soak-token-" + id}
		gw.add(id, slicehub.SliceCredentials{DatabaseURL: testsupport.NewDatabase(t), GatewayToken: s.Token})
		profileDir(t, id)
		dispatchSliceMeta(t, nomad, id, map[string]string{"memory_soft_mb": strconv.Itoa(budget.Soft), "wa_standin_weight": profile})
		entry := waitPassing(t, consul, id)
		s.AllocID = entry.Service.Meta["alloc_id"]
		s.api = apiOf(t, entry, s.Token)
		s.api.waitState(slicehub.WAQR, 2*time.Minute)
		testsupport.Eventually(t, time.Minute, "a scan of slice "+id, func() (bool, error) {
			code, err := s.api.do("POST", "/api/dev/scan", "", nil)
			return code == http.StatusNoContent, fmt.Errorf("POST /api/dev/scan = %d %v", code, err)
		})
		s.api.waitState(slicehub.WAConnected, time.Minute)
		s.Linked = time.Now()
		s.WeightMS = waitWeight(t, nomad, s.AllocID, profile)
		t.Logf("slice %s linked, %s weight model built in %d ms", id, profile, s.WeightMS)
		ss[i] = s
	}
	loadStart := readLoad()

	// The run: a reader per slice every soakEvery, and the phone sending
	// each slice a message every msgEvery (from one of ten senders, so
	// that chats grow rather than multiply).
	began := time.Now()
	var wg sync.WaitGroup
	for _, s := range ss {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.run(began.Add(duration), msgEvery)
		}()
	}
	wg.Wait()
	ended := time.Now()

	// Everything sent must be in the CRM: the last messages may still be
	// on their way (the page's long poll, the syncer).
	for _, s := range ss {
		if len(s.Sent) == 0 {
			t.Errorf("slice %s: no message was sent during the run (send errors: %v)", s.ID, s.SendErrors)
			continue
		}
		// Polled with a deadline rather than testsupport.Eventually, which
		// would end the test before the report is written.
		deadline := time.Now().Add(2 * time.Minute)
		poll := time.NewTicker(time.Second)
		for {
			got, err := s.messagesInCRM()
			s.InCRM = got
			if err == nil && got == len(s.Sent) {
				break
			}
			if time.Now().After(deadline) {
				t.Logf("slice %s: %d of %d messages in the CRM after 2 min (%v)", s.ID, got, len(s.Sent), err)
				break
			}
			<-poll.C
		}
		poll.Stop()
	}
	for _, s := range ss {
		s.inspect(t, nomad)
	}
	verdicts := soakVerdicts(ss, budget)
	report := soakReport(profile, budget, duration, msgEvery, facts, loadStart, began, ended, ss, verdicts)
	if err := os.WriteFile(path, []byte(report), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("report: %s (not a result unless SLICEHUB_SOAK_REPORT=1)\n%s", path, report)
	for _, v := range verdicts {
		t.Error(v)
	}
}

// waitWeight waits until the slice's own stand-in reports the weight model
// ready (GET /weight/status on its loopback address, which the slice logs:
// the test's slices use the host's network) and returns the build's time.
func waitWeight(t *testing.T, nomad *nomadapi.Client, allocID, profile string) int {
	t.Helper()
	var addr string
	testsupport.Eventually(t, time.Minute, "the stand-in's address in the slice's log", func() (bool, error) {
		line := allocLogLine(t, nomad, allocID, "serving the stand-in WhatsApp page")
		var l struct{ Addr string }
		if err := json.Unmarshal([]byte(line), &l); err != nil || l.Addr == "" {
			return false, fmt.Errorf("log line %q: %v", line, err)
		}
		addr = l.Addr
		return true, nil
	})
	var st standin.WeightStatus
	testsupport.Eventually(t, 15*time.Minute, "the "+profile+" weight model of allocation "+allocID, func() (bool, error) {
		resp, err := http.Get("http://" + addr + "/weight/status")
		if err != nil {
			return false, err
		}
		defer resp.Body.Close()
		if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
			return false, err
		}
		if st.State == "failed" {
			t.Fatalf("the weight model failed: %+v", st)
		}
		return st.State == "ready" && st.Profile == profile, fmt.Errorf("%+v", st)
	})
	return st.MS
}

// run samples the slice and sends it messages until the deadline.
func (s *soakSlice) run(until time.Time, msgEvery time.Duration) {
	sample := time.NewTicker(soakEvery)
	defer sample.Stop()
	send := time.NewTicker(msgEvery)
	defer send.Stop()
	end := time.NewTimer(time.Until(until))
	defer end.Stop()
	s.read()
	for {
		select {
		case <-end.C:
			s.read()
			return
		case <-sample.C:
			s.read()
		case <-send.C:
			k := len(s.Sent) + len(s.SendErrors)
			m := soakMessage{From: fmt.Sprintf("+49 151 555 17%02d", k%10), Body: fmt.Sprintf("soak slice %s message %d", s.ID, k)}
			b, _ := json.Marshal(map[string]string{"from": m.From, "name": fmt.Sprintf("Soak %d", k%10), "body": m.Body})
			code, err := s.api.do("POST", "/api/dev/phone/messages", string(b), nil)
			if err != nil || code != http.StatusAccepted {
				s.SendErrors = append(s.SendErrors, fmt.Sprintf("%s: %d %v", time.Now().UTC().Format(time.TimeOnly), code, err))
				continue
			}
			s.Sent = append(s.Sent, m)
		}
	}
}

// read takes one sample: /api/metrics and the WhatsApp state.
func (s *soakSlice) read() {
	var raw []byte
	code, err := s.api.do("GET", "/api/metrics", "", &raw)
	if err != nil || code != http.StatusOK {
		s.Failed++
		return
	}
	m, err := sliceclient.ParseMetrics(raw)
	if err != nil {
		s.Failed++
		return
	}
	mib := func(b float64) float64 { return b / (1 << 20) }
	x := soakSample{At: time.Now(), Anon: mib(m.Anon), Shmem: mib(m.Shmem), File: mib(m.File),
		Restarts: int(m.Restarts["restarted"]), Deferred: int(m.Restarts["deferred_busy"]), LoopHeld: int(m.Restarts["suppressed_loop"])}
	var st struct{ State string }
	if code, err := s.api.do("GET", "/api/status/state", "", &st); err == nil && code == http.StatusOK {
		x.State = st.State
		if st.State == slicehub.WAQR {
			s.QRAfterLink = append(s.QRAfterLink, x.At)
		}
	}
	s.Samples = append(s.Samples, x)
}

// messagesInCRM counts the messages sent during the run that the slice's
// CRM holds: the senders' chats, every page of their messages.
func (s *soakSlice) messagesInCRM() (int, error) {
	want := map[string]bool{}
	for _, m := range s.Sent {
		want[m.Body] = true
	}
	var chats struct {
		Chats []struct {
			ID    int64
			Phone string
		}
	}
	if code, err := s.api.do("GET", "/api/chats", "", &chats); err != nil || code != http.StatusOK {
		return 0, fmt.Errorf("GET /api/chats = %d %v", code, err)
	}
	found := 0
	for _, c := range chats.Chats {
		if !strings.HasPrefix(c.Phone, "+4915155517") {
			continue
		}
		path := fmt.Sprintf("/api/chats/%d/messages?limit=200", c.ID)
		for {
			var page struct {
				Messages   []struct{ Body string }
				NextBefore *int64 `json:"next_before"`
			}
			if code, err := s.api.do("GET", path, "", &page); err != nil || code != http.StatusOK {
				return 0, fmt.Errorf("GET %s = %d %v", path, code, err)
			}
			for _, m := range page.Messages {
				if want[m.Body] {
					found++
					delete(want, m.Body)
				}
			}
			if page.NextBefore == nil {
				break
			}
			path = fmt.Sprintf("/api/chats/%d/messages?limit=200&before=%d", c.ID, *page.NextBefore)
		}
	}
	return found, nil
}

// inspect reads, at the end, what the slice's own readings cannot say:
// its container's limit, high-water mark and OOM kills (host cgroup), the
// task's restarts (Nomad), and Chromium's launches and crashes (its log).
func (s *soakSlice) inspect(t *testing.T, nomad *nomadapi.Client) {
	t.Helper()
	alloc, _, err := nomad.Allocations().Info(s.AllocID, nil)
	if err != nil {
		t.Fatal(err)
	}
	if ts := alloc.TaskStates["slice"]; ts != nil {
		s.TaskRestarts = int(ts.Restarts)
	}
	log := allocStderr(t, nomad, s.AllocID)
	s.Launches = strings.Count(log, `"msg":"Chromium started"`)
	s.Crashes = strings.Count(log, `"msg":"Chromium stopped; restarting"`)
	out, err := exec.Command("docker", "inspect", "-f", "{{.State.Pid}}", "slice-"+s.AllocID).Output()
	if err != nil {
		t.Errorf("slice %s: no container to inspect: %v", s.ID, err)
		return
	}
	b, err := os.ReadFile("/proc/" + strings.TrimSpace(string(out)) + "/cgroup")
	if err != nil {
		t.Errorf("slice %s: %v", s.ID, err)
		return
	}
	for _, l := range strings.Split(string(b), "\n") {
		p := strings.SplitN(l, ":", 3)
		if len(p) != 3 {
			continue
		}
		switch {
		case p[1] == "memory": // cgroup v1
			d := "/sys/fs/cgroup/memory" + p[2]
			s.LimitMB = readMiB(d + "/memory.limit_in_bytes")
			s.MaxUsageMB = readMiB(d + "/memory.max_usage_in_bytes")
			s.OOMKills = readKey(d+"/memory.oom_control", "oom_kill")
		case p[0] == "0" && s.LimitMB == 0: // cgroup v2
			d := "/sys/fs/cgroup" + p[2]
			s.LimitMB = readMiB(d + "/memory.max")
			s.MaxUsageMB = readMiB(d + "/memory.peak")
			s.OOMKills = readKey(d+"/memory.events", "oom_kill")
		}
	}
}

func readMiB(path string) float64 {
	b, _ := os.ReadFile(path)
	v, _ := strconv.ParseFloat(strings.TrimSpace(string(b)), 64)
	return v / (1 << 20)
}

// readKey reads "key value" from a cgroup file; -1 when it is not there.
func readKey(path, key string) int {
	b, _ := os.ReadFile(path)
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, " "); ok && k == key {
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			return n
		}
	}
	return -1
}

// governed is what the governor weighs: anon + shmem. charged is what the
// container's limit counts: anon + page cache (file includes shmem on both
// cgroup versions).
func (x soakSample) governed() float64 { return x.Anon + x.Shmem }
func (x soakSample) charged() float64  { return x.Anon + x.File }

// quantile is the nearest-rank q-quantile of v (sorted in place).
func quantile(v []float64, q float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	slices.Sort(v)
	i := int(math.Ceil(q*float64(len(v)))) - 1
	return v[max(0, min(i, len(v)-1))]
}

// restartTimes are the sample times at which the governor's count went up.
func (s *soakSlice) restartTimes() []time.Time {
	var at []time.Time
	prev := 0
	for _, x := range s.Samples {
		for ; prev < x.Restarts; prev++ {
			at = append(at, x.At)
		}
	}
	return at
}

// loop says whether the slice's governor went into a restart loop, and why.
func (s *soakSlice) loop() string {
	if len(s.Samples) > 0 && s.Samples[len(s.Samples)-1].LoopHeld > 0 {
		return fmt.Sprintf("over the soft threshold again within %s of a restart (suppressed_loop %d)", soakLoopWithin, s.Samples[len(s.Samples)-1].LoopHeld)
	}
	at := s.restartTimes()
	for i := range at {
		if i+soakLoopRestarts-1 < len(at) && at[i+soakLoopRestarts-1].Sub(at[i]) <= soakLoopWindow {
			return fmt.Sprintf("%d restarts within %s", soakLoopRestarts, soakLoopWindow)
		}
	}
	return ""
}

// soakVerdicts are the run's failures.
func soakVerdicts(ss []*soakSlice, b soakBudget) []string {
	var v []string
	for _, s := range ss {
		if l := s.loop(); l != "" {
			v = append(v, fmt.Sprintf("slice %s: governor restart loop: %s", s.ID, l))
		}
		for _, x := range s.Samples {
			if x.governed() >= float64(b.Max) {
				v = append(v, fmt.Sprintf("slice %s: anon+shmem %.0f MiB at %s, at or over memory_max %d MiB", s.ID, x.governed(), x.At.UTC().Format(time.TimeOnly), b.Max))
				break
			}
		}
		if s.LimitMB > 0 && math.Abs(s.LimitMB-float64(b.Max)) > 1 {
			v = append(v, fmt.Sprintf("slice %s: the container's limit is %.0f MiB, not memory_max %d MiB", s.ID, s.LimitMB, b.Max))
		}
		if s.OOMKills > 0 {
			v = append(v, fmt.Sprintf("slice %s: %d OOM kill(s) in its cgroup: memory reached memory_max", s.ID, s.OOMKills))
		}
		if s.TaskRestarts > 0 {
			v = append(v, fmt.Sprintf("slice %s: the task restarted %d time(s)", s.ID, s.TaskRestarts))
		}
		if s.Crashes > 0 {
			v = append(v, fmt.Sprintf("slice %s: Chromium crashed %d time(s) (not a governor restart)", s.ID, s.Crashes))
		}
		if len(s.QRAfterLink) > 0 {
			v = append(v, fmt.Sprintf("slice %s: a QR code after the link (a lost session) at %s", s.ID, s.QRAfterLink[0].UTC().Format(time.TimeOnly)))
		}
		if len(s.SendErrors) > 0 {
			v = append(v, fmt.Sprintf("slice %s: %d message(s) could not be sent: %v", s.ID, len(s.SendErrors), s.SendErrors))
		}
		if len(s.Sent) > 0 && s.InCRM != len(s.Sent) {
			v = append(v, fmt.Sprintf("slice %s: %d of %d messages sent are in its CRM", s.ID, s.InCRM, len(s.Sent)))
		}
		if len(s.Samples) == 0 {
			v = append(v, fmt.Sprintf("slice %s: no reading of its memory (%d failed)", s.ID, s.Failed))
		}
	}
	return v
}

// machineFacts are read at the start of the run.
type machineFacts struct {
	Cores                   int
	MemMB, SwapMB           int
	Kernel, Storage, Cgroup string
	Commit                  string
}

func (f machineFacts) String() string {
	return fmt.Sprintf("%d cores, %d MiB memory, %d MiB swap, kernel %s, docker storage driver %s, cgroup v%s, commit %s",
		f.Cores, f.MemMB, f.SwapMB, f.Kernel, f.Storage, f.Cgroup, f.Commit)
}

func readMachineFacts() machineFacts {
	f := machineFacts{Cores: runtime.NumCPU(), MemMB: meminfoMB("MemTotal"), SwapMB: meminfoMB("SwapTotal")}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		f.Kernel = strings.TrimSpace(string(b))
	}
	if out, err := exec.Command("docker", "info", "-f", "{{.Driver}} {{.CgroupVersion}}").Output(); err == nil {
		f.Storage, f.Cgroup, _ = strings.Cut(strings.TrimSpace(string(out)), " ")
	}
	if out, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output(); err == nil {
		f.Commit = strings.TrimSpace(string(out))
	}
	return f
}

func meminfoMB(key string) int {
	b, _ := os.ReadFile("/proc/meminfo")
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == key+":" {
			kb, _ := strconv.Atoi(f[1])
			return kb >> 10
		}
	}
	return -1
}

func readLoad() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// soakReport is the dated report.
func soakReport(profile string, b soakBudget, duration, msgEvery time.Duration, f machineFacts, load string, began, ended time.Time, ss []*soakSlice, verdicts []string) string {
	var w strings.Builder
	fmt.Fprintf(&w, "# Soak, modelled (%s), %s\n\n", profile, began.UTC().Format("2006-01-02 15:04 UTC"))
	fmt.Fprintf(&w, "Regenerate: `make soak` (SOAK_SLICES, SOAK_PROFILE, SOAK_DURATION). Stand-in weight profile %q (slice/standin/README.md), served by each slice itself (`wa_standin`): all figures are **modelled**.\n\n", profile)
	fmt.Fprintf(&w, "- Machine: %s.\n- Load average at the start of the run (1, 5, 15 min): %s.\n", f, load)
	fmt.Fprintf(&w, "- Run: %d slice(s), %s asked, %s measured (%s → %s), a reading every %s, a phone message to each slice every %s.\n",
		len(ss), duration, ended.Sub(began).Round(time.Second), began.UTC().Format(time.TimeOnly), ended.UTC().Format(time.TimeOnly), soakEvery, msgEvery)
	fmt.Fprintf(&w, "- Budget: soft threshold (memory_soft_mb, anon+shmem) **%d MiB**, memory_max **%d MiB**, reservation %d MiB. Source: %s\n", b.Soft, b.Max, b.Reserve, b.Source)
	fmt.Fprintf(&w, "- Restart loop: the governor over the threshold again within %s of a restart (its suppressed_loop), or %d restarts within %s (its alert). A loop, anon+shmem at memory_max, an OOM kill, a task restart, a Chromium crash, a QR code after the link or a message missing from the CRM fails the run.\n\n",
		soakLoopWithin, soakLoopRestarts, soakLoopWindow)
	w.WriteString("## Memory per slice (MiB; the slice's own cgroup, read by the slice)\n\n")
	w.WriteString("| slice | readings | anon+shmem p50 | p99 | max | vs soft | anon+file p99 | max | cgroup high-water | limit read | weight build |\n|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|\n")
	for _, s := range ss {
		var gov, chg []float64
		for _, x := range s.Samples {
			gov = append(gov, x.governed())
			chg = append(chg, x.charged())
		}
		p99 := quantile(gov, 0.99)
		vs := "p99 under"
		if p99 >= float64(b.Soft) {
			vs = "**p99 over**"
		}
		fmt.Fprintf(&w, "| %s | %d (%d failed) | %.0f | %.0f | %.0f | %s | %.0f | %.0f | %.0f | %.0f | %.1f s |\n", s.ID, len(s.Samples), s.Failed,
			quantile(gov, 0.5), p99, quantile(gov, 1), vs, quantile(chg, 0.99), quantile(chg, 1), s.MaxUsageMB, s.LimitMB, float64(s.WeightMS)/1000)
	}
	w.WriteString("\nanon+file is what the limit counts (file is page cache, shmem included, which the kernel reclaims before an OOM kill); the high-water mark is the cgroup's own (memory.max_usage_in_bytes, or memory.peak), over the whole life of the container, weight build included.\n\n")
	w.WriteString("## Governor, session, messages\n\n| slice | restarts | at (UTC) | deferred busy | loop | Chromium launches / crashes | task restarts | OOM kills | QR after link | messages sent / in CRM |\n|---|---:|---|---:|---|---|---:|---:|---:|---|\n")
	for _, s := range ss {
		var last soakSample
		if len(s.Samples) > 0 {
			last = s.Samples[len(s.Samples)-1]
		}
		var at []string
		for _, x := range s.restartTimes() {
			at = append(at, x.UTC().Format(time.TimeOnly))
		}
		loop := "no"
		if l := s.loop(); l != "" {
			loop = "**yes**: " + l
		}
		fmt.Fprintf(&w, "| %s | %d | %s | %d | %s | %d / %d | %d | %d | %d | %d / %d |\n", s.ID, last.Restarts, strings.Join(at, ", "), last.Deferred, loop,
			s.Launches, s.Crashes, s.TaskRestarts, s.OOMKills, len(s.QRAfterLink), len(s.Sent), s.InCRM)
	}
	w.WriteString("\nRestart times are those of the reading that first saw the count go up (within 10 s). Chromium's launches and crashes are counted in the slice's log as Nomad keeps it (rotated).\n\n")
	w.WriteString("## Timeline (one reading a minute, MiB)\n\n| slice | at (UTC) | anon | shmem | file | anon+shmem | restarts | state |\n|---|---|---:|---:|---:|---:|---:|---|\n")
	for _, s := range ss {
		var last time.Time
		for i, x := range s.Samples {
			if i > 0 && i < len(s.Samples)-1 && x.At.Sub(last) < time.Minute {
				continue
			}
			last = x.At
			fmt.Fprintf(&w, "| %s | %s | %.0f | %.0f | %.0f | %.0f | %d | %s |\n", s.ID, x.At.UTC().Format(time.TimeOnly), x.Anon, x.Shmem, x.File, x.governed(), x.Restarts, x.State)
		}
	}
	w.WriteString("\n## Verdict\n\n")
	if len(verdicts) == 0 {
		w.WriteString("Passed: no restart loop, nothing at memory_max, every session kept, every message in its CRM.\n")
	}
	for _, v := range verdicts {
		fmt.Fprintf(&w, "- FAILED: %s\n", v)
	}
	return w.String()
}
