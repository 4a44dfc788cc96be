package admin

import (
	"context"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/slicehub/slicehub"
)

// The dashboard's data: one snapshot of the platform per render (slices,
// nodes, users, the pool, telemetry, the audit log), and one slice's page.

// page data

type stateCount struct {
	State slicehub.SliceState
	N     int
}

type sliceRow struct {
	SliceJSON
	Email      string
	AllocID    string
	Addr       string
	NomadURL   string
	ConsulURL  string
	Sample     *SliceSample
	MemSeries  []Point
	CPUSeries  []Point
	MemoryNear bool // over 90% of memory_max
}

type nodeRow struct {
	slicehub.NodeCapacity
	MemSeries []Point
	CPUSeries []Point
}

type userRow struct {
	UserJSON
	Self bool
}

// dashData is what the dashboard's templates get.
type dashData struct {
	Title, CSRF, Error, Notice string
	At                         time.Time

	Users, Admins, Disabled int
	States                  []stateCount
	Total                   int
	Pool                    PoolJSON

	Capacity      *slicehub.Capacity
	CapacityError string
	Nodes         []nodeRow

	Telemetry bool // telemetry is plugged in
	// Contacts and Notes add up the CRMs of the slices with a recent sample.
	Contacts, Notes int64
	Alerts          []Alert
	AlertsError     string

	Slices        []sliceRow
	HiddenRetired int // retired slices left out of the grid
	UserRows      []userRow
	AuditOn       bool
	Audit         []slicehub.SliceEvent
	AuditErr      string
	UserEmail     map[int64]string
}

// snapshot gathers every panel. A part that cannot be read (Nomad down,
// telemetry failing) becomes a message in its panel, not a failed page:
// the dashboard is what an operator opens when something is broken.
func (d *dashboard) snapshot(ctx context.Context, self int64) (*dashData, error) {
	const op = "admin.dashboard"
	a := d.a
	out := &dashData{At: time.Now(), Telemetry: a.d.Telemetry != nil, AuditOn: a.d.Events != nil, UserEmail: map[int64]string{}}

	users, err := a.d.Store.AdminUsers(ctx)
	if err != nil {
		return nil, slicehub.Wrap(op, slicehub.KindInternal, err)
	}
	for _, u := range users {
		out.Users++
		if u.IsAdmin {
			out.Admins++
		}
		if u.DisabledAt != nil {
			out.Disabled++
		}
		out.UserEmail[u.ID] = u.Email
		out.UserRows = append(out.UserRows, userRow{UserJSON: userJSON(u.User, u.SliceID), Self: u.ID == self})
	}

	slices, err := a.d.Store.Slices(ctx)
	if err != nil {
		return nil, slicehub.Wrap(op, slicehub.KindInternal, err)
	}
	counts := map[slicehub.SliceState]int{}
	for _, sl := range slices {
		counts[sl.State]++
	}
	for _, st := range slicehub.States {
		out.States = append(out.States, stateCount{State: st, N: counts[st]})
		out.Total += counts[st]
	}
	out.Pool = PoolJSON{MinWarm: a.d.Pool.MinWarm(), Warm: counts[slicehub.StateWarm],
		Starting: counts[slicehub.StateProvisioning], MaxSlices: a.d.Pool.MaxSlices(), Paused: a.d.Pool.Paused()}

	if capa, err := a.d.Pool.Capacity(ctx); err != nil {
		out.CapacityError = slicehub.MessageOf(err)
	} else {
		out.Capacity = &capa
		for _, n := range capa.PerNode {
			out.Nodes = append(out.Nodes, nodeRow{NodeCapacity: n})
		}
	}

	var samples map[int64]SliceSample
	since := out.At.Add(-seriesSpan)
	if t := a.d.Telemetry; t != nil {
		if out.Alerts, err = t.ActiveAlerts(ctx); err != nil {
			out.AlertsError = slicehub.MessageOf(err)
		}
		if samples, err = t.LatestSlices(ctx); err != nil {
			a.log.Warn("dashboard without slice telemetry", "err", err)
		}
		for _, s := range samples {
			out.Contacts += s.Contacts
			out.Notes += s.Notes
		}
		if nodes, err := t.NodeSeries(ctx, since); err == nil {
			for i := range out.Nodes {
				n := &out.Nodes[i]
				n.MemSeries, n.CPUSeries = nodes[n.ID].MemoryMB, nodes[n.ID].CPUPercent
			}
		}
	}

	// Newest slices first: the ones an operator is most likely to be
	// looking for; retired ones last, they are history.
	sort.SliceStable(slices, func(i, j int) bool {
		ri, rj := slices[i].State == slicehub.StateRetired, slices[j].State == slicehub.StateRetired
		if ri != rj {
			return rj
		}
		return slices[i].ID > slices[j].ID
	})
	retired := 0
	for i, sl := range slices {
		// Retired slices are history and only grow: the newest few are
		// enough to see what just happened; the API lists them all.
		if sl.State == slicehub.StateRetired {
			if retired++; retired > retiredShown {
				out.HiddenRetired++
				continue
			}
		}
		row := d.sliceRow(sl, out.UserEmail)
		if s, ok := samples[sl.ID]; ok {
			row.Sample = &s
			row.MemoryNear = s.MemoryMaxMB > 0 && s.MemoryMB >= 0.9*s.MemoryMaxMB
		}
		if t := a.d.Telemetry; t != nil && i < sparkSlices && sl.State != slicehub.StateRetired {
			if ser, err := t.SliceSeries(ctx, sl.ID, since); err == nil {
				row.MemSeries, row.CPUSeries = ser.MemoryMB, ser.CPUPercent
			}
		}
		out.Slices = append(out.Slices, row)
	}

	if a.d.Events != nil {
		if out.Audit, err = a.d.Events.RecentSliceEvents(ctx, auditLimit); err != nil {
			out.AuditErr = slicehub.MessageOf(err)
		}
	}
	return out, nil
}

