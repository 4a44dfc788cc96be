//go:build !linux

package gateway

import (
	"context"
	"errors"
	"net"
)

// The event loop is Linux's (epoll); elsewhere every connection is served
// by the fasthttp server.

const loopSupported = false

type loopEngine struct{}

func newLoopEngine(*Server, func(net.Conn) bool) (*loopEngine, error) {
	return nil, errors.New("the event loop needs Linux")
}

func (e *loopEngine) take(net.Conn, []byte) bool     { return false }
func (e *loopEngine) shutdown(context.Context) error { return nil }
