package admin

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"io/fs"
	"mime"
	"net/http"
	"net/url"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/gofiber/fiber/v2"

	"github.com/slicehub/slicehub"
)

// The admin dashboard: HTML pages under /admin for one person running the
// platform. They are server-rendered from the same data functions as the
// JSON API, and every action posts a CSRF-protected form to a handler that
// calls the same code as its JSON twin (runSliceAction, runDisableUser),
// so the two cannot drift apart in what they check or audit.
//
//	GET  /admin                      the dashboard
//	GET  /admin/events               SSE: the live panels, re-rendered
//	GET  /admin/slices/:id           one slice: WhatsApp state, QR, events, actions
//	GET  /admin/slices/:id/qr.png    the slice's current QR code, fetched server-side
//	POST /admin/slices/:id/:action   suspend, resume, restart, retire, reassign
//	POST /admin/users/:id/disable    disable an account
//	POST /admin/pool/:action         pause, resume, scale (min_warm)
//	GET  /admin/static/:name         the dashboard's stylesheet and script
//
// Charts are inline SVG drawn by the templates' funcs: no script library,
// and nothing to vendor. The live panels are one fragment ("live") that
// /admin/events pushes as HTML whenever it changes; a dozen lines of
// script swap it in. Forms sit outside that fragment, so a live update
// never wipes what an admin is typing.

// Web is what the dashboard needs from the gateway for its forms: the
// double-submit CSRF token (*gateway.Server).
type Web interface {
	CSRFToken(c *fiber.Ctx) string
	VerifyCSRF(c *fiber.Ctx) error
}

// Tokens gives the gateway token of a slice (*scheduler.Scheduler), with
// which the dashboard reads a slice's WhatsApp state and QR code as the
// gateway, not as the slice's user.
type Tokens interface {
	GatewayToken(ctx context.Context, sliceID int64) (string, error)
}

// EventLog lists the newest slice_events of every slice, newest first: the
// audit log panel.
type EventLog interface {
	RecentSliceEvents(ctx context.Context, limit int) ([]slicehub.SliceEvent, error)
}

//go:embed templates/*.html static/*
var dashFS embed.FS

// dashCSP is the gateway pages' policy: our own files only, no inline
// script or style (inline SVG is markup, not style, and passes), forms and
// connections only to ourselves.
const dashCSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// Limits of what one render shows and asks for.
const (
	auditLimit = 50
	// sparkSlices bounds the slices whose series one render fetches: each
	// is a query, and the grid re-renders every few seconds.
	sparkSlices = 40
	seriesSpan  = 24 * time.Hour
	// retiredShown bounds the retired slices in the grid.
	retiredShown = 20
	maxQRBytes   = 1 << 20
)

type dashboard struct {
	a      *API
	web    Web
	tmpl   map[string]*template.Template
	static map[string]staticFile
	client *http.Client
}

type staticFile struct {
	body  []byte
	ctype string
	hash  string
}

func registerDashboard(router fiber.Router, a *API) {
	d := &dashboard{a: a, web: a.d.Web, tmpl: map[string]*template.Template{}, static: map[string]staticFile{},
		client: &http.Client{Timeout: 5 * time.Second}}
	statics, _ := fs.Glob(dashFS, "static/*")
	for _, f := range statics {
		b, _ := dashFS.ReadFile(f)
		sum := sha256.Sum256(b)
		ctype := mime.TypeByExtension(path.Ext(f))
		if ctype == "" {
			ctype = "application/octet-stream"
		}
		d.static[path.Base(f)] = staticFile{body: b, ctype: ctype, hash: hex.EncodeToString(sum[:6])}
	}
	funcs := template.FuncMap{
		"asset": d.assetURL, "spark": spark, "last": last, "bar": bar, "ago": ago, "mb": mb, "pct": pct,
		"stamp": func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05") },
	}
	for _, name := range []string{"dashboard", "slice"} {
		d.tmpl[name] = template.Must(template.New(name).Funcs(funcs).ParseFS(dashFS, "templates/layout.html", "templates/"+name+".html"))
	}

	// "/admin" and "/admin/": the gateway's routing is strict.
	router.Get("", d.page)
	router.Get("/", d.page)
	router.Get("/events", d.events)
	router.Get("/static/:name", d.staticFile)
	router.Get("/slices/:id", d.slicePage)
	router.Get("/slices/:id/qr.png", d.qr)
	router.Post("/slices/:id/:action", d.sliceForm)
	router.Post("/users/:id/disable", d.disableForm)
	router.Post("/pool/:action", d.poolForm)
}

