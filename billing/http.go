package billing

import (
	"bytes"
	"context"
	"embed"
	"html/template"
	"net/http"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/slicehub/slicehub"
)

// Web is what the billing pages need from the gateway: who is signed in,
// and the double-submit CSRF token of its HTML forms. *gateway.Server
// provides CSRFToken and VerifyCSRF; User must return KindUnauthorized
// when there is no valid session.
type Web interface {
	User(c *fiber.Ctx) (slicehub.User, error)
	CSRFToken(c *fiber.Ctx) string
	VerifyCSRF(c *fiber.Ctx) error
}

// webhookBodyLimit bounds a Stripe event; real ones are a few KiB.
const webhookBodyLimit = 1 << 20

// pageCSP allows our stylesheet and forms that post to us. Stripe's two
// hosts are listed because browsers apply form-action to the redirect
// that follows a form post (Checkout and the Portal).
const pageCSP = "default-src 'none'; style-src 'self'; img-src 'self'; " +
	"form-action 'self' https://checkout.stripe.com https://billing.stripe.com; frame-ancestors 'none'; base-uri 'none'"

//go:embed templates/billing.html
var templateFS embed.FS

var page = template.Must(template.New("billing.html").Funcs(template.FuncMap{
	"money": money,
	"date":  func(t time.Time) string { return t.UTC().Format("2 January 2006") },
	"status": func(e string) string {
		return map[string]string{
			"none": "Not subscribed", "active": "Active", "grace": "Payment failed (grace period)",
			"ending": "Active until the end of the period", "suspended": "Suspended", "retired": "Closed",
			"complimentary": "Complimentary",
		}[e]
	},
}).ParseFS(templateFS, "templates/billing.html"))

type handlers struct {
	s   *Service
	web Web
}

// Register adds billing's routes to r, the gateway's root router:
//
//	GET  /billing              the billing page (HTML)
//	POST /billing/checkout     form: to Stripe Checkout (303)
//	POST /billing/portal       form: to the Customer Portal (303)
//	GET  /billing/export       the newest data export, or ?id=N (owner only)
//	POST /billing/webhook      Stripe's webhook (signature checked, no session)
//	GET  /billing/api/status   the page's data as JSON
//	GET  /billing/api/invoices
//	GET  /billing/api/exports
//	POST /billing/api/checkout JSON {"url"}
//	POST /billing/api/portal   JSON {"url"}
//
// Errors are returned to Fiber's error handler (the gateway's, which
// writes {"error","code"}).
func Register(r fiber.Router, s *Service, web Web) {
	h := &handlers{s: s, web: web}
	r.Get("/billing", h.page)
	r.Post("/billing/checkout", h.checkoutForm)
	r.Post("/billing/portal", h.portalForm)
	r.Get("/billing/export", h.export)
	r.Post("/billing/webhook", h.webhook)
	r.Get("/billing/api/status", h.apiStatus)
	r.Get("/billing/api/invoices", h.apiInvoices)
	r.Get("/billing/api/exports", h.apiExports)
	r.Post("/billing/api/checkout", h.apiCheckout)
	r.Post("/billing/api/portal", h.apiPortal)
}

// RegisterAdmin adds the admin's billing routes to admin, the gateway's
// /admin router (which lets only admins through and leaves the admin's
// user id in c.Locals(userIDKey)):
//
//	POST /admin/api/billing/complimentary  {"user_id","complimentary","reason"}
//	GET  /admin/api/billing/users/:id      status and audit log
func RegisterAdmin(admin fiber.Router, s *Service, userIDKey string) {
	actor := func(c *fiber.Ctx) string {
		id, _ := c.Locals(userIDKey).(int64)
		return "admin:" + strconv.FormatInt(id, 10)
	}
	admin.Post("/api/billing/complimentary", func(c *fiber.Ctx) error {
		const op = "billing.admin.complimentary"
		if err := requireJSON(c); err != nil {
			return err
		}
		var in struct {
			UserID        int64  `json:"user_id"`
			Complimentary *bool  `json:"complimentary"`
			Reason        string `json:"reason"`
		}
		if err := c.BodyParser(&in); err != nil || in.UserID <= 0 || in.Complimentary == nil || len(in.Reason) > 500 {
			return slicehub.Errorf(op, slicehub.KindInvalid, "invalid_request", `want {"user_id": N, "complimentary": true|false, "reason": "..."}`)
		}
		ctx, cancel := context.WithTimeout(c.UserContext(), 30*time.Second)
		defer cancel()
		st, err := s.SetComplimentary(ctx, in.UserID, *in.Complimentary, strings.TrimSpace(in.Reason), actor(c))
		if err != nil {
			return err
		}
		return noStore(c).JSON(st)
	})
	admin.Get("/api/billing/users/:id", func(c *fiber.Ctx) error {
		const op = "billing.admin.user"
		id, err := strconv.ParseInt(c.Params("id"), 10, 64)
		if err != nil || id <= 0 {
			return slicehub.Errorf(op, slicehub.KindInvalid, "invalid_user", "a user id is required")
		}
		st, err := s.Status(c.UserContext(), slicehub.User{ID: id})
		if err != nil {
			return err
		}
		audit, err := s.db.BillingAuditOf(c.UserContext(), id)
		if err != nil {
			return err
		}
		type line struct {
			At      time.Time `json:"at"`
			Actor   string    `json:"actor"`
			Action  string    `json:"action"`
			EventID string    `json:"event_id,omitempty"`
			Detail  string    `json:"detail"`
		}
		lines := make([]line, 0, len(audit))
		for _, a := range audit {
			lines = append(lines, line{At: a.At, Actor: a.Actor, Action: a.Action, EventID: a.EventID, Detail: a.Detail})
		}
		return noStore(c).JSON(fiber.Map{"status": st, "audit": lines})
	})
}

