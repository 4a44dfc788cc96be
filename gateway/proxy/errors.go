// Package proxy is the slice side of the gateway's proxy: the keep-alive
// pools to slice addresses (created on first use, dropped when idle), the
// cache of the slices' gateway tokens, which headers may pass either way
// and what is added to a slice's answer, and the errors a client gets when
// a slice cannot be reached or does not answer in time.
//
// The handlers that carry the requests and WebSockets (front, forward, the
// WebSocket tunnels, and the event loop's Host) stay in package gateway,
// where a session, the route table and the metrics meet; both the server
// path and the event loop (package loop) strip and map with this package,
// so that they answer alike.
package proxy

import (
	"time"

	"github.com/slicehub/slicehub"
	"github.com/slicehub/slicehub/gateway/wire"
)

// The proxy's refusals, built once: they carry no per-request data, and
// allocating them for every refused request would be waste.
var (
	ErrSuspended = slicehub.Errorf("gateway.proxy", slicehub.KindPaymentRequired, "slice_suspended",
		"the workspace is suspended")
	ErrSlicePending = wire.WithRetry("gateway.proxy", slicehub.KindUnavailable, "slice_pending",
		"the workspace is being prepared", 5*time.Second)
	ErrSliceStarting = wire.WithRetry("gateway.proxy", slicehub.KindUnavailable, "slice_starting",
		"the workspace is starting", 2*time.Second)
	ErrSliceDown = wire.WithRetry("gateway.proxy", slicehub.KindUnavailable, "slice_unavailable",
		"the workspace is unavailable", 30*time.Second)
	ErrSliceBusy = wire.WithRetry("gateway.proxy", slicehub.KindUnavailable, "slice_busy",
		"the workspace is busy", time.Second)
	ErrSliceTimeout = slicehub.Errorf("gateway.proxy", slicehub.KindBadGateway, wire.CodeGatewayTimeout,
		"the workspace did not answer in time")
	ErrSliceFailed = slicehub.Errorf("gateway.proxy", slicehub.KindBadGateway, "slice_failed",
		"the workspace did not answer")
)
