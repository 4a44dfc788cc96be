// Package loop is the gateway's event loop: the plain-HTTP proxy path for
// /api and /socket.io without a goroutine per connection (loop_linux.go,
// epoll; elsewhere there is none and the fasthttp server serves every
// connection).
//
// It owns the connections it takes, the pooled connections to slices, the
// HTTP/1.1 framing between them (http.go), its timeouts, and recovery from
// a panic: a panic closes the connection being served, is logged and
// counted, and every other connection of the loop goes on.
//
// It owns no policy. The gateway (its Host) decides from memory what each
// request is (Decide), rewrites it for the slice (Prepare), answers a
// failed one (AnswerError) and strips the slice's answer (StripResponse).
// The loop never answers a refusal itself: any request the Host would
// refuse, or cannot route from memory twice in a row, is handed, unread,
// to the fasthttp server behind it, whose paths answer exactly as they
// always have. So the loop adds speed to the path that works and no new
// way of saying no.
package loop

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"
)

// Config is what the loop needs of the gateway's configuration; its
// meanings are gateway.Config's.
type Config struct {
	ReadTimeout             time.Duration
	IdleTimeout             time.Duration
	WriteTimeout            time.Duration
	ProxyTimeout            time.Duration
	DialTimeout             time.Duration
	UpstreamIdleConnTimeout time.Duration
	MaxHeaderBytes          int
	BufferedBodyLimit       int
	UpstreamMaxConns        int
	// ServerName is the Server header the fasthttp server would add to an
	// answer that has none, or nil for none.
	ServerName []byte
}

// Verdict is what the loop does with one parsed request.
type Verdict uint8

const (
	// Forward: every cache hit; send it to the slice.
	Forward Verdict = iota
	// Resolve: a session or token cache miss; fill the caches off the
	// loop (Decision.Resolve) and decide again.
	Resolve
	// HandOff: anything else; the connection goes to the fasthttp server.
	HandOff
)

// Decision is a forward's target, filled by Host.Decide.
type Decision struct {
	SliceID int64
	Addr    string // the slice's ip:port; a name is handed off
	Class   uint8  // the request's metrics class, given back to Metrics
	// Session and Token are the Host's, given back to Prepare.
	Session any
	Token   []byte
	// Resolve, with the verdict Resolve, fills the caches Decide missed;
	// it runs off the loop and reports nothing: the loop decides again.
	Resolve func()
}

// Host is the gateway's side of the loop.
type Host interface {
	// Decide classifies the request parsed into ctx, from memory only.
	// Where a check of the server path would fail, the verdict is
	// HandOff, so that it fails there.
	Decide(ctx *fasthttp.RequestCtx, d *Decision) Verdict
	// Prepare rewrites the request in ctx for the slice d names.
	Prepare(ctx *fasthttp.RequestCtx, d *Decision)
	// AnswerError sets ctx's response to the answer to a request that the
	// slice failed with err (a dial error, a timeout, a malformed answer).
	AnswerError(ctx *fasthttp.RequestCtx, err error)
	// StripResponse removes from a slice's answer what a browser must not
	// get.
	StripResponse(h *fasthttp.ResponseHeader)
}

// Metrics are where the loop counts.
type Metrics struct {
	Conns    prometheus.Gauge   // browser connections held by the loops
	HandOffs prometheus.Counter // connections handed to the fasthttp server
	Panics   prometheus.Counter // panics recovered from
	Overhead prometheus.Observer
	// Count counts an answered request; Latency observes how long its
	// answer took to begin.
	Count   func(class uint8, status int)
	Latency func(class uint8, d time.Duration)
}