func (d *dashboard) assetURL(name string) (string, error) {
	f, ok := d.static[name]
	if !ok {
		return "", fmt.Errorf("no static file %q", name)
	}
	return "/admin/static/" + name + "?v=" + f.hash, nil
}

func (d *dashboard) staticFile(c *fiber.Ctx) error {
	f, ok := d.static[c.Params("name")]
	if !ok {
		return fiber.ErrNotFound
	}
	// The URL carries the content hash, so a matching one never changes.
	// Private: the files sit behind the admin guard.
	if c.Query("v") == f.hash {
		c.Set(fiber.HeaderCacheControl, "private, max-age=31536000, immutable")
	} else {
		c.Set(fiber.HeaderCacheControl, "no-cache")
	}
	c.Set(fiber.HeaderXContentTypeOptions, "nosniff")
	c.Set(fiber.HeaderContentType, f.ctype)
	return c.Send(f.body)
}

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

func (d *dashboard) self(c *fiber.Ctx) int64 {
	id, _ := c.Locals(d.a.d.UserKey).(int64)
	return id
}

func (d *dashboard) render(c *fiber.Ctx, status int, name string, data any) error {
	var buf bytes.Buffer
	if err := d.tmpl[name].ExecuteTemplate(&buf, "layout", data); err != nil {
		return slicehub.Wrap("admin.page", slicehub.KindInternal, err)
	}
	setPageHeaders(c)
	return c.Status(status).Send(buf.Bytes())
}

func setPageHeaders(c *fiber.Ctx) {
	c.Set(fiber.HeaderCacheControl, "no-store")
	c.Set(fiber.HeaderContentSecurityPolicy, dashCSP)
	c.Set(fiber.HeaderXContentTypeOptions, "nosniff")
	c.Set(fiber.HeaderXFrameOptions, "DENY")
	c.Set(fiber.HeaderReferrerPolicy, "same-origin")
	c.Set(fiber.HeaderContentType, fiber.MIMETextHTMLCharsetUTF8)
}

func (d *dashboard) page(c *fiber.Ctx) error {
	return d.renderDashboard(c, http.StatusOK, "", doneNotice(c.Query("done")))
}

func (d *dashboard) renderDashboard(c *fiber.Ctx, status int, errMsg, notice string) error {
	ctx, cancel := d.a.ctx(c)
	defer cancel()
	data, err := d.snapshot(ctx, d.self(c))
	if err != nil {
		return err
	}
	data.Title, data.CSRF, data.Error, data.Notice = "Admin", d.web.CSRFToken(c), errMsg, notice
	return d.render(c, status, "dashboard", data)
}

// doneNotice is the notice after an action: a slice action's from its
// row, the others' here.
func doneNotice(done string) string {
	if act, ok := slicehub.LookupAdminAction(done); ok {
		return act.Done
	}
	switch done {
	case "disable":
		return "The account is disabled; its sessions have ended."
	case "pause":
		return "The warm pool is paused: no slice is started for it."
	case "unpause":
		return "The warm pool is running again."
	case "scale":
		return "The warm pool's target is set."
	}
	return ""
}

// Live updates.

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

// One slice.

