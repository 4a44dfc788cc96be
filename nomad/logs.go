package nomad

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"sort"
	"time"

	"github.com/hashicorp/nomad/api"

	"github.com/slicehub/slicehub"
)

// A slice's logs (the admin API's GET /admin/api/slices/:id/logs) and the
// wait for a stopped job (a backup restore).

// Logs reads allocation logs through Nomad's client API (AllocFS().Logs),
// which relays them from whichever node runs the allocation, with frames
// already decoded to plain text.

// tailBytesPerLine is how far back from the end a --tail read starts, per
// line wanted: Nomad's log API seeks in bytes, not lines. Lines longer than
// this on average give fewer lines than asked for; tailMaxBytes bounds it.
const (
	tailBytesPerLine = 512
	tailMaxBytes     = 1 << 20
)

// Logs implements admin.SliceLogs.
func (n *Client) Logs(ctx context.Context, jobID string, q slicehub.LogQuery) (io.ReadCloser, error) {
	const op = "nomad.slice_logs"
	noAlloc := slicehub.Errorf(op, slicehub.KindConflict, "no_allocation", "the slice has no allocation to read logs from")
	if jobID == "" {
		return nil, noAlloc
	}
	qo := (&api.QueryOptions{}).WithContext(ctx)
	stubs, _, err := n.API.Jobs().Allocations(jobID, false, qo)
	var ue api.UnexpectedResponseError
	if errors.As(err, &ue) && ue.StatusCode() == http.StatusNotFound {
		return nil, noAlloc // the job is gone (garbage-collected)
	}
	if err != nil {
		return nil, slicehub.Wrap(op, slicehub.KindUnavailable, err)
	}
	stub := currentAlloc(stubs)
	if stub == nil {
		return nil, noAlloc
	}
	alloc, _, err := n.API.Allocations().Info(stub.ID, qo)
	if err != nil {
		return nil, slicehub.Wrap(op, slicehub.KindUnavailable, err)
	}
	task, err := allocTask(op, alloc, q.Task)
	if err != nil {
		return nil, err
	}
	logType, origin, offset := "stdout", "start", int64(0)
	if q.Stderr {
		logType = "stderr"
	}
	if q.Tail > 0 {
		origin, offset = "end", min(int64(q.Tail)*tailBytesPerLine, tailMaxBytes)
	}
	cancel := make(chan struct{})
	frames, errs := n.API.AllocFS().Logs(alloc, q.Follow, task, logType, origin, offset, cancel, qo)
	r := api.NewFrameReader(frames, errs, cancel)
	if q.Tail <= 0 {
		return r, nil
	}
	return newTailReader(r, q.Tail, offset), nil
}

// WaitStopped returns once no allocation of job runs any more (a stopped
// job's tasks get their kill timeout to end), polling Nomad until ctx
// ends. A job Nomad does not know is stopped.
func (n *Client) WaitStopped(ctx context.Context, jobID string) error {
	const op = "nomad.wait_stopped"
	if jobID == "" {
		return nil
	}
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		stubs, _, err := n.API.Jobs().Allocations(jobID, false, (&api.QueryOptions{}).WithContext(ctx))
		var ue api.UnexpectedResponseError
		if errors.As(err, &ue) && ue.StatusCode() == http.StatusNotFound {
			return nil
		}
		if err == nil {
			running := false
			for _, s := range stubs {
				if s.ClientStatus == slicehub.AllocRunning || s.ClientStatus == slicehub.AllocPending {
					running = true
				}
			}
			if !running {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return slicehub.Errorf(op, slicehub.KindUnavailable, "slice_still_running", "the slice's job %s did not stop in time", jobID)
		case <-tick.C:
		}
	}
}

// currentAlloc picks the allocation whose logs "the slice's logs" means:
// the newest one still running, else the newest one at all (a slice that
// just failed: its logs say why).
func currentAlloc(stubs []*api.AllocationListStub) *api.AllocationListStub {
	if len(stubs) == 0 {
		return nil
	}
	sort.Slice(stubs, func(i, j int) bool { return stubs[i].CreateIndex > stubs[j].CreateIndex })
	for _, s := range stubs {
		if s.ClientStatus == slicehub.AllocRunning {
			return s
		}
	}
	return stubs[0]
}

func allocTask(op string, alloc *api.Allocation, task string) (string, error) {
	var names []string
	if alloc.Job != nil {
		for _, g := range alloc.Job.TaskGroups {
			if g.Name != nil && *g.Name == alloc.TaskGroup {
				for _, t := range g.Tasks {
					names = append(names, t.Name)
				}
			}
		}
	}
	if task == "" {
		if len(names) == 0 {
			return "", slicehub.Errorf(op, slicehub.KindConflict, "no_task", "the allocation has no task")
		}
		return names[0], nil
	}
	for _, n := range names {
		if n == task {
			return task, nil
		}
	}
	return "", slicehub.Errorf(op, slicehub.KindInvalid, "unknown_task", "the slice's allocation has no task %q", task)
}

// tailReader passes on only the last n lines of the backlog (the bytes
// before the end that the request asked for), then everything after. The
// backlog is over when that many bytes have come, or when Nomad sends
// nothing for backlogQuiet (a log shorter than the offset: Nomad sends
// what exists at once).
type tailReader struct {
	r       *api.FrameReader
	n       int
	want    int64
	backlog bool
	pending []byte // tail lines ready to hand out
}

const backlogQuiet = 300 * time.Millisecond

func newTailReader(r *api.FrameReader, n int, want int64) *tailReader {
	return &tailReader{r: r, n: n, want: want, backlog: true}
}

func (t *tailReader) Read(p []byte) (int, error) {
	if t.backlog {
		t.backlog = false
		t.r.SetUnblockTime(backlogQuiet)
		var buf bytes.Buffer
		chunk := make([]byte, 32<<10)
		var err error
		for int64(buf.Len()) < t.want {
			var k int
			k, err = t.r.Read(chunk)
			buf.Write(chunk[:k])
			if k == 0 || err != nil {
				break
			}
		}
		t.r.SetUnblockTime(0)
		t.pending = lastLines(buf.Bytes(), t.n)
		if err != nil && len(t.pending) == 0 {
			return 0, err
		}
	}
	if len(t.pending) > 0 {
		k := copy(p, t.pending)
		t.pending = t.pending[k:]
		return k, nil
	}
	return t.r.Read(p)
}

func (t *tailReader) Close() error { return t.r.Close() }

// lastLines returns the last n lines of b (a last line without its newline
// counts).
func lastLines(b []byte, n int) []byte {
	end := len(b)
	if end > 0 && b[end-1] == '\n' {
		end--
	}
	for i := end - 1; i >= 0; i-- {
		if b[i] == '\n' {
			n--
			if n == 0 {
				return b[i+1:]
			}
		}
	}
	return b
}
