// Package wire is what every part of the gateway reads from a request and
// writes to the wire the same way: the one JSON error shape and the
// statuses of the error kinds, the client's address behind trusted
// proxies, the Origin check, and strict JSON bodies. It knows nothing of
// sessions, slices or pages.
package wire

import (
	"errors"
	"log/slog"
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

// RetryAfter rides in the cause chain of an *slicehub.Error so that the one
// error writer can add a Retry-After header without a second error type.
// The domain's type, so that the postgres package's unavailable errors (a
// database that does not answer) carry one too.
type RetryAfter = slicehub.RetryAfter

// WithRetry builds a client-facing error that tells the client when to retry.
func WithRetry(op string, kind slicehub.Kind, code, msg string, after time.Duration) error {
	return &slicehub.Error{Op: op, Kind: kind, Code: code, Message: msg, Err: RetryAfter(after)}
}

// CodeGatewayTimeout marks a KindBadGateway error as a timeout: the kinds of
// the domain have no 504, and the contract wants one when a slice is silent.
const CodeGatewayTimeout = "slice_timeout"

// Errors of the hot path are built once: they carry no per-request data, and
// allocating them for every refused request would be waste.
var (
	ErrNoSession = slicehub.Errorf("gateway.session", slicehub.KindUnauthorized, "no_session", "sign in first")
	ErrForbidden = slicehub.Errorf("gateway.admin", slicehub.KindForbidden, "forbidden", "not allowed")
	ErrBadOrigin = slicehub.Errorf("gateway.csrf", slicehub.KindForbidden, "bad_origin", "the request origin is not allowed")
	ErrNeedJSON  = slicehub.Errorf("gateway.csrf", slicehub.KindInvalid, "json_required",
		"the request must have Content-Type application/json")
)

// Status maps an error to its HTTP status: the one place where kinds
// become statuses.
func Status(err error) int {
	var fe *fiber.Error
	if errors.As(err, &fe) && !IsDomainError(err) {
		// Raised by Fiber or fasthttp themselves: no route (404), method (405),
		// body or headers over the limit (413, 431), a malformed request (400).
		return fe.Code
	}
	// A slice that stayed silent is a bad gateway of its own: 504.
	if slicehub.KindOf(err) == slicehub.KindBadGateway && slicehub.CodeOf(err) == CodeGatewayTimeout {
		return http.StatusGatewayTimeout
	}
	return slicehub.KindOf(err).HTTPStatus()
}

func IsDomainError(err error) bool {
	var e *slicehub.Error
	return errors.As(err, &e)
}

// WriteJSON answers a request with the JSON error for err. Internal
// errors are logged with their cause and shown as a generic text; every
// other kind is the client's doing and is not logged.
func WriteJSON(c *fiber.Ctx, err error, log *slog.Logger) error {
	status := Status(err)
	body := errorBody{Code: slicehub.CodeOf(err), Error: slicehub.MessageOf(err)}
	var fe *fiber.Error
	if errors.As(err, &fe) && !IsDomainError(err) {
		// Fiber's own messages can quote parser internals: show the status text.
		body = errorBody{Code: fiberCode(fe.Code), Error: http.StatusText(fe.Code)}
		if body.Error == "" {
			body.Error = "the request is not valid"
		}
	}
	if status == http.StatusInternalServerError {
		log.Error("request failed", "method", c.Method(), "path", c.Path(), "err", err)
	}
	var ra RetryAfter
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
