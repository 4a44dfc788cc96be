package slicehub

import (
	"errors"
	"fmt"
	"time"
)

// Kind classifies an error so that one place (the gateway) can map it to an
// HTTP status and a stable code without inspecting messages.
type Kind uint8

const (
	KindInternal        Kind = iota // a bug or an unexpected failure; logged, never shown
	KindInvalid                     // bad input: 400
	KindUnauthorized                // no or bad credentials: 401
	KindPaymentRequired             // account suspended for billing: 402
	KindForbidden                   // authenticated but not allowed: 403
	KindNotFound                    // 404
	KindConflict                    // state does not allow it, or already exists: 409
	KindTooLarge                    // body or header over the limit: 413
	KindRateLimited                 // throttled: 429
	KindUnavailable                 // try again later (slice starting, dependency down): 503
	KindBadGateway                  // the slice failed to answer: 502
)

var kindNames = map[Kind]string{
	KindInternal:        "internal",
	KindInvalid:         "invalid",
	KindUnauthorized:    "unauthorized",
	KindPaymentRequired: "payment_required",
	KindForbidden:       "forbidden",
	KindNotFound:        "not_found",
	KindConflict:        "conflict",
	KindTooLarge:        "too_large",
	KindRateLimited:     "rate_limited",
	KindUnavailable:     "unavailable",
	KindBadGateway:      "bad_gateway",
}

func (k Kind) String() string {
	if s, ok := kindNames[k]; ok {
		return s
	}
	return "internal"
}

// HTTPStatus is the status every HTTP surface of the platform (the gateway,
// a slice) answers for an error of this kind.
func (k Kind) HTTPStatus() int {
	switch k {
	case KindInvalid:
		return 400
	case KindUnauthorized:
		return 401
	case KindPaymentRequired:
		return 402
	case KindForbidden:
		return 403
	case KindNotFound:
		return 404
	case KindConflict:
		return 409
	case KindTooLarge:
		return 413
	case KindRateLimited:
		return 429
	case KindUnavailable:
		return 503
	case KindBadGateway:
		return 502
	case KindInternal:
	}
	return 500
}

// Error is the platform's error: the operation that failed, its kind, a
// stable machine-readable code, a message safe to show a client, and the
// underlying cause (logged, never shown).
type Error struct {
	Op      string // "scheduler.claim"
	Kind    Kind
	Code    string // "email_taken"; defaults to the kind's name
	Message string // client-facing; empty means a generic text for the kind
	Err     error
}

func (e *Error) Error() string {
	msg := e.Op
	if e.Code != "" {
		msg += ": " + e.Code
	}
	if e.Message != "" {
		msg += ": " + e.Message
	}
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

func (e *Error) Unwrap() error { return e.Err }

// RetryAfter rides in the cause chain of an *Error to tell the client when
// to try again: the HTTP error writers turn it into a Retry-After header.
// It lives here, not in the gateway, so that a package below the gateway
// (postgres, for a database that does not answer) can say it too.
type RetryAfter time.Duration

func (r RetryAfter) Error() string { return "retry after " + time.Duration(r).String() }

// Errorf builds an *Error with a client-facing message.
func Errorf(op string, kind Kind, code, format string, args ...any) *Error {
	return &Error{Op: op, Kind: kind, Code: code, Message: fmt.Sprintf(format, args...)}
}

// Wrap attaches an op and a kind to a cause. A cause that already is an
// *Error keeps its kind, code and message unless kind is not KindInternal.
func Wrap(op string, kind Kind, err error) error {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) && kind == KindInternal {
		return &Error{Op: op, Kind: e.Kind, Code: e.Code, Message: e.Message, Err: err}
	}
	return &Error{Op: op, Kind: kind, Err: err}
}

// KindOf returns the kind of the outermost *Error in err's chain, or
// KindInternal.
func KindOf(err error) Kind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return KindInternal
}

// CodeOf returns the code of the outermost *Error, or the kind's name.
func CodeOf(err error) string {
	var e *Error
	if errors.As(err, &e) && e.Code != "" {
		return e.Code
	}
	return KindOf(err).String()
}

// MessageOf returns a message safe to show a client: the outermost *Error's
// message, or a generic text for its kind. Internal causes never leak.
func MessageOf(err error) string {
	var e *Error
	if errors.As(err, &e) && e.Message != "" && e.Kind != KindInternal {
		return e.Message
	}
	switch KindOf(err) {
	case KindInvalid:
		return "the request is not valid"
	case KindUnauthorized:
		return "sign in first"
	case KindPaymentRequired:
		return "the account is suspended for billing"
	case KindForbidden:
		return "not allowed"
	case KindNotFound:
		return "not found"
	case KindConflict:
		return "the request conflicts with the current state"
	case KindTooLarge:
		return "the request is too large"
	case KindRateLimited:
		return "too many requests; try again later"
	case KindUnavailable:
		return "temporarily unavailable; try again shortly"
	case KindBadGateway:
		return "the workspace did not answer"
	case KindInternal:
	}
	return "internal error"
}