func (d *dashboard) sliceRow(sl slicehub.Slice, emails map[int64]string) sliceRow {
	row := sliceRow{SliceJSON: d.a.sliceJSON(sl), Email: emails[sl.UserID]}
	if rt, ok := d.a.d.Routes.Lookup(sl.ID); ok {
		row.AllocID, row.Addr = rt.AllocID, rt.Addr
	}
	row.NomadURL, row.ConsulURL = d.links(row.JobID, row.AllocID)
	return row
}

// links are the slice's pages in the Nomad and Consul UIs: its allocation
// when it has a running one, otherwise its dispatched job; and the slice
// service's instances, where its health checks are.
func (d *dashboard) links(jobID, allocID string) (nomad, consul string) {
	if base := strings.TrimSuffix(d.a.d.NomadURL, "/"); base != "" {
		switch {
		case allocID != "":
			nomad = base + "/ui/allocations/" + url.PathEscape(allocID)
		case jobID != "":
			nomad = base + "/ui/jobs/" + url.PathEscape(jobID)
		}
	}
	if base := strings.TrimSuffix(d.a.d.ConsulURL, "/"); base != "" {
		dc := d.a.d.ConsulDC
		if dc == "" {
			dc = "dc1"
		}
		consul = base + "/ui/" + url.PathEscape(dc) + "/services/" + slicehub.ConsulService + "/instances"
	}
	return nomad, consul
}

// One slice: its page.

type slicePageData struct {
	Title, CSRF, Error, Notice string
	Slice                      sliceRow
	Events                     []slicehub.SliceEvent
	Progress                   *slicehub.SliceProgress
	WhatsApp                   string
	WhatsAppError              string
	QRSeq                      string
	Telemetry                  bool
	// Actions are the forms of the actions panel (slicehub.AdminActions);
	// NoteMax bounds a note's input.
	Actions []slicehub.AdminActionSpec
	NoteMax int
}

func (d *dashboard) slicePage(c *fiber.Ctx) error {
	return d.renderSlice(c, http.StatusOK, "", doneNotice(c.Query("done")))
}

func (d *dashboard) renderSlice(c *fiber.Ctx, status int, errMsg, notice string) error {
	const op = "admin.slice_page"
	id, err := parseID(op, c, "slice")
	if err != nil {
		return err
	}
	ctx, cancel := d.a.ctx(c)
	defer cancel()
	sl, err := d.a.d.Store.Slice(ctx, id)
	if err != nil {
		return slicehub.Wrap(op, slicehub.KindInternal, err)
	}
	emails := map[int64]string{}
	if sl.UserID != 0 {
		if u, err := d.a.d.Store.UserByID(ctx, sl.UserID); err == nil {
			emails[u.ID] = u.Email
		}
	}
	data := &slicePageData{Title: "Slice " + strconv.FormatInt(id, 10), CSRF: d.web.CSRFToken(c), Error: errMsg, Notice: notice,
		Actions: slicehub.AdminActions, NoteMax: slicehub.MaxNoteLen,
		Slice: d.sliceRow(sl, emails), Telemetry: d.a.d.Telemetry != nil}
	if data.Events, err = d.a.d.Store.SliceEvents(ctx, id); err != nil {
		return slicehub.Wrap(op, slicehub.KindInternal, err)
	}
	// Newest first, as in the audit log.
	for i, j := 0, len(data.Events)-1; i < j; i, j = i+1, j-1 {
		data.Events[i], data.Events[j] = data.Events[j], data.Events[i]
	}
	if sl.UserID != 0 {
		if p, err := d.a.d.Pool.Progress(ctx, sl.UserID); err == nil && p.SliceID == id {
			data.Progress = &p
		}
	}
	if t := d.a.d.Telemetry; t != nil {
		since := time.Now().Add(-seriesSpan)
		if ser, err := t.SliceSeries(ctx, id, since); err == nil {
			data.Slice.MemSeries, data.Slice.CPUSeries = ser.MemoryMB, ser.CPUPercent
		}
		if all, err := t.LatestSlices(ctx); err == nil {
			if s, ok := all[id]; ok {
				data.Slice.Sample = &s
			}
		}
	}
	// A suspended, failed or retired slice may still pass its check for a
	// moment while it stops; it is not asked.
	addr := data.Slice.Addr
	if !sl.State.Runs() {
		addr = ""
	}
	if addr != "" {
		data.WhatsApp, err = d.whatsAppState(ctx, id, addr)
		if err != nil {
			data.WhatsAppError = slicehub.MessageOf(err)
		}
		if data.WhatsApp == slicehub.WAQR {
			// The seq only makes each code a new URL for the browser.
			data.QRSeq = strconv.FormatInt(time.Now().UnixNano(), 36)
		}
	}
	return d.render(c, status, "slice", data)
}
