package jobs_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"image/png"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	consulapi "github.com/hashicorp/consul/api"
	nomadapi "github.com/hashicorp/nomad/api"
	"github.com/jackc/pgx/v5"

	"github.com/slicehub/slicehub"
	sliceconsul "github.com/slicehub/slicehub/consul"
	"github.com/slicehub/slicehub/jobs"
	"github.com/slicehub/slicehub/slice/standin"
	"github.com/slicehub/slicehub/testsupport"
)

// newStandIn serves the stand-in WhatsApp page on 127.0.0.1, which the
// slices reach because they use host networking.
func newStandIn(t testing.TB) (*standin.Server, *httptest.Server) {
	sv := standin.New(standin.Options{Codes: 3, Refresh: 2 * time.Second, Logger: slog.New(slog.DiscardHandler)})
	ts := httptest.NewServer(sv)
	t.Cleanup(ts.Close)
	return sv, ts
}

// seccompProfile is the profile ops/image.sh wrote next to the image
// reference; call it after sliceImage.
func seccompProfile(t testing.TB) string {
	t.Helper()
	p := filepath.Join(repoRoot(t), "bin", "chromium-seccomp.json")
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("no seccomp profile (ops/image.sh writes it): %v", err)
	}
	return p
}

// profileDir is the slice's profile directory on the host. The slice's
// entrypoint gives it to the slice's own uid; the root stays root's.
func profileDir(t testing.TB, sliceID string) string {
	t.Helper()
	return filepath.Join(testsupport.Stack(t).Nomad.ProfilesDir, sliceID)
}

// dockerVars adds what the docker job needs on the test stack: the profiles
// directory of devenv, and the host's network. These tests exercise the
// job's mechanics; slices on the slice network, behind its firewall, are
// package hostile's.
func dockerVars(vars map[string]string) map[string]string {
	vars["profiles_dir"] = testsupport.Stack().Nomad.ProfilesDir
	vars["network"] = "host"
	return vars
}

// registerSliceJob registers the docker job with vars.
func registerSliceJob(t testing.TB, nomad *nomadapi.Client, vars map[string]string) {
	t.Helper()
	job, err := nomad.Jobs().ParseHCLOpts(&nomadapi.JobsParseRequest{JobHCL: jobs.SliceDocker, Variables: hclVars(dockerVars(vars)), Canonicalize: true})
	if err != nil {
		t.Fatalf("ParseHCLOpts: %v", err)
	}
	if _, _, err := nomad.Jobs().RegisterOpts(job, nil, nil); err != nil {
		t.Fatalf("RegisterOpts: %v", err)
	}
}

// dispatchSlice dispatches a child for sliceID; it is purged at the end.
func dispatchSlice(t testing.TB, nomad *nomadapi.Client, sliceID string) string {
	t.Helper()
	return dispatchSliceMeta(t, nomad, sliceID, nil)
}

// dispatchSliceMeta is dispatchSlice with the job's optional meta
// (memory_soft_mb, wa_standin_weight) set for this slice only.
func dispatchSliceMeta(t testing.TB, nomad *nomadapi.Client, sliceID string, meta map[string]string) string {
	t.Helper()
	m := map[string]string{slicehub.MetaSliceID: sliceID}
	for k, v := range meta {
		m[k] = v
	}
	resp, _, err := nomad.Jobs().Dispatch(slicehub.NomadJobID, m, nil, "", nil)
	if err != nil {
		t.Fatalf("Dispatch: %v", err)
	}
	child := resp.DispatchedJobID
	t.Cleanup(func() { _, _, _ = nomad.Jobs().Deregister(child, true, nil) })
	return child
}

