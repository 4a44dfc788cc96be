package admin

import (
	"bytes"
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"html/template"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/slicehub/slicehub"
	"github.com/slicehub/slicehub/sliceclient"
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
//	POST /admin/slices/:id/:action   each of slicehub.AdminActions
//	POST /admin/users/:id/disable    disable an account
//	POST /admin/pool/:action         pause, resume, scale (min_warm)
//	GET  /admin/static/:name         the dashboard's stylesheet and script
//
// By job: this file registers the routes, serves the static files and
// renders pages; dashboard_snapshot.go gathers what a page shows,
// dashboard_live.go pushes the live panels, dashboard_sliceclient.go asks
// a slice for its WhatsApp state and QR code, dashboard_forms.go handles
// the actions' forms, and dashboard_svg.go draws.
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
)

type dashboard struct {
	a      *API
	web    Web
	tmpl   map[string]*template.Template
	static map[string]staticFile
	slices sliceclient.Client
}

type staticFile struct {
	body  []byte
	ctype string
	hash  string
}

func registerDashboard(router fiber.Router, a *API) {
	d := &dashboard{a: a, web: a.d.Web, tmpl: map[string]*template.Template{}, static: map[string]staticFile{},
		slices: sliceclient.Client{Timeout: 5 * time.Second}}
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
