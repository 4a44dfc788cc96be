package gateway

import (
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/slicehub/slicehub"
)

// errorBody is the only shape an error takes on the wire.
type errorBody struct {
	Error string `json:"error"`
	Code  string `json:"code"`
}

// retryAfter rides in the cause chain of an *slicehub.Error so that the one
// error writer can add a Retry-After header without a second error type.
// The domain's type, so that the postgres package's unavailable errors
// (a database that does not answer) carry one too.
type retryAfter = slicehub.RetryAfter

// withRetry builds a client-facing error that tells the client when to retry.
func withRetry(op string, kind slicehub.Kind, code, msg string, after time.Duration) error {
	return &slicehub.Error{Op: op, Kind: kind, Code: code, Message: msg, Err: retryAfter(after)}
}

// codeGatewayTimeout marks a KindBadGateway error as a timeout: the kinds of
// the domain have no 504, and the contract wants one when a slice is silent.
const codeGatewayTimeout = "slice_timeout"

// Errors of the hot path are built once: they carry no per-request data, and
// allocating them for every refused request would be waste.
var (
	errNoSession = slicehub.Errorf("gateway.session", slicehub.KindUnauthorized, "no_session", "sign in first")
	errForbidden = slicehub.Errorf("gateway.admin", slicehub.KindForbidden, "forbidden", "not allowed")
	errBadOrigin = slicehub.Errorf("gateway.csrf", slicehub.KindForbidden, "bad_origin", "the request origin is not allowed")
	errNeedJSON  = slicehub.Errorf("gateway.csrf", slicehub.KindInvalid, "json_required",
		"the request must have Content-Type application/json")
	errSuspended = slicehub.Errorf("gateway.proxy", slicehub.KindPaymentRequired, "slice_suspended",
		"the workspace is suspended")
	errSlicePending = withRetry("gateway.proxy", slicehub.KindUnavailable, "slice_pending",
		"the workspace is being prepared", 5*time.Second)
	errSliceStarting = withRetry("gateway.proxy", slicehub.KindUnavailable, "slice_starting",
		"the workspace is starting", 2*time.Second)
	errSliceDown = withRetry("gateway.proxy", slicehub.KindUnavailable, "slice_unavailable",
		"the workspace is unavailable", 30*time.Second)
	errSliceBusy = withRetry("gateway.proxy", slicehub.KindUnavailable, "slice_busy",
		"the workspace is busy", time.Second)
	errSliceTimeout = slicehub.Errorf("gateway.proxy", slicehub.KindBadGateway, codeGatewayTimeout,
		"the workspace did not answer in time")
	errSliceFailed = slicehub.Errorf("gateway.proxy", slicehub.KindBadGateway, "slice_failed",
		"the workspace did not answer")
)

// statusOf maps an error to its HTTP status: the one place where kinds
// become statuses.
func statusOf(err error) int {
	var fe *fiber.Error
	if errors.As(err, &fe) && !isDomainError(err) {
		// Raised by Fiber or fasthttp themselves: no route (404), method (405),
		// body or headers over the limit (413, 431), a malformed request (400).
		return fe.Code
	}
	// A slice that stayed silent is a bad gateway of its own: 504.
	if slicehub.KindOf(err) == slicehub.KindBadGateway && slicehub.CodeOf(err) == codeGatewayTimeout {
		return http.StatusGatewayTimeout
	}
	return slicehub.KindOf(err).HTTPStatus()
}

func isDomainError(err error) bool {
	var e *slicehub.Error
	return errors.As(err, &e)
}

// writeError answers a request with the JSON error for err. It is the only
// writer of errors: Fiber's ErrorHandler and the metrics middleware both end
// here. Internal errors are logged with their cause and shown as a generic
// text; every other kind is the client's doing and is not logged.
func (s *Server) writeError(c *fiber.Ctx, err error) error {
	if wantsHTML(c) {
		return s.pageError(c, err)
	}
	status := statusOf(err)
	body := errorBody{Code: slicehub.CodeOf(err), Error: slicehub.MessageOf(err)}
	var fe *fiber.Error
	if errors.As(err, &fe) && !isDomainError(err) {
		// Fiber's own messages can quote parser internals: show the status text.
		body = errorBody{Code: fiberCode(fe.Code), Error: http.StatusText(fe.Code)}
		if body.Error == "" {
			body.Error = "the request is not valid"
		}
	}
	if status == http.StatusInternalServerError {
		s.log.Error("request failed", "method", c.Method(), "path", c.Path(), "err", err)
	}
	var ra retryAfter
	if errors.As(err, &ra) {
		c.Set(fiber.HeaderRetryAfter, strconv.Itoa(int((time.Duration(ra)+time.Second-1)/time.Second)))
	}
	c.Set(fiber.HeaderCacheControl, "no-store")
	return c.Status(status).JSON(body)
}

func fiberCode(status int) string {
	switch status {
	case http.StatusBadRequest:
		return "invalid"
	case http.StatusNotFound:
		return "not_found"
	case http.StatusMethodNotAllowed:
		return "method_not_allowed"
	case http.StatusRequestEntityTooLarge, http.StatusRequestHeaderFieldsTooLarge:
		return "too_large"
	case http.StatusRequestTimeout:
		return "timeout"
	case http.StatusUnsupportedMediaType:
		return "unsupported_media_type"
	}
	if status >= 500 {
		return "internal"
	}
	return "invalid"
}
