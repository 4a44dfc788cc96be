package postgres

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/slicehub/slicehub"
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
	if !errors.As(err, &e) && unavailable(err) {
		// No message of its own: the kind's generic text tells the client
		// to retry without naming what is down.
		return &slicehub.Error{Op: op, Kind: slicehub.KindUnavailable,
			Err: errors.Join(err, slicehub.RetryAfter(retryUnavailable))}
	}
	return slicehub.Wrap(op, slicehub.KindInternal, err)
}

// unavailable says whether err means the database could not be reached or
// answered, as opposed to refusing the statement (a constraint, a syntax
// error, a row that is not there).
func unavailable(err error) bool {
	if errors.Is(err, context.Canceled) {
		// The caller gave up (a client went away): not the database failing.
		// pgconn marks this safe to retry too, so it is settled first.
		return false
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		// The server answered: unavailable only if it said so. Class 08 is a
		// connection exception; 57P01-57P03 are an admin or crash shutdown
		// and "cannot connect now" (starting up, recovering); 53300 is
		// too_many_connections.
		return strings.HasPrefix(pgErr.Code, "08") ||
			pgErr.Code == "57P01" || pgErr.Code == "57P02" || pgErr.Code == "57P03" || pgErr.Code == "53300"
	}
	var connectErr *pgconn.ConnectError
	var netErr net.Error
	switch {
	case errors.As(err, &connectErr):
		return true // no connection could be opened
	case errors.Is(err, context.DeadlineExceeded), pgconn.Timeout(err):
		// The database did not answer in time (a stopped or overloaded
		// server), whether the deadline passed waiting for a pooled
		// connection or for the answer.
		return true
	case pgconn.SafeToRetry(err):
		return true // failed before anything was sent: a closed connection
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.EPIPE):
		return true // the connection died under the query
	case errors.As(err, &netErr):
		return true
	}
	return false
}
