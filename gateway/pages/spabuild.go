package pages

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/base64"
	"mime"
	"net/http"
	"path"
	"strconv"
	"strings"

	"github.com/gofiber/fiber/v2"
)

// The shared SPA from memory: Config.SPAFiles is a build held by the
// process (package web's, embedded in the binary), served under SPAPrefix
// with the same rules as a directory (spa.go): index.html for client-side
// routes, 404 for a missing asset, no dotfiles, and the same cache headers.
// Because a build never changes while the process runs, everything a
// response needs is computed once: the ETag is a hash of the content (the
// same on every replica, unlike a modification time), and a gzip copy is
// kept when it is smaller, sent to clients that accept it.

// spaAsset is one file of an in-memory build.
type spaAsset struct {
	body, gz []byte
	etag     string
	ctype    string
	cache    string
}

// newSPAAssets prepares files (path inside the build → content).
func newSPAAssets(files map[string][]byte) map[string]*spaAsset {
	out := make(map[string]*spaAsset, len(files))
	for name, body := range files {
		name = strings.TrimPrefix(path.Clean("/"+name), "/")
		sum := sha256.Sum256(body)
		a := &spaAsset{body: body, etag: `"` + base64.RawURLEncoding.EncodeToString(sum[:12]) + `"`}
		a.ctype = mime.TypeByExtension(path.Ext(name))
		if a.ctype == "" {
			a.ctype = fiber.MIMEOctetStream
		}
		a.cache = "no-cache"
		if isHashedAsset(path.Base(name)) {
			a.cache = "public, max-age=31536000, immutable"
		}
		if len(body) > 512 {
			var buf bytes.Buffer
			zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
			zw.Write(body)
			zw.Close()
			if buf.Len() < len(body) {
				a.gz = buf.Bytes()
			}
		}
		out[name] = a
	}
	return out
}

// resolveAsset maps the path after the prefix to an asset, with the index
// fallback of resolve.
func resolveAsset(files map[string]*spaAsset, raw string) (*spaAsset, bool) {
	clean, ok := cleanSPAPath(raw)
	if !ok {
		return nil, false
	}
	clean = strings.TrimPrefix(clean, "/")
	if a, ok := files[clean]; ok {
		return a, true
	}
	if a, ok := files[path.Join(clean, "index.html")]; ok {
		return a, true
	}
	if ext := path.Ext(clean); ext != "" && ext != ".html" {
		return nil, false
	}
	a, ok := files["index.html"]
	return a, ok
}

func (s *Service) serveSPAAsset(c *fiber.Ctx) error {
	a, ok := resolveAsset(s.spa.files, c.Params("*"))
	if !ok {
		return fiber.ErrNotFound
	}
	c.Set(fiber.HeaderCacheControl, a.cache)
	c.Set(fiber.HeaderContentType, a.ctype)
	c.Set(fiber.HeaderXContentTypeOptions, "nosniff")
	if strings.HasPrefix(a.ctype, "text/html") {
		c.Set(fiber.HeaderXFrameOptions, "DENY")
		c.Set(fiber.HeaderContentSecurityPolicy, spaCSP)
	}
	c.Set(fiber.HeaderETag, a.etag)
	if a.gz != nil {
		c.Vary(fiber.HeaderAcceptEncoding)
	}
	// No Last-Modified is sent, so only If-None-Match can revalidate.
	if inm := c.Get(fiber.HeaderIfNoneMatch); inm != "" && etagMatches(inm, a.etag) {
		return c.SendStatus(http.StatusNotModified)
	}
	body := a.body
	if a.gz != nil && acceptsGzip(c.Get(fiber.HeaderAcceptEncoding)) {
		c.Set(fiber.HeaderContentEncoding, "gzip")
		body = a.gz
	}
	if c.Method() == fiber.MethodHead {
		c.Set(fiber.HeaderContentLength, strconv.Itoa(len(body)))
		return nil
	}
	return c.Send(body)
}

// spaCSP is the app page's policy: its own scripts and styles only, and
// connections to its own origin (the API and the socket.io WebSocket).
const spaCSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; manifest-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"

// acceptsGzip reports whether an Accept-Encoding header admits gzip.
func acceptsGzip(ae string) bool {
	for _, part := range strings.Split(ae, ",") {
		name, params, _ := strings.Cut(strings.TrimSpace(part), ";")
		if !strings.EqualFold(strings.TrimSpace(name), "gzip") {
			continue
		}
		params = strings.ReplaceAll(params, " ", "")
		return params != "q=0" && params != "q=0.0" && params != "q=0.00" && params != "q=0.000"
	}
	return false
}

func etagMatches(inm, etag string) bool {
	for _, t := range strings.Split(inm, ",") {
		if t = strings.TrimPrefix(strings.TrimSpace(t), "W/"); t == etag || t == "*" {
			return true
		}
	}
	return false
}