type slicePageData struct {
	Title, CSRF, Error, Notice string
	Slice                      sliceRow
	Events                     []slicehub.SliceEvent
	Progress                   *slicehub.SliceProgress
	WhatsApp                   string
	WhatsAppError              string
	QRSeq                      string
	Telemetry                  bool
	// Actions are the forms of the actions panel (slicehub.AdminActions).
	Actions []slicehub.AdminActionSpec
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
		Actions: slicehub.AdminActions,
		Slice:   d.sliceRow(sl, emails), Telemetry: d.a.d.Telemetry != nil}
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
	switch sl.State {
	case slicehub.StateAssigned, slicehub.StateWarm, slicehub.StateProvisioning:
	default:
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

// sliceGet asks a slice, as the gateway: its gateway token and no user id,
// so the slice serves its status endpoints without anyone acting as the
// user (the slice's own API would see no X-Slicehub-User-Id).
func (d *dashboard) sliceGet(ctx context.Context, sliceID int64, addr, path string, limit int64) (*http.Response, []byte, error) {
	const op = "admin.slice_get"
	if d.a.d.Tokens == nil {
		return nil, nil, slicehub.Errorf(op, slicehub.KindUnavailable, "no_tokens", "this dashboard cannot reach slices")
	}
	tok, err := d.a.d.Tokens.GatewayToken(ctx, sliceID)
	if err != nil {
		return nil, nil, slicehub.Wrap(op, slicehub.KindInternal, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+path, nil)
	if err != nil {
		return nil, nil, slicehub.Wrap(op, slicehub.KindInternal, err)
	}
	req.Header.Set(slicehub.HeaderGatewayToken, tok)
	resp, err := d.client.Do(req)
	if err != nil {
		return nil, nil, slicehub.Errorf(op, slicehub.KindBadGateway, "slice_unreachable", "the slice did not answer")
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil || int64(len(body)) > limit {
		return nil, nil, slicehub.Errorf(op, slicehub.KindBadGateway, "slice_answer", "the slice's answer was cut short or too large")
	}
	return resp, body, nil
}

func (d *dashboard) whatsAppState(ctx context.Context, id int64, addr string) (string, error) {
	resp, body, err := d.sliceGet(ctx, id, addr, "/api/status/state", 4<<10)
	if err != nil {
		return "", err
	}
	var v struct {
		State string `json:"state"`
	}
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &v) != nil || v.State == "" {
		return "", slicehub.Errorf("admin.whatsapp_state", slicehub.KindBadGateway, "slice_answer",
			"the slice answered %d", resp.StatusCode)
	}
	return v.State, nil
}

// qr relays the slice's current QR code. Viewing it is audited: whoever
// scans it links a phone to the customer's workspace.
func (d *dashboard) qr(c *fiber.Ctx) error {
	const op = "admin.qr"
	id, err := parseID(op, c, "slice")
	if err != nil {
		return err
	}
	rt, ok := d.a.d.Routes.Lookup(id)
	if !ok || rt.Addr == "" {
		return slicehub.Errorf(op, slicehub.KindNotFound, "slice_offline", "the slice is not running")
	}
	ctx, cancel := d.a.ctx(c)
	defer cancel()
	resp, body, err := d.sliceGet(ctx, id, rt.Addr, "/api/status/qr", maxQRBytes)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "image/png") {
		return slicehub.Errorf(op, slicehub.KindNotFound, "no_qr", "the slice shows no QR code now")
	}
	d.a.audit(c, "admin action", "action", "view_qr", "slice_id", id)
	c.Set(fiber.HeaderCacheControl, "no-store")
	c.Set(fiber.HeaderXContentTypeOptions, "nosniff")
	c.Set(fiber.HeaderContentType, "image/png")
	return c.Send(body)
}

// Forms.

// formBody reads an action form into the JSON API's body: "confirm",
// "user_id" and "note" are the same fields under the same names.
func formBody(c *fiber.Ctx) (actionBody, error) {
	in := actionBody{Confirm: strings.Clone(c.FormValue("confirm")), Note: strings.Clone(c.FormValue("note"))}
	if v := strings.TrimSpace(c.FormValue("user_id")); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n <= 0 {
			return in, slicehub.Errorf("admin.form", slicehub.KindInvalid, "invalid_user", "the user id must be a positive integer")
		}
		in.UserID = n
	}
	return in, nil
}

