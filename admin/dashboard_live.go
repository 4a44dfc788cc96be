package admin

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"time"

	"github.com/gofiber/fiber/v2"
)

// Live updates: the live panels, re-rendered and pushed as server-sent
// events whenever they change.

// liveEvent is what /admin/events sends: the live fragment, rendered.
type liveEvent struct {
	HTML string    `json:"html"`
	At   time.Time `json:"at"`
}

// events streams the live panels as server-sent events: an event "live"
// whenever the rendered fragment changes, a comment each tick otherwise so
// that a closed tab is noticed at the next write. The stream ends after
// MaxStream and the browser reconnects through the admin guard, which is
// what bounds how long an admin who lost the role keeps watching.
func (d *dashboard) events(c *fiber.Ctx) error {
	self := d.self(c)
	c.Set(fiber.HeaderContentType, "text/event-stream")
	c.Set(fiber.HeaderCacheControl, "no-store")
	c.Set(fiber.HeaderXContentTypeOptions, "nosniff")
	c.Set("X-Accel-Buffering", "no") // nginx must not buffer an event stream
	c.Context().SetBodyStreamWriter(func(w *bufio.Writer) { d.stream(self, w) })
	return nil
}

func (d *dashboard) stream(self int64, w *bufio.Writer) {
	if _, err := w.WriteString("retry: 3000\n\n"); err != nil || w.Flush() != nil {
		return
	}
	end := time.NewTimer(d.a.d.MaxStream)
	defer end.Stop()
	tick := time.NewTicker(d.a.d.Poll)
	defer tick.Stop()
	var last []byte
	for {
		ctx, cancel := context.WithTimeout(context.Background(), d.a.d.Timeout)
		data, err := d.snapshot(ctx, self)
		cancel()
		var frag bytes.Buffer
		sent := false
		switch {
		case err != nil:
			// PostgreSQL blinked: keep what the page shows, try next tick.
			d.a.log.Warn("dashboard live update failed", "err", err)
		case d.tmpl["dashboard"].ExecuteTemplate(&frag, "live", data) != nil:
			d.a.log.Error("dashboard live fragment failed to render")
		case !bytes.Equal(frag.Bytes(), last):
			last = frag.Bytes()
			b, _ := json.Marshal(liveEvent{HTML: frag.String(), At: data.At.UTC()})
			if writeEvent(w, "live", b) != nil {
				return
			}
			sent = true
		}
		// A comment otherwise: a tab that is gone is noticed only when a
		// write fails, and until then this loop keeps querying for it.
		if !sent {
			if _, err := w.WriteString(": tick\n\n"); err != nil || w.Flush() != nil {
				return
			}
		}
		select {
		case <-end.C:
			return
		case <-d.a.d.Done:
			return
		case <-tick.C:
		}
	}
}

func writeEvent(w *bufio.Writer, name string, data []byte) error {
	w.WriteString("event: ")
	w.WriteString(name)
	w.WriteString("\ndata: ")
	w.Write(data) // JSON: one line
	w.WriteString("\n\n")
	return w.Flush()
}
