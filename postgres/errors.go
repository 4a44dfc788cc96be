package postgres

import (
	"errors"
	"time"

	"github.com/slicehub/slicehub"
	"github.com/slicehub/slicehub/internal/pgerr"
)

// retryUnavailable is the Retry-After of an unavailable database: a
// restart or a failover takes seconds, and a client hammering a database
// that is coming back only delays it.
const retryUnavailable = 2 * time.Second

// wrap is how every operation of this package wraps a failure it did not
// classify itself. A database that cannot be reached, that died under a
// query, that is shutting down or starting, or that did not answer within
// the caller's deadline is KindUnavailable (503, with a Retry-After): the
// client can retry, and nothing is broken in the gateway. Anything else is
// KindInternal, and an *Error from deeper down keeps its kind.
func wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	var e *slicehub.Error
	if !errors.As(err, &e) && pgerr.Unavailable(err) {
		// No message of its own: the kind's generic text tells the client
		// to retry without naming what is down.
		return &slicehub.Error{Op: op, Kind: slicehub.KindUnavailable,
			Err: errors.Join(err, slicehub.RetryAfter(retryUnavailable))}
	}
	return slicehub.Wrap(op, slicehub.KindInternal, err)
}