func (d *dashboard) sliceForm(c *fiber.Ctx) error {
	op := "admin.slice_form"
	id, err := parseID(op, c, "slice")
	if err != nil {
		return err
	}
	action := c.Params("action")
	act, ok := slicehub.LookupAdminAction(action)
	if !ok {
		return fiber.ErrNotFound
	}
	if len(c.Body()) > bodyLimit {
		return slicehub.Errorf(op, slicehub.KindTooLarge, "too_large", "the form is too large")
	}
	if err := d.web.VerifyCSRF(c); err != nil {
		return d.renderSlice(c, slicehub.KindOf(err).HTTPStatus(), sentence(err), "")
	}
	in, err := formBody(c)
	if err == nil {
		ctx, cancel := d.a.ctx(c)
		_, err = d.a.runSliceAction(ctx, c, act, id, in)
		cancel()
	}
	if err != nil {
		if slicehub.CodeOf(err) == "confirmation_required" {
			err = slicehub.Errorf(op, slicehub.KindInvalid, "confirmation_required",
				"this cannot be undone: type the slice id %d to confirm", id)
		}
		return d.renderSlice(c, slicehub.KindOf(err).HTTPStatus(), sentence(err), "")
	}
	c.Set(fiber.HeaderCacheControl, "no-store")
	return c.Redirect("/admin/slices/"+strconv.FormatInt(id, 10)+"?done="+string(act.Name), http.StatusSeeOther)
}

func (d *dashboard) disableForm(c *fiber.Ctx) error {
	const op = "admin.disable_form"
	id, err := parseID(op, c, "user")
	if err != nil {
		return err
	}
	if len(c.Body()) > bodyLimit {
		return slicehub.Errorf(op, slicehub.KindTooLarge, "too_large", "the form is too large")
	}
	if err := d.web.VerifyCSRF(c); err != nil {
		return d.renderDashboard(c, slicehub.KindOf(err).HTTPStatus(), sentence(err), "")
	}
	in, _ := formBody(c)
	ctx, cancel := d.a.ctx(c)
	_, err = d.a.runDisableUser(ctx, c, id, in)
	cancel()
	if err != nil {
		if slicehub.CodeOf(err) == "confirmation_required" {
			err = slicehub.Errorf(op, slicehub.KindInvalid, "confirmation_required",
				"this cannot be undone: type the user id %d to confirm", id)
		}
		return d.renderDashboard(c, slicehub.KindOf(err).HTTPStatus(), sentence(err), "")
	}
	c.Set(fiber.HeaderCacheControl, "no-store")
	return c.Redirect("/admin?done=disable#users", http.StatusSeeOther)
}

func (d *dashboard) poolForm(c *fiber.Ctx) error {
	const op = "admin.pool_form"
	if len(c.Body()) > bodyLimit {
		return slicehub.Errorf(op, slicehub.KindTooLarge, "too_large", "the form is too large")
	}
	if err := d.web.VerifyCSRF(c); err != nil {
		return d.renderDashboard(c, slicehub.KindOf(err).HTTPStatus(), sentence(err), "")
	}
	done := ""
	switch c.Params("action") {
	case "pause", "resume":
		ctx, cancel := d.a.ctx(c)
		defer cancel()
		if err := d.a.runSetPaused(ctx, c, c.Params("action") == "pause"); err != nil {
			return d.renderDashboard(c, slicehub.KindOf(err).HTTPStatus(), sentence(err), "")
		}
		done = map[string]string{"pause": "pause", "resume": "unpause"}[c.Params("action")]
	case "scale":
		n, err := strconv.Atoi(strings.TrimSpace(c.FormValue("min_warm")))
		if err != nil {
			return d.renderDashboard(c, http.StatusBadRequest, "The target must be a whole number.", "")
		}
		if err := d.a.runScale(c, actionBody{MinWarm: &n}); err != nil {
			return d.renderDashboard(c, slicehub.KindOf(err).HTTPStatus(), sentence(err), "")
		}
		done = "scale"
	default:
		return fiber.ErrNotFound
	}
	c.Set(fiber.HeaderCacheControl, "no-store")
	return c.Redirect("/admin?done="+done+"#pool", http.StatusSeeOther)
}

// sentence is an error's message for a page: capitalised, with a full stop.
func sentence(err error) string {
	msg := slicehub.MessageOf(err)
	if msg == "" {
		return "Something went wrong."
	}
	r, n := utf8.DecodeRuneInString(msg)
	msg = string(unicode.ToUpper(r)) + msg[n:]
	if !strings.HasSuffix(msg, ".") {
		msg += "."
	}
	return msg
}