func noStore(c *fiber.Ctx) *fiber.Ctx {
	c.Set(fiber.HeaderCacheControl, "no-store")
	return c
}

func (h *handlers) webhook(c *fiber.Ctx) error {
	const op = "billing.webhook"
	// The raw bytes as received: the signature covers them exactly.
	body := c.Request().Body()
	if len(body) > webhookBodyLimit {
		return slicehub.Errorf(op, slicehub.KindTooLarge, "too_large", "the event is too large")
	}
	ctx, cancel := context.WithTimeout(c.UserContext(), 30*time.Second)
	defer cancel()
	res, err := h.s.HandleWebhook(ctx, body, c.Get("Stripe-Signature"))
	if err != nil {
		return err
	}
	return noStore(c).JSON(res)
}

type pageData struct {
	CSRF                string
	Email               string
	Status              Status
	Invoices            []Invoice
	InvoicesUnavailable bool
	Exports             []Export
	Notice, Error       string
}

func (h *handlers) page(c *fiber.Ctx) error {
	user, err := h.web.User(c)
	if slicehub.KindOf(err) == slicehub.KindUnauthorized {
		return noStore(c).Redirect("/login", http.StatusSeeOther)
	}
	if err != nil {
		return err
	}
	d := &pageData{}
	switch c.Query("checkout") {
	case "done":
		d.Notice = "Thank you! Your subscription is being set up; this page shows it as soon as Stripe confirms."
		if id := c.Query("session_id"); strings.HasPrefix(id, "cs_") {
			if err := h.s.SyncCheckout(c.UserContext(), user, id); err != nil {
				h.s.log.Warn("could not sync a completed checkout; the webhook will", "user_id", user.ID, "err", err)
			} else {
				d.Notice = "Thank you! Your subscription is active."
			}
		}
	case "canceled":
		d.Notice = "Checkout was canceled; nothing was charged."
	}
	return h.render(c, http.StatusOK, user, d)
}

func (h *handlers) render(c *fiber.Ctx, status int, user slicehub.User, d *pageData) error {
	ctx := c.UserContext()
	st, err := h.s.Status(ctx, user)
	if err != nil {
		return err
	}
	d.Status, d.Email, d.CSRF = st, user.Email, h.web.CSRFToken(c)
	if d.Invoices, err = h.s.Invoices(ctx, user); err != nil {
		// The page still shows the status: Stripe being slow must not
		// hide whether the workspace runs.
		h.s.log.Warn("invoices unavailable", "user_id", user.ID, "err", err)
		d.InvoicesUnavailable = true
	}
	if d.Exports, err = h.s.Exports(ctx, user); err != nil {
		return err
	}
	var buf bytes.Buffer
	if err := page.Execute(&buf, d); err != nil {
		return slicehub.Wrap("billing.page", slicehub.KindInternal, err)
	}
	c.Set(fiber.HeaderCacheControl, "no-store")
	c.Set(fiber.HeaderContentSecurityPolicy, pageCSP)
	c.Set(fiber.HeaderXContentTypeOptions, "nosniff")
	c.Set(fiber.HeaderXFrameOptions, "DENY")
	c.Set(fiber.HeaderReferrerPolicy, "same-origin")
	c.Set(fiber.HeaderContentType, fiber.MIMETextHTMLCharsetUTF8)
	return c.Status(status).Send(buf.Bytes())
}

// formUser authenticates an HTML form post and checks its CSRF token.
func (h *handlers) formUser(c *fiber.Ctx) (slicehub.User, error) {
	user, err := h.web.User(c)
	if err != nil {
		return user, err
	}
	return user, h.web.VerifyCSRF(c)
}

