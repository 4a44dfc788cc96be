package pages

import (
	"errors"
	"io/fs"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"
)

// The shared SPA (the CRM's front end, built elsewhere) is served from
// Config.SPADir under Config.SPAPrefix:
//   - a file that exists is served as is;
//   - a path without a file extension (a client-side route such as
//     /app/contacts/12) gets index.html, so deep links and reloads work;
//   - a missing asset (.js, .css, ...) is a 404, never index.html: a browser
//     would try to run HTML as a script and report a confusing error;
//   - dotfiles, and anything a symlink points outside the directory, are
//     never served.
//
// Cache headers follow the usual build output: files whose names carry a
// content hash (index-3f2a1b9c.js) never change and are cached for a year;
// index.html and everything else are revalidated on every load, so a new
// deploy is picked up at once.

// hashedAsset matches names like app.3f2a1b9c.js, index-BzX3a9Kc.css: a
// hash of at least 8 characters, one of them a digit, before the extension.
var hashedAsset = regexp.MustCompile(`[.-]([A-Za-z0-9_]{8,})\.[A-Za-z0-9]+$`)

func isHashedAsset(name string) bool {
	m := hashedAsset.FindStringSubmatch(name)
	return m != nil && strings.ContainsAny(m[1], "0123456789")
}

type spa struct {
	root string // absolute, symlinks resolved
	log  *slog.Logger
	// files, when set, is an in-memory build served instead of root
	// (spabuild.go).
	files map[string]*spaAsset
}

func newSPA(dir string, log *slog.Logger) *spa {
	root, err := filepath.Abs(dir)
	if err == nil {
		root, err = filepath.EvalSymlinks(root)
	}
	if err != nil {
		log.Error("SPA directory unusable; serving index fallbacks will fail", "dir", dir, "err", err)
		root = dir
	}
	return &spa{root: root, log: log}
}

// IsGatewayPrefix reports whether an SPA prefix would hide gateway paths.
func IsGatewayPrefix(p string) bool {
	for _, r := range []string{"/api/", "/socket.io/", "/auth/", "/admin/", "/internal/", "/static/",
		"/workspace/", "/reset/", "/signup/", "/login/", "/logout/", "/healthz/", "/readyz/", "/metrics/"} {
		if p == r {
			return true
		}
	}
	return false
}

func (s *Service) spaRoutes(app fiber.Router) {
	prefix := s.cfg.SPAPrefix
	bare := strings.TrimSuffix(prefix, "/")
	// Strict routing: this route is the bare form alone ("/app/" is the
	// wildcard's), redirected so that relative URLs resolve.
	app.Get(bare, func(c *fiber.Ctx) error {
		return c.Redirect(prefix, http.StatusMovedPermanently)
	})
	app.Get(prefix+"*", s.serveSPA) // Fiber's Get answers HEAD too
}

func (s *Service) serveSPA(c *fiber.Ctx) error {
	if s.spa.files != nil {
		return s.serveSPAAsset(c)
	}
	file, err := s.spa.resolve(c.Params("*"))
	if err != nil {
		return fiber.ErrNotFound
	}
	f, err := os.Open(file)
	if err != nil {
		return fiber.ErrNotFound
	}
	st, err := f.Stat()
	if err != nil || st.IsDir() {
		f.Close()
		return fiber.ErrNotFound
	}
	base := filepath.Base(file)
	switch {
	case base == "index.html":
		c.Set(fiber.HeaderCacheControl, "no-cache")
		c.Set(fiber.HeaderXFrameOptions, "DENY")
	case isHashedAsset(base):
		c.Set(fiber.HeaderCacheControl, "public, max-age=31536000, immutable")
	default:
		c.Set(fiber.HeaderCacheControl, "no-cache")
	}
	ctype := mime.TypeByExtension(filepath.Ext(base))
	if ctype == "" {
		ctype = fiber.MIMEOctetStream
	}
	c.Set(fiber.HeaderContentType, ctype)
	c.Set(fiber.HeaderXContentTypeOptions, "nosniff")
	mod := st.ModTime().UTC().Truncate(time.Second)
	etag := `W/"` + strconv.FormatInt(st.Size(), 36) + "-" + strconv.FormatInt(mod.Unix(), 36) + `"`
	c.Set(fiber.HeaderETag, etag)
	c.Set(fiber.HeaderLastModified, mod.Format(http.TimeFormat))
	if notModified(c, etag, mod) {
		f.Close()
		return c.SendStatus(http.StatusNotModified)
	}
	if c.Method() == fiber.MethodHead {
		f.Close()
		c.Set(fiber.HeaderContentLength, strconv.FormatInt(st.Size(), 10))
		return nil
	}
	// fasthttp closes f once it has sent it.
	c.Context().SetBodyStream(f, int(st.Size()))
	return nil
}

func notModified(c *fiber.Ctx, etag string, mod time.Time) bool {
	if inm := c.Get(fiber.HeaderIfNoneMatch); inm != "" {
		for _, t := range strings.Split(inm, ",") {
			if t = strings.TrimSpace(t); t == etag || t == "*" {
				return true
			}
		}
		return false
	}
	if ims := c.Get(fiber.HeaderIfModifiedSince); ims != "" {
		if t, err := http.ParseTime(ims); err == nil && !mod.After(t) {
			return true
		}
	}
	return false
}

var errSPANotFound = errors.New("not found")

// cleanSPAPath decodes and cleans the part of the path after the prefix
// ("/" + a clean path), or refuses it: a NUL or a backslash, or a dotfile.
// Fiber matches on the raw path: decoding here, once, then cleaning makes
// %2e%2e/ and friends plain ".." that get cleaned away.
func cleanSPAPath(raw string) (string, bool) {
	name, err := url.PathUnescape(raw)
	if err != nil || strings.ContainsAny(name, "\x00\\") {
		return "", false
	}
	clean := path.Clean("/" + name)
	for _, seg := range strings.Split(clean, "/") {
		if strings.HasPrefix(seg, ".") {
			return "", false
		}
	}
	return clean, true
}

// resolve maps the part of the path after the prefix to a file inside the
// root, with the index fallback.
func (sp *spa) resolve(raw string) (string, error) {
	clean, ok := cleanSPAPath(raw)
	if !ok {
		return "", errSPANotFound
	}
	file := filepath.Join(sp.root, filepath.FromSlash(clean))
	st, err := os.Stat(file)
	switch {
	case err == nil && st.IsDir():
		file = filepath.Join(file, "index.html")
		if _, err := os.Stat(file); err != nil {
			file = filepath.Join(sp.root, "index.html")
		}
	case errors.Is(err, fs.ErrNotExist):
		if ext := path.Ext(clean); ext != "" && ext != ".html" {
			return "", errSPANotFound
		}
		file = filepath.Join(sp.root, "index.html")
	case err != nil:
		return "", errSPANotFound
	}
	real, err := filepath.EvalSymlinks(file)
	if err != nil {
		return "", errSPANotFound
	}
	if real != sp.root && !strings.HasPrefix(real, sp.root+string(filepath.Separator)) {
		sp.log.Warn("SPA path leads outside its directory; refused", "path", clean)
		return "", errSPANotFound
	}
	return real, nil
}