// stopChild stops a child job as a suspend would (no purge) and waits until
// its allocations have stopped.
func stopChild(t *testing.T, nomad *nomadapi.Client, child string) {
	t.Helper()
	if _, _, err := nomad.Jobs().Deregister(child, false, nil); err != nil {
		t.Fatalf("stop %s: %v", child, err)
	}
	testsupport.Eventually(t, time.Minute, "allocations of "+child+" stopped", func() (bool, error) {
		allocs, _, err := nomad.Jobs().Allocations(child, true, nil)
		if err != nil {
			return false, err
		}
		for _, a := range allocs {
			if a.ClientStatus == nomadapi.AllocClientStatusRunning || a.ClientStatus == nomadapi.AllocClientStatusPending {
				return false, fmt.Errorf("allocation %s is %s", a.ID[:8], a.ClientStatus)
			}
		}
		return true, nil
	})
}

// waitPassingAlloc is waitPassing for an instance other than the allocation
// notAlloc (which may linger in Consul while it stops).
func waitPassingAlloc(t *testing.T, consul *consulapi.Client, sliceID, notAlloc string) *consulapi.ServiceEntry {
	t.Helper()
	var found *consulapi.ServiceEntry
	testsupport.Eventually(t, 3*time.Minute, "a new instance of slice "+sliceID+" passing", func() (bool, error) {
		entries, _, err := consul.Health().Service(slicehub.ConsulService, "", false, &consulapi.QueryOptions{
			Filter: fmt.Sprintf("Service.Meta.%s == %q", slicehub.MetaSliceID, sliceID),
		})
		if err != nil {
			return false, err
		}
		entries = sliceconsul.RoutableOnly(entries) // the WhatsApp check may be a warning
		for _, e := range entries {
			if e.Service.Meta["alloc_id"] != notAlloc {
				found = e
				return true, nil
			}
		}
		return false, fmt.Errorf("%d passing instances, none new", len(entries))
	})
	return found
}

// sliceAPI calls a slice as the gateway does.
type sliceAPI struct {
	t     testing.TB
	base  string
	token string
}

func apiOf(t testing.TB, e *consulapi.ServiceEntry, token string) sliceAPI {
	return sliceAPI{t: t, base: fmt.Sprintf("http://%s:%d", e.Service.Address, e.Service.Port), token: token}
}

func (a sliceAPI) do(method, path, body string, out any) (int, error) {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, a.base+path, rd)
	if err != nil {
		return 0, err
	}
	if a.token != "" {
		req.Header.Set(slicehub.HeaderGatewayToken, a.token)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, err
	}
	if out != nil {
		if ob, ok := out.(*[]byte); ok {
			*ob = raw
		} else if err := json.Unmarshal(raw, out); err != nil {
			return resp.StatusCode, fmt.Errorf("%s %s = %d %q: %w", method, path, resp.StatusCode, raw, err)
		}
	}
	return resp.StatusCode, nil
}

// waitState waits for the WhatsApp state want; it tolerates the slice being
// briefly unreachable (it may be restarting).
func (a sliceAPI) waitState(want string, timeout time.Duration) {
	a.t.Helper()
	testsupport.Eventually(a.t, timeout, "WhatsApp state "+want, func() (bool, error) {
		var st struct{ State string }
		code, err := a.do("GET", "/api/status/state", "", &st)
		if err != nil || code != 200 {
			return false, fmt.Errorf("GET /api/status/state = %d %v", code, err)
		}
		return st.State == want, fmt.Errorf("state %s", st.State)
	})
}

// crmNote is the CRM data the test writes once and checks after each event.
type crmNote struct{ contactID, noteID int64 }

func (a sliceAPI) writeCRM() crmNote {
	a.t.Helper()
	var c struct{ ID int64 }
	if code, err := a.do("POST", "/api/contacts", `{"name":"Bia Lima","phone":"+55 21 99876-5432"}`, &c); err != nil || code != 201 {
		a.t.Fatalf("POST /api/contacts = %d %v", code, err)
	}
	var n struct{ ID int64 }
	if code, err := a.do("POST", fmt.Sprintf("/api/contacts/%d/notes", c.ID), `{"body":"asked for the catalogue"}`, &n); err != nil || code != 201 {
		a.t.Fatalf("POST note = %d %v", code, err)
	}
	return crmNote{c.ID, n.ID}
}