func (h *handlers) checkoutForm(c *fiber.Ctx) error {
	return h.redirectForm(c, h.s.Checkout)
}

func (h *handlers) portalForm(c *fiber.Ctx) error {
	return h.redirectForm(c, h.s.Portal)
}

// redirectForm runs a form that ends at Stripe. A refusal the user can act
// on (already subscribed) shows the page again with the reason.
func (h *handlers) redirectForm(c *fiber.Ctx, to func(context.Context, slicehub.User, string) (string, error)) error {
	user, err := h.formUser(c)
	if err != nil {
		return err
	}
	target, err := to(c.UserContext(), user, c.BaseURL())
	if err != nil {
		// A conflict or an outage the user can read on the page; any other
		// error is the error page's.
		if k := slicehub.KindOf(err); k == slicehub.KindConflict || k == slicehub.KindUnavailable {
			return h.render(c, k.HTTPStatus(), user, &pageData{Error: slicehub.MessageOf(err)})
		}
		return err
	}
	return noStore(c).Redirect(target, http.StatusSeeOther)
}

// requireJSON guards a state-changing JSON endpoint against cross-site
// requests: a cross-site form cannot send application/json, and a
// cross-site fetch that does needs a CORS preflight nobody grants. An
// Origin, when sent, must be this host.
func requireJSON(c *fiber.Ctx) error {
	const op = "billing.csrf"
	ct := c.Get(fiber.HeaderContentType)
	if i := strings.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	if !strings.EqualFold(strings.TrimSpace(ct), fiber.MIMEApplicationJSON) {
		return slicehub.Errorf(op, slicehub.KindInvalid, "json_required", "the request must have Content-Type application/json")
	}
	if o := c.Get(fiber.HeaderOrigin); o != "" {
		u, err := url.Parse(o)
		if err != nil || !strings.EqualFold(u.Host, c.Hostname()) {
			return slicehub.Errorf(op, slicehub.KindForbidden, "bad_origin", "the request origin is not allowed")
		}
	}
	return nil
}

func (h *handlers) apiUser(c *fiber.Ctx, post bool) (slicehub.User, error) {
	if post {
		if err := requireJSON(c); err != nil {
			return slicehub.User{}, err
		}
	}
	return h.web.User(c)
}

func (h *handlers) apiStatus(c *fiber.Ctx) error {
	user, err := h.apiUser(c, false)
	if err != nil {
		return err
	}
	st, err := h.s.Status(c.UserContext(), user)
	if err != nil {
		return err
	}
	return noStore(c).JSON(st)
}

func (h *handlers) apiInvoices(c *fiber.Ctx) error {
	user, err := h.apiUser(c, false)
	if err != nil {
		return err
	}
	inv, err := h.s.Invoices(c.UserContext(), user)
	if err != nil {
		return err
	}
	return noStore(c).JSON(fiber.Map{"invoices": inv})
}

func (h *handlers) apiExports(c *fiber.Ctx) error {
	user, err := h.apiUser(c, false)
	if err != nil {
		return err
	}
	ex, err := h.s.Exports(c.UserContext(), user)
	if err != nil {
		return err
	}
	return noStore(c).JSON(fiber.Map{"exports": ex})
}

func (h *handlers) apiCheckout(c *fiber.Ctx) error {
	user, err := h.apiUser(c, true)
	if err != nil {
		return err
	}
	u, err := h.s.Checkout(c.UserContext(), user, c.BaseURL())
	if err != nil {
		return err
	}
	return noStore(c).JSON(fiber.Map{"url": u})
}

func (h *handlers) apiPortal(c *fiber.Ctx) error {
	user, err := h.apiUser(c, true)
	if err != nil {
		return err
	}
	u, err := h.s.Portal(c.UserContext(), user, c.BaseURL())
	if err != nil {
		return err
	}
	return noStore(c).JSON(fiber.Map{"url": u})
}

func (h *handlers) export(c *fiber.Ctx) error {
	const op = "billing.export"
	user, err := h.web.User(c)
	if err != nil {
		return err
	}
	var id int64
	if q := c.Query("id"); q != "" {
		if id, err = strconv.ParseInt(q, 10, 64); err != nil || id <= 0 {
			return slicehub.Errorf(op, slicehub.KindInvalid, "invalid_export", "the export id is not valid")
		}
	}
	e, err := h.s.exportFile(c.UserContext(), user, id)
	if err != nil {
		return err
	}
	h.s.audit(c.UserContext(), auditLine(user.ID, "export_downloaded", filepath.Base(e.Path)))
	noStore(c)
	c.Set(fiber.HeaderXContentTypeOptions, "nosniff")
	return c.Download(e.Path, "slicehub-export-"+e.CreatedAt.UTC().Format("20060102")+".dump")
}