// Template funcs: numbers and inline SVG.

// spark draws a series as an SVG polyline scaled to its own range. It
// returns nothing for fewer than two points: a line needs two.
func spark(points []Point, label string) template.HTML {
	const w, h = 120.0, 28.0
	if len(points) < 2 {
		return ""
	}
	points = downsample(points, int(w))
	lo, hi := points[0].Value, points[0].Value
	t0, t1 := points[0].At, points[len(points)-1].At
	for _, p := range points {
		lo, hi = min(lo, p.Value), max(hi, p.Value)
	}
	span := t1.Sub(t0).Seconds()
	var b strings.Builder
	for i, p := range points {
		x := w * float64(i) / float64(len(points)-1)
		if span > 0 {
			x = w * p.At.Sub(t0).Seconds() / span
		}
		y := h / 2
		if hi > lo {
			y = h - 2 - (h-4)*(p.Value-lo)/(hi-lo)
		}
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%.1f,%.1f", x, y)
	}
	last := points[len(points)-1].Value
	return template.HTML(fmt.Sprintf(`<svg class="spark" viewBox="0 0 %.0f %.0f" width="%.0f" height="%.0f" role="img" aria-label="%s">`+
		`<title>%s: %.1f (min %.1f, max %.1f)</title>`+
		`<polyline fill="none" stroke="currentColor" stroke-width="1.5" points="%s"/></svg>`,
		w, h, w, h, template.HTMLEscapeString(label), template.HTMLEscapeString(label), last, lo, hi, b.String()))
}

// downsample averages a long series into n buckets: a sparkline has no
// more pixels than that, and a day of minutely samples is 1440 points.
func downsample(points []Point, n int) []Point {
	if len(points) <= n {
		return points
	}
	out := make([]Point, 0, n)
	for i := range n {
		lo, hi := i*len(points)/n, (i+1)*len(points)/n
		sum := 0.0
		for _, p := range points[lo:hi] {
			sum += p.Value
		}
		out = append(out, Point{At: points[hi-1].At, Value: sum / float64(hi-lo)})
	}
	return out
}

// bar draws used out of total as an SVG bar; over 90% it turns red.
func bar(used, total int64) template.HTML {
	const w, h = 240.0, 14.0
	frac := 0.0
	if total > 0 {
		frac = min(1, max(0, float64(used)/float64(total)))
	}
	class := "ok"
	switch {
	case frac >= 0.9:
		class = "crit"
	case frac >= 0.75:
		class = "warn"
	}
	return template.HTML(fmt.Sprintf(`<svg class="bar %s" viewBox="0 0 %.0f %.0f" width="%.0f" height="%.0f" role="img" aria-label="%.0f%%">`+
		`<rect class="track" width="%.0f" height="%.0f" rx="3"/><rect class="fill" width="%.1f" height="%.0f" rx="3"/></svg>`,
		class, w, h, w, h, frac*100, w, h, frac*w, h))
}

// last is a series' newest value, what a chart's label shows.
func last(points []Point) float64 {
	if len(points) == 0 {
		return 0
	}
	return points[len(points)-1].Value
}

func pct(used, total int64) string {
	if total <= 0 {
		return "–"
	}
	return strconv.FormatFloat(100*float64(used)/float64(total), 'f', 0, 64) + "%"
}

func mb(v float64) string {
	if v >= 1024 {
		return strconv.FormatFloat(v/1024, 'f', 1, 64) + " GiB"
	}
	return strconv.FormatFloat(v, 'f', 0, 64) + " MiB"
}

// ago is a time as "3m ago"; the exact time is in the element's title.
func ago(t time.Time) string {
	if t.IsZero() {
		return "–"
	}
	d := time.Since(t)
	switch {
	case d < time.Minute:
		return "just now"
	case d < time.Hour:
		return strconv.Itoa(int(d/time.Minute)) + "m ago"
	case d < 48*time.Hour:
		return strconv.Itoa(int(d/time.Hour)) + "h ago"
	}
	return strconv.Itoa(int(d/(24*time.Hour))) + "d ago"
}