func (a sliceAPI) checkCRM(want crmNote) {
	a.t.Helper()
	var notes struct {
		Notes []struct {
			ID   int64
			Body string
		}
	}
	code, err := a.do("GET", fmt.Sprintf("/api/contacts/%d/notes", want.contactID), "", &notes)
	if err != nil || code != 200 || len(notes.Notes) != 1 || notes.Notes[0].ID != want.noteID {
		a.t.Fatalf("CRM data lost: GET notes = %d %v %+v, want note %d", code, err, notes, want.noteID)
	}
}

// sliceProcesses finds, from the host, the processes of the slice container
// of an allocation: the container's init, its Chromium browser process and
// a renderer.
type sliceProcesses struct {
	browser, renderer int
}

func findChromium(t *testing.T, allocID string) (sliceProcesses, error) {
	out, err := exec.Command("docker", "inspect", "-f", "{{.State.Pid}}", "slice-"+allocID).Output()
	if err != nil {
		return sliceProcesses{}, fmt.Errorf("docker inspect slice-%s: %w", allocID, err)
	}
	root, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil || root <= 0 {
		return sliceProcesses{}, fmt.Errorf("container not running (pid %q)", out)
	}
	children := map[int][]int{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...; comm may hold spaces, so split after ')'.
		fields := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
		if len(fields) > 1 {
			ppid, _ := strconv.Atoi(fields[1])
			children[ppid] = append(children[ppid], pid)
		}
	}
	var ps sliceProcesses
	queue := []int{root}
	for len(queue) > 0 {
		pid := queue[0]
		queue = queue[1:]
		queue = append(queue, children[pid]...)
		cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		args := string(bytes.ReplaceAll(cmd, []byte{0}, []byte{' '}))
		if !strings.Contains(args, "--user-data-dir=") {
			continue
		}
		switch {
		case !strings.Contains(args, "--type="):
			ps.browser = pid
		case strings.Contains(args, "--type=renderer") && ps.renderer == 0:
			ps.renderer = pid
		}
	}
	if ps.browser == 0 || ps.renderer == 0 {
		return ps, fmt.Errorf("Chromium not found in the container (browser %d, renderer %d)", ps.browser, ps.renderer)
	}
	return ps, nil
}

// checkSandboxed asserts that the renderer runs in Chromium's sandbox: its
// own user namespace, and a seccomp-bpf filter of Chromium's on top of the
// container's.
func checkSandboxed(t *testing.T, ps sliceProcesses) {
	t.Helper()
	ns := func(pid int) string {
		l, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/user", pid))
		return l
	}
	if ns(ps.renderer) == "" || ns(ps.renderer) == ns(ps.browser) {
		t.Fatalf("the renderer shares the browser's user namespace (%s): not sandboxed", ns(ps.renderer))
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", ps.renderer))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(status, []byte("Seccomp:\t2")) {
		t.Fatal("the renderer has no seccomp filter")
	}
}

// snapshotHolds reports whether the snapshot in the slice's database has
// needle under Local Storage and under IndexedDB.
func snapshotHolds(dbURL string, needle []byte) (bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return false, err
	}
	defer conn.Close(ctx)
	var data []byte
	var gen int64
	if err := conn.QueryRow(ctx, `SELECT generation, data FROM profile_snapshot`).Scan(&gen, &data); err != nil {
		return false, fmt.Errorf("no snapshot yet: %w", err)
	}
	zr, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		return false, err
	}
	tr := tar.NewReader(zr)
	var inLS, inIDB bool
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return false, err
		}
		b, _ := io.ReadAll(tr)
		if bytes.Contains(b, needle) {
			inLS = inLS || strings.HasPrefix(h.Name, "Default/Local Storage/")
			inIDB = inIDB || strings.HasPrefix(h.Name, "Default/IndexedDB/")
		}
	}
	return inLS && inIDB, fmt.Errorf("generation %d (%d bytes): login in Local Storage %v, in IndexedDB %v", gen, len(data), inLS, inIDB)
}

