package gateway

import (
	"bytes"
	"errors"
	"net"
	"sync"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/slicehub/slicehub/gateway/loop"
)

// The public listener's connections go to one of two fasthttp servers
// running the same handler, chosen by the first request on the connection:
//
//   - a WebSocket handshake goes to wsServer, which reads each request body
//     whole (it has none) and gives the 16 KiB request reader back to its
//     pool once the request is read (ReduceMemoryUsage), so that 10,000
//     idle WebSockets do not hold 160 MB of readers for their whole life;
//   - everything else goes to Fiber's own server, which streams large
//     request bodies (body.go). A streaming server cannot give its reader
//     back (a body may still be in it), and a hijacked connection keeps
//     it: hence the split.
//
// Browsers open a new connection for every WebSocket, so the first request
// decides well. A keep-alive connection that upgrades later still works,
// it only keeps its reader; a WebSocket connection that later sends a big
// upload gets it read whole, within BodyLimit.

// splitter accepts on the public listener and hands each connection, with
// its first request head peeked and replayed, to the server for its kind.
type splitter struct {
	httpLn, wsLn *chanListener
	peekTimeout  time.Duration
	maxHead      int
	bufs         sync.Pool
	loop         *loop.Engine // nil: none
}

func newSplitter(addr net.Addr, peekTimeout time.Duration, maxHead int) *splitter {
	sp := &splitter{
		httpLn: newChanListener(addr), wsLn: newChanListener(addr),
		peekTimeout: peekTimeout, maxHead: maxHead,
	}
	sp.bufs.New = func() any { b := make([]byte, maxHead); return &b }
	return sp
}

// run accepts until ln closes, then closes both servers' listeners.
func (sp *splitter) run(ln net.Listener) error {
	defer sp.httpLn.Close()
	defer sp.wsLn.Close()
	var delay time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() { // EMFILE and friends: back off as net/http does
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				time.Sleep(delay)
				continue
			}
			return err
		}
		delay = 0
		go sp.route(c)
	}
}

// route peeks at the first request head within peekTimeout. A connection
// that sends nothing in that time, or goes away, is closed: it would have
// been cut by ReadTimeout as well.
func (sp *splitter) route(c net.Conn) {
	_ = c.SetReadDeadline(time.Now().Add(sp.peekTimeout))
	// The first byte before any buffer: a connection opened and left
	// silent (a preconnect, or a flood of them) then costs its goroutine
	// only, not a 16 KiB buffer for the whole peek timeout.
	var first [1]byte
	if m, err := c.Read(first[:]); m == 0 || err != nil {
		c.Close()
		return
	}
	bp := sp.bufs.Get().(*[]byte)
	buf := *bp
	buf[0] = first[0]
	n := 1
	for n < len(buf) && loop.HeadEnd(buf[:n]) < 0 {
		m, err := c.Read(buf[n:])
		n += m
		if err != nil {
			break
		}
	}
	head := bytes.Clone(buf[:n])
	sp.bufs.Put(bp)
	_ = c.SetReadDeadline(time.Time{})
	if loop.HeadEnd(head) < 0 && len(head) < sp.maxHead {
		c.Close() // slow, silent or gone: nothing a server could answer
		return
	}
	// A head over maxHead goes to the HTTP server, which answers 431.
	target := sp.httpLn
	if isWebSocketHead(head) {
		target = sp.wsLn
	} else if sp.loop.Take(c, head) {
		return
	}
	if !target.push(&replayConn{Conn: c, pending: head}) {
		c.Close()
	}
}

// isWebSocketHead reports whether a request head asks for a WebSocket:
// an Upgrade header whose value names websocket (any case).
func isWebSocketHead(head []byte) bool {
	end := loop.HeadEnd(head)
	if end < 0 {
		return false
	}
	lines := bytes.Split(head[:end], []byte("\n"))
	for _, l := range lines[1:] {
		k, v, ok := bytes.Cut(l, []byte(":"))
		if ok && bytes.EqualFold(bytes.TrimSpace(k), []byte("Upgrade")) &&
			bytes.Contains(bytes.ToLower(v), []byte("websocket")) {
			return true
		}
	}
	return false
}

// replayConn gives back the peeked bytes before reading on.
type replayConn struct {
	net.Conn
	pending []byte
}

func (c *replayConn) Read(p []byte) (int, error) {
	if len(c.pending) > 0 {
		n := copy(p, c.pending)
		c.pending = c.pending[n:]
		if len(c.pending) == 0 {
			c.pending = nil // the head's memory goes with it
		}
		return n, nil
	}
	return c.Conn.Read(p)
}

// chanListener is a net.Listener fed by the splitter: each fasthttp
// server Serves one, so that its worker pool, idle tracking and graceful
// shutdown work as on a real listener.
type chanListener struct {
	addr   net.Addr
	conns  chan net.Conn
	mu     sync.Mutex
	closed bool
	done   chan struct{}
}

func newChanListener(addr net.Addr) *chanListener {
	return &chanListener{addr: addr, conns: make(chan net.Conn), done: make(chan struct{})}
}

// push hands c to the server; false once the listener is closed.
func (l *chanListener) push(c net.Conn) bool {
	select {
	case l.conns <- c:
		return true
	case <-l.done:
		return false
	}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.closed {
		l.closed = true
		close(l.done)
	}
	return nil
}

func (l *chanListener) Addr() net.Addr { return l.addr }

// wsServerOf is Fiber's server with the WebSocket side's settings: the
// same handler, limits and timeouts, request bodies read whole (within
// BodyLimit) and readers given back between requests.
func wsServerOf(src *fasthttp.Server, bodyLimit int) *fasthttp.Server {
	return &fasthttp.Server{
		Handler:                       src.Handler,
		ErrorHandler:                  src.ErrorHandler,
		HeaderReceived:                src.HeaderReceived,
		ContinueHandler:               src.ContinueHandler,
		Name:                          src.Name,
		Concurrency:                   src.Concurrency,
		ReadBufferSize:                src.ReadBufferSize,
		WriteBufferSize:               src.WriteBufferSize,
		ReadTimeout:                   src.ReadTimeout,
		WriteTimeout:                  src.WriteTimeout,
		IdleTimeout:                   src.IdleTimeout,
		MaxConnsPerIP:                 src.MaxConnsPerIP,
		MaxRequestsPerConn:            src.MaxRequestsPerConn,
		MaxRequestBodySize:            bodyLimit,
		DisableKeepalive:              src.DisableKeepalive,
		ReduceMemoryUsage:             true,
		StreamRequestBody:             false,
		DisablePreParseMultipartForm:  true,
		LogAllErrors:                  src.LogAllErrors,
		SecureErrorLogMessage:         src.SecureErrorLogMessage,
		DisableHeaderNamesNormalizing: src.DisableHeaderNamesNormalizing,
		NoDefaultServerHeader:         src.NoDefaultServerHeader,
		NoDefaultDate:                 src.NoDefaultDate,
		NoDefaultContentType:          src.NoDefaultContentType,
		CloseOnShutdown:               src.CloseOnShutdown,
		Logger:                        src.Logger,
	}
}
