// Package pgerr tells a PostgreSQL that cannot be reached or answered
// from one that refused a statement. Both sides of the platform that talk
// to PostgreSQL (package postgres for the gateway, the slice for its own
// database) classify with it, so that both answer 503, not 500, while the
// database restarts.
package pgerr

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"syscall"

	"github.com/jackc/pgx/v5/pgconn"
)

// Unavailable says whether err means the database could not be reached or
// answered, as opposed to refusing the statement (a constraint, a syntax
// error, a row that is not there).
func Unavailable(err error) bool {
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
