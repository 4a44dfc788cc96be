package admin

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"strconv"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/slicehub/slicehub"
)

// LogQuery says which of a slice's logs to stream.
type LogQuery = slicehub.LogQuery

// SliceLogs opens the logs of the current allocation of a slice's job
// (*nomad.Client). KindConflict when the job has no allocation, KindInvalid
// for an unknown task.
type SliceLogs interface {
	Logs(ctx context.Context, jobID string, q LogQuery) (io.ReadCloser, error)
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