// allocLogLine returns the first line of the slice's stderr that contains
// substr ("" if none).
func allocLogLine(t *testing.T, nomad *nomadapi.Client, allocID, substr string) string {
	t.Helper()
	for _, line := range strings.Split(allocStderr(t, nomad, allocID), "\n") {
		if strings.Contains(line, substr) {
			return line
		}
	}
	return ""
}

// allocStderr is the slice's stderr so far, as Nomad's logs API gives it.
func allocStderr(t *testing.T, nomad *nomadapi.Client, allocID string) string {
	t.Helper()
	alloc, _, err := nomad.Allocations().Info(allocID, nil)
	if err != nil {
		t.Fatal(err)
	}
	cancel := make(chan struct{})
	defer close(cancel)
	frames, errs := nomad.AllocFS().Logs(alloc, false, "slice", "stderr", "start", 0, cancel, nil)
	var buf bytes.Buffer
	for frames != nil {
		select {
		case f, ok := <-frames:
			if !ok {
				frames = nil
				break
			}
			buf.Write(f.Data)
		case err := <-errs:
			if err != nil {
				t.Logf("reading the logs of %s: %v", allocID, err)
			}
			frames = nil
		}
	}
	return buf.String()
}

// TestWhatsAppSessionSurvives dispatches a real slice (docker driver,
// Chromium with its sandbox under the seccomp profile), links it on the
// stand-in page, and checks after each of the four events of the issue that
// it comes back "connected" without a new QR code and with its CRM data:
// (a) Chromium killed inside the slice, (b) the task restarted, (c) the job
// stopped and a new child dispatched (suspend and resume), (d) the same with
// the profile directory emptied (a move to another node: the snapshot in the
// database is restored).
func TestWhatsAppSessionSurvives(t *testing.T) {
	nomad, consul := agentClients(t)
	gw := newBootstrapGateway(t)
	sv, wa := newStandIn(t)
	const sliceID = "44"
	dbURL := testsupport.NewDatabase(t)
	token := "token-wa-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	gw.add(sliceID, slicehub.SliceCredentials{DatabaseURL: dbURL, GatewayToken: token})
	image := testsupport.SliceImage(t)
	profile := profileDir(t, sliceID)
	registerSliceJob(t, nomad, map[string]string{
		"image": image, "bootstrap_url": gw.srv.URL, "datacenters": "dc1",
		"seccomp_profile": seccompProfile(t), "wa_url": wa.URL + "/", "log_level": "debug",
	})

	t0 := time.Now()
	child := dispatchSlice(t, nomad, sliceID)
	entry := waitPassing(t, consul, sliceID)
	t.Logf("dispatch to passing in Consul: %v", time.Since(t0).Round(time.Millisecond))
	allocID := entry.Service.Meta["alloc_id"]
	api := apiOf(t, entry, token)

	// Linking: QR codes, the scan, connected.
	api.waitState(slicehub.WAQR, time.Minute)
	t.Logf("dispatch to QR code: %v", time.Since(t0).Round(time.Millisecond))
	var q struct {
		Seq int64
		QR  string
	}
	testsupport.Eventually(t, 15*time.Second, "a QR payload", func() (bool, error) {
		code, err := api.do("GET", "/api/status/qr?format=json", "", &q)
		return code == 200 && q.QR != "", fmt.Errorf("%d %v %+v", code, err, q)
	})
	var pngBytes []byte
	if code, err := api.do("GET", "/api/status/qr", "", &pngBytes); err != nil || code != 200 {
		t.Fatalf("GET /api/status/qr = %d %v", code, err)
	}
	if _, err := png.Decode(bytes.NewReader(pngBytes)); err != nil {
		t.Fatalf("the QR code is not a PNG: %v", err)
	}
	if code, _ := (sliceAPI{t: t, base: api.base}).do("GET", "/api/status/qr", "", nil); code != http.StatusUnauthorized {
		t.Fatalf("GET /api/status/qr without the gateway token = %d, want 401", code)
	}
	checkWhoami(t, strings.TrimPrefix(api.base, "http://"), token, sliceID)
	session, ok := standin.SessionFromPayload(q.QR)
	if !ok {
		t.Fatalf("payload %q is not the stand-in's", q.QR)
	}
	if err := sv.Scan(session); err != nil {
		t.Fatal(err)
	}
	api.waitState(slicehub.WAConnected, 30*time.Second)
	crm := api.writeCRM()
	testsupport.Eventually(t, 45*time.Second, "the login in the stored snapshot", func() (bool, error) {
		return snapshotHolds(dbURL, []byte(session))
	})
	pairings, codes := sv.Stats().Pairings, sv.Stats().Codes

	// after checks the end state of each event: connected again, from the
	// browser's storage (one more resume at the stand-in), with no new
	// pairing or QR code, and the CRM data intact.
	after := func(t *testing.T, api sliceAPI, resumes int) {
		t.Helper()
		testsupport.Eventually(t, 90*time.Second, "the page back from its storage", func() (bool, error) {
			st := sv.Stats()
			return st.Resumes > resumes, fmt.Errorf("resumes %d", st.Resumes)
		})
		api.waitState(slicehub.WAConnected, 30*time.Second)
		if st := sv.Stats(); st.Pairings != pairings || st.Codes != codes {
			t.Fatalf("the stand-in handed out %d new pairings and %d new QR codes, want none", st.Pairings-pairings, st.Codes-codes)
		}
		api.checkCRM(crm)
	}

	t.Run("sandbox", func(t *testing.T) {
		var ps sliceProcesses
		testsupport.Eventually(t, 10*time.Second, "Chromium in the container", func() (bool, error) {
			var err error
			ps, err = findChromium(t, allocID)
			return err == nil, err
		})
		checkSandboxed(t, ps)
	})

	t.Run("a: Chromium killed", func(t *testing.T) {
		ps, err := findChromium(t, allocID)
		if err != nil {
			t.Fatal(err)
		}
		resumes := sv.Stats().Resumes
		if err := syscall.Kill(ps.browser, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		after(t, api, resumes)
		again, err := findChromium(t, allocID)
		if err != nil || again.browser == ps.browser {
			t.Fatalf("no new browser process after the kill (%+v, %v)", again, err)
		}
	})

	t.Run("b: task restarted", func(t *testing.T) {
		alloc, _, err := nomad.Allocations().Info(allocID, nil)
		if err != nil {
			t.Fatal(err)
		}
		resumes := sv.Stats().Resumes
		if err := nomad.Allocations().Restart(alloc, "slice", nil); err != nil {
			t.Fatal(err)
		}
		after(t, api, resumes)
	})

	t.Run("c: stopped and dispatched again", func(t *testing.T) {
		resumes := sv.Stats().Resumes
		stopChild(t, nomad, child)
		child = dispatchSlice(t, nomad, sliceID)
		entry := waitPassingAlloc(t, consul, sliceID, allocID)
		allocID = entry.Service.Meta["alloc_id"]
		api = apiOf(t, entry, token)
		after(t, api, resumes)
	})

	t.Run("d: another node (empty profile directory)", func(t *testing.T) {
		resumes := sv.Stats().Resumes
		stopChild(t, nomad, child)
		entries, err := os.ReadDir(profile)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			if err := os.RemoveAll(filepath.Join(profile, e.Name())); err != nil {
				t.Fatal(err)
			}
		}
		child = dispatchSlice(t, nomad, sliceID)
		entry := waitPassingAlloc(t, consul, sliceID, allocID)
		allocID = entry.Service.Meta["alloc_id"]
		api = apiOf(t, entry, token)
		after(t, api, resumes)
		line := allocLogLine(t, nomad, allocID, "profile restored from the database")
		if line == "" {
			t.Fatal("the slice did not log a restore")
		}
		var rec struct {
			Bytes      int   `json:"bytes"`
			Files      int   `json:"files"`
			DurationMS int64 `json:"duration_ms"`
		}
		_ = json.Unmarshal([]byte(line), &rec)
		t.Logf("restored snapshot: %d bytes, %d files, %d ms (database read + unpack)", rec.Bytes, rec.Files, rec.DurationMS)
	})
}
