//go:build !linux

package loop

import (
	"context"
	"errors"
	"log/slog"
	"net"
)

// The event loop is Linux's (epoll); elsewhere every connection is served
// by the fasthttp server.

// Supported says whether this platform has the event loop.
const Supported = false

// Engine is the loops of one gateway: none here.
type Engine struct{}

// New fails: there is no event loop here.
func New(Config, Host, Metrics, *slog.Logger, func(net.Conn, []byte) bool) (*Engine, error) {
	return nil, errors.New("the event loop needs Linux")
}

// Take takes nothing.
func (e *Engine) Take(net.Conn, []byte) bool { return false }

// Shutdown has nothing to stop.
func (e *Engine) Shutdown(context.Context) error { return nil }
