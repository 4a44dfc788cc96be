package ops

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/slicehub/slicehub/admin"
	"github.com/slicehub/slicehub/nomad"
	"github.com/slicehub/slicehub/postgres"
	"github.com/slicehub/slicehub/testsupport"
)

// talker is a job shaped like the slice job (group and task "slice") that
// writes 50 numbered lines to stdout and one to stderr, then one more line
// a moment later (what --follow must bring), then idles.
const talker = `
job %q {
  type        = "batch"
  datacenters = ["dc1"]
  group "slice" {
    task "slice" {
      driver = "raw_exec"
      config {
        command = "/bin/sh"
        args    = ["-c", "i=1; while [ $i -le 50 ]; do echo line $i; i=$((i+1)); done; echo oops >&2; sleep 2; echo later; exec sleep 600"]
      }
      resources {
        cpu    = 20
        memory = 16
      }
    }
  }
}
`

// syncBuffer is a buffer the command writes while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func runCLI(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	code = Execute(ctx, args, &out, &errb)
	t.Logf("slicectl %s -> %d\n%s%s", strings.Join(args, " "), code, out.String(), errb.String())
	return code, out.String(), errb.String()
}

func TestSliceLogsFromRealNomad(t *testing.T) {
	ctx := t.Context()
	nc, err := testsupport.Stack(t).Nomad.Client()
	if err != nil {
		t.Fatal(err)
	}
	env := startAPI(t, func(d *admin.Deps, _ *postgres.DB) { d.Logs = &nomad.Client{API: nc} })

	b := make([]byte, 3)
	_, _ = rand.Read(b)
	jobID := "slice-logs-" + hex.EncodeToString(b)
	job, err := nc.Jobs().ParseHCL(fmt.Sprintf(talker, jobID), true)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := nc.Jobs().Register(job, nil); err != nil {
		t.Fatalf("register %s: %v", jobID, err)
	}
	t.Cleanup(func() { _, _, _ = nc.Jobs().Deregister(jobID, true, nil) })

	withJob, err := env.db.CreateSlice(ctx, 0, "test", "a slice whose job talks")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := env.db.Pool.Exec(ctx, `UPDATE slices SET job_id = $1 WHERE id = $2`, jobID, withJob.ID); err != nil {
		t.Fatal(err)
	}
	noJob, err := env.db.CreateSlice(ctx, 0, "test", "a slice not dispatched yet")
	if err != nil {
		t.Fatal(err)
	}
	cli := func(args ...string) (int, string, string) {
		return runCLI(t, append([]string{"--gateway", env.url, "--key", "shk_test"}, args...)...)
	}
	id := fmt.Sprint(withJob.ID)

	// The whole stdout, once the job has written its first 50 lines.
	testsupport.Eventually(t, 2*time.Minute, "the talker's 50 lines in its logs", func() (bool, error) {
		code, out, errs := cli("slices", "logs", id)
		if code != 0 {
			return false, fmt.Errorf("exit %d: %s", code, errs)
		}
		return strings.Contains(out, "line 50\n"), nil
	})
	code, out, _ := cli("slices", "logs", id)
	if code != 0 || !strings.HasPrefix(out, "line 1\nline 2\n") {
		t.Errorf("logs: exit %d, %q; want the log from its first line", code, out)
	}
	if code, out, _ := cli("slices", "logs", id, "--tail", "3"); code != 0 || !strings.HasPrefix(out, "line 48\nline 49\nline 50\n") {
		t.Errorf("logs --tail 3: exit %d, %q; want lines 48 to 50 first", code, out)
	}
	if code, out, _ := cli("slices", "logs", id, "--stderr"); code != 0 || out != "oops\n" {
		t.Errorf("logs --stderr: exit %d, %q; want oops", code, out)
	}

	// --follow keeps streaming: "later" comes after the request started,
	// and the command ends cleanly when the operator interrupts it.
	fctx, fcancel := context.WithCancel(ctx)
	defer fcancel()
	var fout, ferr syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- Execute(fctx, []string{"--gateway", env.url, "--key", "shk_test", "slices", "logs", id, "--follow", "--tail", "1"}, &fout, &ferr)
	}()
	testsupport.Eventually(t, time.Minute, "--follow printing the line written later", func() (bool, error) {
		return strings.Contains(fout.String(), "later\n"), nil
	})
	fcancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("logs --follow interrupted: exit %d (%s); want 0", code, ferr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("logs --follow did not end after its context was cancelled")
	}

	// What a restore waits for: the slice's job stopped, its allocation
	// ended (the talker would idle for ten minutes).
	nl := &nomad.Client{API: nc}
	short, scancel := context.WithTimeout(ctx, 500*time.Millisecond)
	err = nl.WaitStopped(short, jobID)
	scancel()
	if !strings.Contains(fmt.Sprint(err), "did not stop") {
		t.Errorf("WaitStopped on a running job: %v; want a timeout saying so", err)
	}
	if _, _, err := nc.Jobs().Deregister(jobID, false, nil); err != nil {
		t.Fatal(err)
	}
	long, lcancel := context.WithTimeout(ctx, time.Minute)
	defer lcancel()
	if err := nl.WaitStopped(long, jobID); err != nil {
		t.Errorf("WaitStopped on a stopped job: %v", err)
	}

	// Bad input: exit codes on the CLI, {"error","code"} on the API.
	if code, _, errs := cli("slices", "logs", "99999"); code != ExitUnhealthy || !strings.Contains(errs, "404") {
		t.Errorf("logs of an unknown slice: exit %d %q; want 3 and a 404", code, errs)
	}
	if code, _, errs := cli("slices", "logs", fmt.Sprint(noJob.ID)); code != ExitError || !strings.Contains(errs, "no_allocation") {
		t.Errorf("logs of a slice without an allocation: exit %d %q; want 1 and no_allocation", code, errs)
	}
	if code, _, errs := cli("slices", "logs", id, "--task", "nope"); code != ExitUsage || !strings.Contains(errs, "unknown_task") {
		t.Errorf("logs of an unknown task: exit %d %q; want 2 and unknown_task", code, errs)
	}
	for path, want := range map[string]int{
		"/admin/api/slices/99999/logs":                         404,
		"/admin/api/slices/abc/logs":                           400,
		fmt.Sprintf("/admin/api/slices/%d/logs", noJob.ID):     409,
		fmt.Sprintf("/admin/api/slices/%d/logs?tail=-1", 1):    400,
		fmt.Sprintf("/admin/api/slices/%s/logs?task=nope", id): 400,
	} {
		resp, err := http.Get(env.url + path)
		if err != nil {
			t.Fatal(err)
		}
		var body struct{ Error, Code string }
		err = json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if resp.StatusCode != want || err != nil || body.Error == "" || body.Code == "" {
			t.Errorf("GET %s: %d %+v (%v); want %d with {error, code}", path, resp.StatusCode, body, err, want)
		}
	}
}
