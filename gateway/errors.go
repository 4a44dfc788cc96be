package gateway

import (
	"strings"

	"github.com/gofiber/fiber/v2"

	"github.com/slicehub/slicehub/gateway/wire"
)

// writeError answers a request with the error for err: a page for a
// browser's page request (package pages), the JSON error otherwise. It is the
// only writer of errors: Fiber's ErrorHandler and the metrics middleware
// both end here.
func (s *Server) writeError(c *fiber.Ctx, err error) error {
	if wantsHTML(c) {
		return s.pages.PageError(c, err)
	}
	return wire.WriteJSON(c, err, s.log)
}

// wantsHTML reports whether an error on this request should be a page: a
// path of the pages (not the API, the proxy, the admin API or the probes)
// asked for by a browser.
func wantsHTML(c *fiber.Ctx) bool {
	if cl := classOf(c.Path()); cl != classOther && cl != classPages || c.Path() == "/workspace/events" {
		return false
	}
	return strings.Contains(c.Get(fiber.HeaderAccept), "text/html")
}
