package admin

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"sort"
	"strconv"
	"time"

	"github.com/gofiber/fiber/v2"
	nomadapi "github.com/hashicorp/nomad/api"

	"github.com/slicehub/slicehub"
)

// LogQuery says which of a slice's logs to stream.
type LogQuery struct {
	// Task is the task of the allocation; empty: the group's first task
	// (the slice job has one, "slice").
	Task string
	// Stderr streams stderr instead of stdout.
	Stderr bool
	// Follow keeps the stream open for new lines until the client leaves.
	Follow bool
	// Tail > 0 starts with the last Tail lines instead of the beginning.
	Tail int
}

// SliceLogs opens the logs of the current allocation of a slice's job
// (NomadLogs). KindConflict when the job has no allocation, KindInvalid
// for an unknown task.
type SliceLogs interface {
	Logs(ctx context.Context, jobID string, q LogQuery) (io.ReadCloser, error)
}

// NomadLogs reads allocation logs through Nomad's client API
// (AllocFS().Logs), which relays them from whichever node runs the
// allocation, with frames already decoded to plain text.
type NomadLogs struct{ Client *nomadapi.Client }

// tailBytesPerLine is how far back from the end a --tail read starts, per
// line wanted: Nomad's log API seeks in bytes, not lines. Lines longer than
// this on average give fewer lines than asked for; tailMaxBytes bounds it.
const (
	tailBytesPerLine = 512
	tailMaxBytes     = 1 << 20
)

// Logs implements SliceLogs.
func (n NomadLogs) Logs(ctx context.Context, jobID string, q LogQuery) (io.ReadCloser, error) {
	const op = "admin.slice_logs"
	noAlloc := slicehub.Errorf(op, slicehub.KindConflict, "no_allocation", "the slice has no allocation to read logs from")
	if jobID == "" {
		return nil, noAlloc
	}
	qo := (&nomadapi.QueryOptions{}).WithContext(ctx)
	stubs, _, err := n.Client.Jobs().Allocations(jobID, false, qo)
	var ue nomadapi.UnexpectedResponseError
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
	alloc, _, err := n.Client.Allocations().Info(stub.ID, qo)
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
	frames, errs := n.Client.AllocFS().Logs(alloc, q.Follow, task, logType, origin, offset, cancel, qo)
	r := nomadapi.NewFrameReader(frames, errs, cancel)
	if q.Tail <= 0 {
		return r, nil
	}
	return newTailReader(r, q.Tail, offset), nil
}

// WaitStopped returns once no allocation of job runs any more (a stopped
// job's tasks get their kill timeout to end), polling Nomad until ctx
// ends. A job Nomad does not know is stopped.
func (n NomadLogs) WaitStopped(ctx context.Context, jobID string) error {
	const op = "admin.wait_stopped"
	if jobID == "" {
		return nil
	}
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		stubs, _, err := n.Client.Jobs().Allocations(jobID, false, (&nomadapi.QueryOptions{}).WithContext(ctx))
		var ue nomadapi.UnexpectedResponseError
		if errors.As(err, &ue) && ue.StatusCode() == http.StatusNotFound {
			return nil
		}
		if err == nil {
			running := false
			for _, s := range stubs {
				if s.ClientStatus == nomadapi.AllocClientStatusRunning || s.ClientStatus == nomadapi.AllocClientStatusPending {
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
func currentAlloc(stubs []*nomadapi.AllocationListStub) *nomadapi.AllocationListStub {
	if len(stubs) == 0 {
		return nil
	}
	sort.Slice(stubs, func(i, j int) bool { return stubs[i].CreateIndex > stubs[j].CreateIndex })
	for _, s := range stubs {
		if s.ClientStatus == nomadapi.AllocClientStatusRunning {
			return s
		}
	}
	return stubs[0]
}

func allocTask(op string, alloc *nomadapi.Allocation, task string) (string, error) {
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
	r       *nomadapi.FrameReader
	n       int
	want    int64
	backlog bool
	pending []byte // tail lines ready to hand out
}

const backlogQuiet = 300 * time.Millisecond

func newTailReader(r *nomadapi.FrameReader, n int, want int64) *tailReader {
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

// sliceLogs streams GET /admin/api/slices/:id/logs as text/plain:
// ?task=NAME&stderr=1&follow=1&tail=N. With follow it streams until the
// client goes away (noticed at the next write), the daemon shuts down, or
// the allocation's log ends.
func (a *API) sliceLogs(c *fiber.Ctx) error {
	const op = "admin.slice_logs"
	if a.d.Logs == nil {
		return slicehub.Errorf(op, slicehub.KindUnavailable, "logs_unavailable", "this gateway cannot read Nomad logs")
	}
	id, err := parseID(op, c, "slice")
	if err != nil {
		return err
	}
	q := LogQuery{Task: c.Query("task"), Stderr: c.QueryBool("stderr"), Follow: c.QueryBool("follow")}
	if s := c.Query("tail"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return slicehub.Errorf(op, slicehub.KindInvalid, "invalid_tail", "tail must be a whole number of lines ≥ 0")
		}
		q.Tail = n
	}
	ctx, cancel := a.ctx(c)
	sl, err := a.d.Store.Slice(ctx, id)
	cancel()
	if err != nil {
		return slicehub.Wrap(op, slicehub.KindInternal, err)
	}
	// The stream outlives this handler: its context ends with the stream.
	sctx, scancel := context.WithCancel(context.Background())
	r, err := a.d.Logs.Logs(sctx, sl.JobID, q)
	if err != nil {
		scancel()
		return slicehub.Wrap(op, slicehub.KindInternal, err)
	}
	a.audit(c, "admin action", "action", "slice_logs", "slice_id", id, "follow", q.Follow, "stderr", q.Stderr)
	c.Set(fiber.HeaderContentType, "text/plain; charset=utf-8")
	c.Set(fiber.HeaderCacheControl, "no-store")
	c.Set(fiber.HeaderXContentTypeOptions, "nosniff")
	c.Set("X-Accel-Buffering", "no")
	done := a.d.Done
	var conn net.Conn
	if q.Follow {
		// A follow may wait a long time for its next line, and a client
		// that left is only noticed when a write fails: watch the
		// connection instead. The request has been read whole, so a read
		// returns only when the client closes it. The connection is not
		// reused afterwards: the watcher may have read into a next request.
		conn = c.Context().Conn()
		c.Context().SetConnectionClose()
	}
	c.Context().SetBodyStreamWriter(func(w *bufio.Writer) {
		defer scancel()
		defer r.Close()
		go func() {
			select {
			case <-done: // nil: never
			case <-sctx.Done():
			}
			r.Close() // ends the read below
		}()
		if conn != nil {
			go func() {
				var one [1]byte
				_, _ = conn.Read(one[:])
				scancel()
			}()
			defer func() { _ = conn.SetReadDeadline(time.Now()) }() // ends the watcher
		}
		buf := make([]byte, 32<<10)
		for {
			n, err := r.Read(buf)
			if n > 0 {
				if _, werr := w.Write(buf[:n]); werr != nil || w.Flush() != nil {
					return // the client went away
				}
			}
			if err != nil {
				if !errors.Is(err, io.EOF) && sctx.Err() == nil {
					a.log.Warn("slice log stream ended", "slice_id", id, "err", err)
				}
				return
			}
		}
	})
	return nil
}
