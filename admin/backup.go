package admin

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/slicehub/slicehub"
)

// Backups dumps and restores databases (*postgres.DB): a slice's, or the
// gateway's own (backup only: a gateway restore is a disaster operation
// done by slicectl straight against PostgreSQL, with the gateways stopped).
type Backups interface {
	DatabaseExists(ctx context.Context, name string) error
	DumpTo(ctx context.Context, name string, w io.Writer, pgDump string) error
	RestoreSliceDatabase(ctx context.Context, id int64, r io.Reader, pgRestore string) error
	GatewayDatabase() string
}

// JobWaiter waits until a stopped slice job's allocations have ended
// (*nomad.Client), so that a restore never swaps a database under a slice
// process that is still shutting down.
type JobWaiter interface {
	WaitStopped(ctx context.Context, jobID string) error
}

// stopWait bounds that wait: longer than a slice's kill timeout.
const stopWait = 2 * time.Minute

// backupTimeout bounds one dump or restore: long enough for a big slice
// database, short enough that a stuck pg_dump does not hold a connection
// for ever.
const backupTimeout = time.Hour

// sliceBackup streams GET /admin/api/slices/:id/backup: a custom-format
// pg_dump of the slice's database, as application/octet-stream.
func (a *API) sliceBackup(c *fiber.Ctx) error {
	const op = "admin.slice_backup"
	if a.d.Backups == nil {
		return slicehub.Errorf(op, slicehub.KindUnavailable, "backups_unavailable", "this gateway cannot make backups")
	}
	id, err := parseID(op, c, "slice")
	if err != nil {
		return err
	}
	ctx, cancel := a.ctx(c)
	defer cancel()
	sl, err := a.d.Store.Slice(ctx, id)
	if err != nil {
		return slicehub.Wrap(op, slicehub.KindInternal, err)
	}
	if sl.State == slicehub.StateRetired {
		return slicehub.Errorf(op, slicehub.KindConflict, "slice_retired", "slice %d is retired; its final dump is in the dump directory", id)
	}
	return a.streamDump(c, op, slicehub.DatabaseName(id), "slice_backup", "slice_id", id)
}

// gatewayBackup streams GET /admin/api/gateway/backup: the gateway's own
// database (accounts, slices, secrets). It holds every slice's database
// password: the file must be kept like one.
func (a *API) gatewayBackup(c *fiber.Ctx) error {
	const op = "admin.gateway_backup"
	if a.d.Backups == nil {
		return slicehub.Errorf(op, slicehub.KindUnavailable, "backups_unavailable", "this gateway cannot make backups")
	}
	return a.streamDump(c, op, a.d.Backups.GatewayDatabase(), "gateway_backup", "database", a.d.Backups.GatewayDatabase())
}

func (a *API) streamDump(c *fiber.Ctx, op, dbName, action string, attrs ...any) error {
	ctx, cancel := a.ctx(c)
	err := a.d.Backups.DatabaseExists(ctx, dbName)
	cancel()
	if err != nil {
		return slicehub.Wrap(op, slicehub.KindInternal, err)
	}
	// The audit row says who took the data out, whether or not the dump
	// then completes.
	a.audit(c, "admin action", append([]any{"action", action}, attrs...)...)
	c.Set(fiber.HeaderContentType, "application/octet-stream")
	c.Set(fiber.HeaderContentDisposition, `attachment; filename="`+dbName+`.dump"`)
	c.Set(fiber.HeaderCacheControl, "no-store")
	c.Set("X-Accel-Buffering", "no")
	conn := c.Context().Conn()
	c.Context().SetConnectionClose()
	c.Context().SetBodyStreamWriter(func(w *bufio.Writer) {
		sctx, scancel := context.WithTimeout(context.Background(), backupTimeout)
		defer scancel()
		err := a.d.Backups.DumpTo(sctx, dbName, w, "")
		if err == nil {
			err = w.Flush()
		}
		if err != nil {
			a.log.Error("backup failed while streaming", append([]any{"action", action, "err", err}, attrs...)...)
			// The status is long sent: cut the connection before the final
			// chunk, so that the client sees a truncated body, not a
			// complete-looking dump.
			_ = conn.Close()
		}
	})
	return nil
}

