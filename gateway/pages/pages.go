package pages

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/gofiber/fiber/v2"

	"github.com/slicehub/slicehub"
	"github.com/slicehub/slicehub/gateway/accounts"
	"github.com/slicehub/slicehub/gateway/wire"
	"github.com/slicehub/slicehub/password"
)

// The gateway's own pages: a landing page, sign up, log in, log out,
// password reset and "Your workspace". They are server-rendered Go
// templates with one small stylesheet and one small script (the workspace
// page's live progress), embedded in the binary: plain, fast, and usable
// before the SPA or the slice exists. Forms post to the same paths as HTML
// forms, with the double-submit CSRF token; the JSON API under /auth/ stays
// as it is for programs and the SPA.

//go:embed templates/*.html static/*
var pageFS embed.FS

// PageCSP allows nothing but our own files: no inline script or style, no
// framing, forms only to ourselves. The QR image comes from /api/ (same
// origin).
const PageCSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// pages holds the parsed templates and the static files with their
// content hashes (the ?v= of their URLs, so they can be cached for ever).
type pages struct {
	tmpl   map[string]*template.Template
	static map[string]staticFile
}

type staticFile struct {
	body  []byte
	ctype string
	hash  string
}

var (
	pagesOnce   sync.Once
	parsedPages *pages
)

// newPages parses the embedded templates once per process: they are the
// same for every Server, and a parse error is a bug caught by any test.
func newPages() *pages {
	pagesOnce.Do(func() {
		p := &pages{tmpl: map[string]*template.Template{}, static: map[string]staticFile{}}
		statics, err := fs.Glob(pageFS, "static/*")
		if err != nil {
			panic(err)
		}
		for _, f := range statics {
			b, err := pageFS.ReadFile(f)
			if err != nil {
				panic(err)
			}
			sum := sha256.Sum256(b)
			ctype := mime.TypeByExtension(path.Ext(f))
			if ctype == "" {
				ctype = "application/octet-stream"
			}
			p.static[path.Base(f)] = staticFile{body: b, ctype: ctype, hash: hex.EncodeToString(sum[:6])}
		}
		funcs := template.FuncMap{"asset": p.assetURL}
		names, err := fs.Glob(pageFS, "templates/*.html")
		if err != nil {
			panic(err)
		}
		for _, f := range names {
			name := strings.TrimSuffix(path.Base(f), ".html")
			if name == "layout" {
				continue
			}
			p.tmpl[name] = template.Must(template.New(name).Funcs(funcs).ParseFS(pageFS, "templates/layout.html", f))
		}
		parsedPages = p
	})
	return parsedPages
}

// assetURL is a static file's URL with its content hash.
// AssetURL is the URL of an embedded static file, with its content hash.
func AssetURL(name string) (string, error) { return newPages().assetURL(name) }

func (p *pages) assetURL(name string) (string, error) {
	f, ok := p.static[name]
	if !ok {
		return "", fmt.Errorf("no static file %q", name)
	}
	return "/static/" + name + "?v=" + f.hash, nil
}

// pageData is what every template gets.
type pageData struct {
	Title  string
	CSRF   string
	Error  string // a problem with what was submitted
	Notice string // a confirmation
	// Email fills the form again after an error; on pages of a signed-in
	// user it is their address.
	Email    string
	SignedIn bool
	// ResetForm: the reset token is good, show the new-password form.
	ResetForm bool
	SPA       string // the SPA's prefix when one is served
	// Billing links the billing page (plan, card, invoices) when billing
	// is on.
	Billing bool
	// DevScan offers "simulate scanning" (development platform only).
	DevScan bool
	Status  WorkspaceStatus
	// MinPassword is the password policy, shown next to the field.
	MinPassword int
}

func (s *Service) pageRoutes(app fiber.Router) {
	app.Get("/", s.landingPage)
	app.Get("/signup", s.signupPage)
	app.Post("/signup", s.signupForm)
	app.Get("/login", s.loginPage)
	app.Post("/login", s.loginForm)
	app.Post("/logout", s.logoutForm)
	app.Get("/reset", s.resetPage)
	app.Post("/reset", s.resetForm)
	app.Get("/reset/confirm", s.resetConfirmPage)
	app.Post("/reset/confirm", s.resetConfirmForm)
	app.Get("/workspace", s.workspacePage)
	app.Get("/workspace/events", s.workspaceEvents)
	if s.cfg.StandinScan {
		app.Post("/workspace/dev-scan", s.workspaceDevScan)
	}
	app.Get("/static/:name", s.staticFile)
	if s.spa != nil {
		s.spaRoutes(app)
	}
}

