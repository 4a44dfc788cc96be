package gateway

import (
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/slicehub/slicehub"
	"github.com/slicehub/slicehub/gateway/wire"
)

// The proxy's refusals, built once: they carry no per-request data, and
// allocating them for every refused request would be waste.
var (
	errSuspended = slicehub.Errorf("gateway.proxy", slicehub.KindPaymentRequired, "slice_suspended",
		"the workspace is suspended")
	errSlicePending = wire.WithRetry("gateway.proxy", slicehub.KindUnavailable, "slice_pending",
		"the workspace is being prepared", 5*time.Second)
	errSliceStarting = wire.WithRetry("gateway.proxy", slicehub.KindUnavailable, "slice_starting",
		"the workspace is starting", 2*time.Second)
	errSliceDown = wire.WithRetry("gateway.proxy", slicehub.KindUnavailable, "slice_unavailable",
		"the workspace is unavailable", 30*time.Second)
	errSliceBusy = wire.WithRetry("gateway.proxy", slicehub.KindUnavailable, "slice_busy",
		"the workspace is busy", time.Second)
	errSliceTimeout = slicehub.Errorf("gateway.proxy", slicehub.KindBadGateway, wire.CodeGatewayTimeout,
		"the workspace did not answer in time")
	errSliceFailed = slicehub.Errorf("gateway.proxy", slicehub.KindBadGateway, "slice_failed",
		"the workspace did not answer")
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