// StreamsBody reports whether path is the restore endpoint, whose body (a
// whole database dump) the gateway should hand over as it arrives instead
// of reading it into memory first (gateway.Server.StreamBody).
func StreamsBody(path string) bool {
	rest, ok := strings.CutPrefix(path, "/admin/api/slices/")
	if !ok {
		return false
	}
	id, ok := strings.CutSuffix(rest, "/restore")
	if !ok || id == "" {
		return false
	}
	for _, r := range id {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}

// sliceRestore is POST /admin/api/slices/:id/restore with a custom-format
// dump as the body (?confirm=<id>, as for every destructive action). A
// running slice is suspended for the restore, so that it cannot write
// while its database is replaced, and resumed after it, whether the
// restore succeeded or not (a failed one leaves its data as it was).
func (a *API) sliceRestore(c *fiber.Ctx) error {
	const op = "admin.slice_restore"
	if a.d.Backups == nil {
		return slicehub.Errorf(op, slicehub.KindUnavailable, "backups_unavailable", "this gateway cannot restore backups")
	}
	id, err := parseID(op, c, "slice")
	if err != nil {
		return err
	}
	if err := confirmed(op, actionBody{Confirm: c.Query("confirm")}, id, "slice"); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(c.UserContext(), backupTimeout)
	defer cancel()
	sl, err := a.d.Store.Slice(ctx, id)
	if err != nil {
		return slicehub.Wrap(op, slicehub.KindInternal, err)
	}
	if !sl.State.Restorable() {
		return slicehub.Errorf(op, slicehub.KindConflict, "slice_state", "cannot restore into a %s slice", sl.State)
	}
	actor, _ := a.actor(c)
	resume := sl.State == slicehub.StateAssigned
	if resume {
		if _, err := a.d.Pool.Suspend(ctx, id, actor); err != nil {
			return slicehub.Wrap(op, slicehub.KindInternal, err)
		}
	}
	if a.d.Jobs != nil {
		wctx, wcancel := context.WithTimeout(ctx, stopWait)
		err := a.d.Jobs.WaitStopped(wctx, sl.JobID)
		wcancel()
		if err != nil {
			if resume {
				if _, rerr := a.d.Pool.Resume(context.WithoutCancel(ctx), id, actor); rerr != nil {
					a.log.Error("slice not resumed after a refused restore", "slice_id", id, "err", rerr)
				}
			}
			return slicehub.Wrap(op, slicehub.KindInternal, err)
		}
	}
	// fasthttp streams the body when the server is configured to;
	// otherwise it was read whole, within the body limit.
	var body io.Reader = c.Context().RequestBodyStream()
	if body == nil {
		body = bytes.NewReader(c.Body())
	}
	rerr := a.d.Backups.RestoreSliceDatabase(ctx, id, body, "")
	a.audit(c, "admin action", "action", "slice_restore", "slice_id", id, "ok", rerr == nil, "err", errText(rerr))
	if resume {
		if _, err := a.d.Pool.Resume(context.WithoutCancel(ctx), id, actor); err != nil {
			a.log.Error("slice not resumed after a restore", "slice_id", id, "err", err)
			if rerr == nil {
				return slicehub.Wrap(op, slicehub.KindInternal, err)
			}
		}
	}
	if rerr != nil {
		return slicehub.Wrap(op, slicehub.KindInternal, rerr)
	}
	ctx2, cancel2 := a.ctx(c)
	defer cancel2()
	if sl, err = a.d.Store.Slice(ctx2, id); err != nil {
		return slicehub.Wrap(op, slicehub.KindInternal, err)
	}
	return c.JSON(fiber.Map{"slice": a.sliceJSON(sl), "restored": true})
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return slicehub.MessageOf(err)
}