// render writes page name with status. Pages are personal (a CSRF token,
// an email), so nothing caches them.
func (s *Service) render(c *fiber.Ctx, status int, name string, d *pageData) error {
	t, ok := s.pages.tmpl[name]
	if !ok {
		return slicehub.Errorf("gateway.page", slicehub.KindInternal, "", "no page %q", name)
	}
	d.MinPassword = password.MinLen
	if s.spa != nil {
		d.SPA = s.cfg.SPAPrefix
	}
	var buf bytes.Buffer
	if err := t.ExecuteTemplate(&buf, "layout", d); err != nil {
		return slicehub.Wrap("gateway.page", slicehub.KindInternal, err)
	}
	setPageHeaders(c)
	c.Set(fiber.HeaderContentType, fiber.MIMETextHTMLCharsetUTF8)
	return c.Status(status).Send(buf.Bytes())
}

func setPageHeaders(c *fiber.Ctx) {
	c.Set(fiber.HeaderCacheControl, "no-store")
	c.Set(fiber.HeaderContentSecurityPolicy, PageCSP)
	c.Set(fiber.HeaderXContentTypeOptions, "nosniff")
	c.Set(fiber.HeaderXFrameOptions, "DENY")
	c.Set(fiber.HeaderReferrerPolicy, "same-origin")
}

// formValue is a form field as a string of its own. Fiber's FormValue
// points into the request buffer, which fasthttp reuses for the next
// request on the connection; a field kept beyond the handler (a throttle's
// key, the address a reset mail goes to in the background) would change
// under our feet.
func formValue(c *fiber.Ctx, key string) string { return strings.Clone(c.FormValue(key)) }

// formTooLarge refuses a form post bigger than any of ours can be, before
// anything parses it.
func (s *Service) formTooLarge(c *fiber.Ctx) bool { return len(c.Body()) > s.cfg.AuthBodyLimit }

// signedIn returns the request's session, or nil. Pages never fail on a
// bad cookie: they show the signed-out view.
func (s *Service) signedIn(c *fiber.Ctx) *accounts.Session {
	if c.Cookies(slicehub.SessionCookie) == "" {
		return nil
	}
	sess, err := s.acc.Session(c)
	if err != nil {
		return nil
	}
	return sess
}

func redirect(c *fiber.Ctx, to string) error {
	c.Set(fiber.HeaderCacheControl, "no-store")
	return c.Redirect(to, http.StatusSeeOther)
}

func (s *Service) landingPage(c *fiber.Ctx) error {
	if s.signedIn(c) != nil {
		return redirect(c, "/workspace")
	}
	return s.render(c, http.StatusOK, "landing", &pageData{Title: "Your CRM, on your WhatsApp"})
}

func (s *Service) signupPage(c *fiber.Ctx) error {
	if s.signedIn(c) != nil {
		return redirect(c, "/workspace")
	}
	return s.render(c, http.StatusOK, "signup", &pageData{Title: "Sign up", CSRF: s.CSRFToken(c)})
}

// formError shows a form again with what went wrong. Internal errors are
// logged and shown as a generic text; a 429 keeps its Retry-After.
func (s *Service) formError(c *fiber.Ctx, page string, d *pageData, err error) error {
	status := wire.Status(err)
	if status >= 500 {
		s.log.Error("form failed", "path", c.Path(), "err", err)
	}
	var ra wire.RetryAfter
	if errors.As(err, &ra) {
		c.Set(fiber.HeaderRetryAfter, strconv.Itoa(int((time.Duration(ra)+time.Second-1)/time.Second)))
	}
	d.Error = sentence(slicehub.MessageOf(err))
	d.CSRF = s.CSRFToken(c)
	return s.render(c, status, page, d)
}

// sentence turns an API message ("wrong email or password") into one for
// a page ("Wrong email or password.").
func sentence(msg string) string {
	if msg == "" {
		return msg
	}
	r, n := utf8.DecodeRuneInString(msg)
	msg = string(unicode.ToUpper(r)) + msg[n:]
	if !strings.HasSuffix(msg, ".") && !strings.HasSuffix(msg, "!") && !strings.HasSuffix(msg, "?") {
		msg += "."
	}
	return msg
}

func (s *Service) signupForm(c *fiber.Ctx) error {
	const op = "gateway.signup_form"
	d := &pageData{Title: "Sign up", Email: formValue(c, "email")}
	if s.formTooLarge(c) {
		return s.formError(c, "signup", &pageData{Title: "Sign up"}, errFormTooLarge)
	}
	if err := s.VerifyCSRF(c); err != nil {
		return s.formError(c, "signup", d, err)
	}
	if err := s.acc.ThrottleSignup(op, c); err != nil {
		return s.formError(c, "signup", d, err)
	}
	ctx, cancel := s.acc.BackendContext(c)
	defer cancel()
	if _, err := s.acc.Register(ctx, c, formValue(c, "email"), formValue(c, "password")); err != nil {
		return s.formError(c, "signup", d, err)
	}
	return redirect(c, "/workspace")
}

func (s *Service) loginPage(c *fiber.Ctx) error {
	if s.signedIn(c) != nil {
		return redirect(c, "/workspace")
	}
	d := &pageData{Title: "Log in", CSRF: s.CSRFToken(c)}
	switch c.Query("done") {
	case "reset":
		d.Notice = "Your password has been changed. Log in with the new one."
	case "logout":
		d.Notice = "You have logged out."
	case "signed_out":
		d.Notice = "Your session has ended. Log in again."
	}
	return s.render(c, http.StatusOK, "login", d)
}

func (s *Service) loginForm(c *fiber.Ctx) error {
	const op = "gateway.login_form"
	d := &pageData{Title: "Log in", Email: formValue(c, "email")}
	if s.formTooLarge(c) {
		return s.formError(c, "login", &pageData{Title: "Log in"}, errFormTooLarge)
	}
	if err := s.VerifyCSRF(c); err != nil {
		return s.formError(c, "login", d, err)
	}
	if err := s.acc.ThrottleLogin(op, c); err != nil {
		return s.formError(c, "login", d, err)
	}
	ctx, cancel := s.acc.BackendContext(c)
	defer cancel()
	if _, err := s.acc.Authenticate(ctx, c, formValue(c, "email"), formValue(c, "password")); err != nil {
		return s.formError(c, "login", d, err)
	}
	return redirect(c, "/workspace")
}

// logoutForm ends the session of the log-out button. A logout is
// state-changing, so it is a POST with the CSRF token: a cross-site page
// must not be able to sign a user out either.
func (s *Service) logoutForm(c *fiber.Ctx) error {
	if err := s.VerifyCSRF(c); err != nil {
		return s.pageError(c, err)
	}
	s.acc.ClearSessionCookie(c)
	if h, ok := accounts.ParseToken(c.Cookies(slicehub.SessionCookie)); ok {
		ctx, cancel := s.acc.BackendContext(c)
		defer cancel()
		if err := s.acc.EndSession(ctx, h); err != nil {
			return s.pageError(c, err)
		}
	}
	return redirect(c, "/login?done=logout")
}

// pageError answers a page request with a friendly HTML error page: the
// HTML twin of writeError.
func (s *Service) pageError(c *fiber.Ctx, err error) error {
	status := wire.Status(err)
	if status >= 500 {
		s.log.Error("page failed", "path", c.Path(), "err", err)
	}
	var ra wire.RetryAfter
	if errors.As(err, &ra) {
		c.Set(fiber.HeaderRetryAfter, strconv.Itoa(int((time.Duration(ra)+time.Second-1)/time.Second)))
	}
	msg := sentence(slicehub.MessageOf(err))
	var fe *fiber.Error
	if errors.As(err, &fe) && !wire.IsDomainError(err) {
		msg = http.StatusText(fe.Code)
		if fe.Code == http.StatusNotFound {
			msg = "There is no page here."
		}
	}
	d := &pageData{Title: http.StatusText(status), Error: msg, SignedIn: false}
	t := s.pages.tmpl["error"]
	var buf bytes.Buffer
	if err := t.ExecuteTemplate(&buf, "layout", d); err != nil {
		return c.Status(status).SendString(msg)
	}
	setPageHeaders(c)
	c.Set(fiber.HeaderContentType, fiber.MIMETextHTMLCharsetUTF8)
	return c.Status(status).Send(buf.Bytes())
}

var errFormTooLarge = slicehub.Errorf("gateway.form", slicehub.KindTooLarge, "too_large", "the form is too large")

// staticFile serves the embedded stylesheet and script. With the current
// ?v= hash the answer never changes and is cached for a year; without it
// (or with an old hash) the browser revalidates.
func (s *Service) staticFile(c *fiber.Ctx) error {
	f, ok := s.pages.static[c.Params("name")]
	if !ok {
		return fiber.ErrNotFound
	}
	if c.Query("v") == f.hash {
		c.Set(fiber.HeaderCacheControl, "public, max-age=31536000, immutable")
	} else {
		c.Set(fiber.HeaderCacheControl, "no-cache")
	}
	etag := `"` + f.hash + `"`
	c.Set(fiber.HeaderETag, etag)
	c.Set(fiber.HeaderXContentTypeOptions, "nosniff")
	if c.Get(fiber.HeaderIfNoneMatch) == etag {
		return c.SendStatus(http.StatusNotModified)
	}
	c.Set(fiber.HeaderContentType, f.ctype)
	return c.Send(f.body)
}
