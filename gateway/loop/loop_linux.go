//go:build linux

package loop

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/valyala/fasthttp"
	"golang.org/x/sys/unix"
)

// The event loop: the plain-HTTP proxy path without a goroutine per
// connection.
//
// Why: on the proxy comparison (compare_test.go) the goroutine-per-
// connection server spent 1.4 to 1.6 times nginx's CPU per request, and
// the profile put the difference in Go's netpoller and scheduler (every
// read parks a goroutine and wakes it again) and in deadline timers, not
// in anything the proxy does. Here each loop (one per CPU) has its own
// epoll set and does what nginx's worker does: a readable browser
// connection is read, its request parsed (by fasthttp's parser, so the
// same bytes mean the same request as on the server path) and rewritten
// by the Host (Prepare), and written to a pooled connection to the slice,
// owned by the same loop; the slice's answer is written back as it
// arrives. Four system calls per request (nginx makes five), one wait per
// batch of events, no locks and no allocations on the way.
//
// What the loop does not do, it hands on (loop.go, Host): the connection, with
// every byte it has read and not used, goes to the fasthttp server, which
// serves it from then on. That covers refusals, cache misses it could not
// fill, WebSocket upgrades, bodies over BufferedBodyLimit or chunked,
// Expect, HTTP/1.0, and a first request outside /api and /socket.io. The
// loop never hands on a request it has begun to send to a slice.
//
// Timeouts are checked by a sweep every tick (a quarter of the shortest
// timeout, at most 100 ms) rather than by a timer per connection, so they
// are as precise as the tick.

const (
	loopReadBuf   = 64 << 10 // one read from either side
	loopMaxEvents = 256
	// loopPipelineCap bounds what a client may send while its previous
	// request is with the slice; beyond it the loop stops reading it.
	loopPipelineCap = 64 << 10
)

// Engine owns the loops of one gateway.
type Engine struct {
	cfg     Config
	host    Host
	m       Metrics
	log     *slog.Logger
	loops   []*evLoop
	next    atomic.Uint32
	handOff func(nc net.Conn, pending []byte) bool // to the fasthttp server
	tick    time.Duration
	// open counts the client connections the loops hold, for Shutdown.
	open     atomic.Int64
	draining atomic.Bool
	// serverName is the Server header fasthttp's server would add, or nil.
	serverName []byte
}

// Supported says whether this platform has the event loop.
const Supported = true

// New starts one loop per CPU. handOff gives the fasthttp server a
// connection the loop will not serve, with pending, the bytes read from it
// and not used, to be read first; false: the server is gone.
func New(cfg Config, host Host, m Metrics, log *slog.Logger, handOff func(nc net.Conn, pending []byte) bool) (*Engine, error) {
	e := &Engine{cfg: cfg, host: host, m: m, log: log, handOff: handOff, serverName: cfg.ServerName}
	e.tick = 100 * time.Millisecond
	for _, d := range []time.Duration{cfg.ReadTimeout, cfg.IdleTimeout, cfg.WriteTimeout,
		cfg.ProxyTimeout, cfg.DialTimeout, cfg.UpstreamIdleConnTimeout} {
		if d > 0 {
			e.tick = min(e.tick, max(d/4, 5*time.Millisecond))
		}
	}
	n := runtime.GOMAXPROCS(0)
	for i := 0; i < n; i++ {
		l, err := newEvLoop(e)
		if err != nil {
			for _, l := range e.loops {
				l.post(func(l *evLoop) { l.stopped = true })
			}
			return nil, err
		}
		e.loops = append(e.loops, l)
		go l.run()
		go l.ticker()
	}
	return e, nil
}

// Take moves nc, whose first request head has been read into head, into a
// loop, if its first request is one the loop serves. false: the caller
// keeps nc (and head). A nil Engine takes nothing.
func (e *Engine) Take(nc net.Conn, head []byte) bool {
	if e == nil || e.draining.Load() || !loopCandidate(head) {
		return false
	}
	tc, ok := nc.(*net.TCPConn)
	if !ok {
		return false
	}
	raddr, _ := tc.RemoteAddr().(*net.TCPAddr)
	raw, err := tc.SyscallConn()
	if err != nil || raddr == nil {
		return false
	}
	fd := -1
	if cerr := raw.Control(func(s uintptr) { fd, err = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) }); cerr != nil || err != nil {
		return false
	}
	// Go's poller forgets the original (epoll_ctl DEL, then close); the
	// duplicate shares the socket and its non-blocking mode.
	tc.Close()
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return true // nc is gone either way
	}
	l := e.loops[int(e.next.Add(1))%len(e.loops)]
	c := &lconn{fd: fd, raddr: raddr, in: head}
	e.open.Add(1)
	e.m.Conns.Inc()
	if !l.post(func(l *evLoop) { l.adopt(c) }) {
		unix.Close(fd) // the loop has ended: Shutdown came first
		e.connGone()
	}
	return true
}

func (e *Engine) connGone() {
	e.open.Add(-1)
	e.m.Conns.Dec()
}

// loopCandidate is a cheap look at a first request line: a method and a
// target under /api or /socket.io. Host.Decide checks properly.
func loopCandidate(head []byte) bool {
	sp := bytes.IndexByte(head, ' ')
	if sp <= 0 || sp > 16 {
		return false
	}
	target := head[sp+1:]
	return bytes.HasPrefix(target, prefixAPI) || bytes.HasPrefix(target, prefixSocketIO)
}

// Shutdown stops taking connections, closes idle ones, lets requests in
// flight finish (answered with Connection: close), and closes the rest
// when ctx ends. A nil Engine has nothing to stop.
func (e *Engine) Shutdown(ctx context.Context) error {
	if e == nil {
		return nil
	}
	e.draining.Store(true)
	for _, l := range e.loops {
		l.post((*evLoop).drain)
	}
	t := time.NewTicker(e.tick)
	defer t.Stop()
	var err error
wait:
	for e.open.Load() > 0 {
		select {
		case <-ctx.Done():
			err = ctx.Err()
			break wait
		case <-t.C:
		}
	}
	for _, l := range e.loops {
		l.post(func(l *evLoop) { l.stopped = true })
	}
	return err
}

// client connection states
type cstate uint8

const (
	cIdle    cstate = iota // between requests; in may hold part of the next
	cResolve               // waiting for Decision.Resolve
	cProxy                 // the request is with the slice
	cClosing               // writing the last answer, then closing
	cHandOff               // writing the last answer, then handing on (in: the rest)
	cGone
)

// lconn is a browser's connection, held by one loop.
type lconn struct {
	fd     int
	seq    int32
	gen    uint32
	raddr  *net.TCPAddr
	state  cstate
	in     []byte // bytes read and not yet used
	out    []byte // bytes the browser has not taken yet
	outOff int
	up     *uconn

	deadline int64 // unix ns; 0: none
	reading  bool  // in holds part of a request: ReadTimeout runs
	epollOut bool
	inPaused bool
	eof      bool // the browser has half-closed: no more requests

	// the request in flight
	req        []byte // as sent to the slice: kept to retry or to answer an error
	class      uint8
	start      time.Time
	sliceID    int64
	addr       string
	isHead     bool
	idempotent bool
	closeAfter bool
	resolves   uint8
	attempts   uint8
	status     int
	answered   bool // an answer's head has been sent
}

// upstream connection states
type ustate uint8

const (
	uConnecting ustate = iota
	uWriting
	uHead
	uBody
	uIdle
)

type bodyMode uint8

const (
	bodyNone bodyMode = iota
	bodyLength
	bodyChunked
	bodyClose
)

// uconn is a connection to a slice, owned by one loop's pool for its address.
type uconn struct {
	fd        int
	seq       int32
	pool      *upool
	c         *lconn
	state     ustate
	out       []byte
	head      []byte
	mode      bodyMode
	remain    int64
	chunks    chunkScanner
	reused    bool
	gotByte   bool
	keepAlive bool
	epollOut  bool
	paused    bool
	deadline  int64
}

// upool is one loop's connections to one slice address.
type upool struct {
	addr   string
	sa     unix.Sockaddr
	family int
	idle   []*uconn
	total  int
	used   int64 // unix ns
}

type fdOwner struct {
	c   *lconn
	u   *uconn
	seq int32
}

// evLoop is one event loop: a goroutine, an epoll set, the connections
// it holds and its pools to slices.
type evLoop struct {
	e     *Engine
	epfd  int
	efd   int
	fds   map[int32]fdOwner
	pools map[string]*upool
	mu    sync.Mutex
	inbox []func(*evLoop)
	spare []func(*evLoop)
	buf   []byte
	wbuf  []byte
	src   bytes.Reader
	br    *bufio.Reader
	ctx   fasthttp.RequestCtx
	// dec is the decision on the request in ctx. It lives here, not on
	// the stack: passed through the Host interface it would escape, an
	// allocation per request.
	dec     Decision
	resp    fasthttp.ResponseHeader
	now     int64
	stopped bool
	drained bool
	pf      *os.File        // the epoll set, as the runtime's poller knows it
	prc     syscall.RawConn // for waiting on pf
	closed  bool            // under mu: the eventfd is closed
	seq     int32
	// cur is the connection the loop is working for: what a panic closes.
	cur fdOwner
}

func newEvLoop(e *Engine) (*evLoop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	efd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		unix.Close(epfd)
		return nil, err
	}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, efd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(efd)}); err != nil {
		unix.Close(epfd)
		unix.Close(efd)
		return nil, err
	}
	if err := unix.SetNonblock(epfd, true); err != nil {
		unix.Close(epfd)
		unix.Close(efd)
		return nil, err
	}
	pf := os.NewFile(uintptr(epfd), "epoll") // non-blocking: the runtime's poller takes it
	prc, err := pf.SyscallConn()
	if err != nil {
		pf.Close()
		unix.Close(efd)
		return nil, err
	}
	l := &evLoop{
		e: e, epfd: epfd, efd: efd, pf: pf, prc: prc,
		fds: make(map[int32]fdOwner), pools: make(map[string]*upool),
		buf: make([]byte, loopReadBuf),
		br:  bufio.NewReaderSize(nil, e.cfg.MaxHeaderBytes+4096),
	}
	l.ctx.Init2(nil, nil, false)
	return l, nil
}

// post runs f on the loop's goroutine; false once the loop has ended.
func (l *evLoop) post(f func(*evLoop)) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	// Under the lock: once closeAll has closed the eventfd its number may
	// belong to another file, which must not get our 8 bytes.
	if l.closed {
		return false
	}
	wake := len(l.inbox) == 0
	l.inbox = append(l.inbox, f)
	if wake {
		var one = [8]byte{1}
		_, _ = unix.Write(l.efd, one[:])
	}
	return true
}

// epollWaitNow collects ready events without blocking: a raw system call,
// with no scheduler bookkeeping, since it cannot block.
func epollWaitNow(epfd int, events []unix.EpollEvent) (int, error) {
	r, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(epfd), uintptr(unsafe.Pointer(&events[0])), uintptr(len(events)), 0, 0, 0)
	switch e {
	case 0:
		return int(r), nil
	case unix.EINTR:
		return 0, nil
	}
	return 0, e
}

// run is the loop. It waits in Go's own poller, not in epoll_wait: the
// loop's epoll set is itself a pollable descriptor, registered with the
// runtime, so an idle loop parks as a goroutine and its thread serves
// others. Measured against a thread locked in a blocking epoll_wait, which
// is what nginx's worker does: 18 against 21 µs of CPU per proxied request
// here, because the runtime took the blocked thread's P away and back
// (sysmon, futex wake-ups) around every wait.
func (l *evLoop) run() {
	events := make([]unix.EpollEvent, loopMaxEvents)
	for !l.stopped {
		var n int
		var werr error
		err := l.prc.Read(func(uintptr) bool {
			n, werr = epollWaitNow(l.epfd, events)
			return n > 0 || werr != nil
		})
		if err == nil {
			err = werr
		}
		if err != nil {
			l.e.log.Error("event loop: waiting for events", "err", err)
			break
		}
		l.now = time.Now().UnixNano()
		for i := 0; i < n; {
			i = l.handle(events[:n], i)
		}
	}
	l.closeAll()
}

// handle serves events from i on and returns how far it got: all of them,
// or the one after an event whose handling panicked (that event's
// connection is closed, the others go on). The recover is per batch, not
// per event, so the loop pays for it once per wait.
func (l *evLoop) handle(events []unix.EpollEvent, i int) (next int) {
	defer func() {
		if r := recover(); r != nil {
			l.recovered(r, debug.Stack())
			next = i + 1
		}
	}()
	for ; i < len(events); i++ {
		ev := &events[i]
		if int(ev.Fd) == l.efd {
			l.runInbox()
			continue
		}
		o, ok := l.fds[ev.Fd]
		if !ok || o.seq != ev.Pad {
			continue
		}
		l.cur = o
		in := ev.Events&(unix.EPOLLIN|unix.EPOLLHUP|unix.EPOLLERR) != 0
		out := ev.Events&(unix.EPOLLOUT|unix.EPOLLHUP|unix.EPOLLERR) != 0
		switch {
		case o.c != nil:
			c := o.c
			if out && c.epollOut {
				l.flushClient(c)
			}
			if in && c.state != cGone && !c.inPaused {
				l.clientReadable(c)
			}
		case o.u != nil:
			u := o.u
			if out && u.epollOut {
				l.upWritable(u)
			}
			if in && u.fd >= 0 && !u.paused && u.state != uConnecting {
				l.upReadable(u)
			}
		}
	}
	return i
}

// recovered ends what a panic interrupted: the connection the loop was
// working for (l.cur), with the slice connection it was using, is closed,
// since its state is no longer known; every other connection of the loop
// goes on as if nothing happened. A panic is a bug, logged with its stack
// and counted (slicehub_gateway_loop_panics_total).
func (l *evLoop) recovered(r any, stack []byte) {
	cur := l.cur
	l.cur = fdOwner{}
	e := l.e
	e.m.Panics.Inc()
	e.log.Error("event loop: panic; closing the connection it was serving", "panic", r, "stack", string(stack))
	defer func() {
		// Closing met the broken state again: leave it, rather than the loop.
		if r := recover(); r != nil {
			e.log.Error("event loop: panic while closing after a panic", "panic", r)
		}
	}()
	if u := cur.u; u != nil {
		if c := u.c; c != nil {
			l.closeClient(c) // and u with it
		}
		l.closeUp(u)
	}
	if c := cur.c; c != nil {
		l.closeClient(c)
	}
}

// ticker has the loop sweep every tick (timeouts), until it stops.
func (l *evLoop) ticker() {
	t := time.NewTicker(l.e.tick)
	defer t.Stop()
	for range t.C {
		if !l.post((*evLoop).sweep) {
			return
		}
	}
}

func (l *evLoop) runInbox() {
	var b [8]byte
	_, _ = unix.Read(l.efd, b[:])
	l.mu.Lock()
	fs := l.inbox
	l.inbox = l.spare[:0]
	l.mu.Unlock()
	for i := 0; i < len(fs); {
		i = l.runFrom(fs, i)
	}
	clear(fs)
	l.spare = fs
}

// runFrom runs fs from i on, as handle serves events: a panic in one
// (an adopted connection's first request, a resolved one's retry) closes
// the connection it set as l.cur, and the rest still run.
func (l *evLoop) runFrom(fs []func(*evLoop), i int) (next int) {
	defer func() {
		if r := recover(); r != nil {
			l.recovered(r, debug.Stack())
			next = i + 1
		}
	}()
	for ; i < len(fs); i++ {
		l.cur = fdOwner{}
		fs[i](l)
	}
	return i
}

// epoll registration

// ctl changes fd's registration. seq, in the event's spare word, names the
// registration: a descriptor closed and reused within one batch of events
// must not get the events of the connection it replaced.
func (l *evLoop) ctl(op, fd int, seq int32, events uint32) error {
	return unix.EpollCtl(l.epfd, op, fd, &unix.EpollEvent{Events: events, Fd: int32(fd), Pad: seq})
}

func (l *evLoop) nextSeq() int32 {
	l.seq++
	return l.seq
}

func (l *evLoop) clientEvents(c *lconn) uint32 { return epollEvents(!c.inPaused, c.epollOut) }

func (l *evLoop) upEvents(u *uconn) uint32 { return epollEvents(!u.paused, u.epollOut) }

// epollEvents is the interest set: reading unless paused, writing while
// bytes wait.
func epollEvents(in, out bool) uint32 {
	var ev uint32
	if in {
		ev |= unix.EPOLLIN
	}
	if out {
		ev |= unix.EPOLLOUT
	}
	return ev
}

func (l *evLoop) adopt(c *lconn) {
	if l.stopped || l.drained {
		unix.Close(c.fd)
		l.e.connGone()
		return
	}
	c.seq = l.nextSeq()
	if err := l.ctl(unix.EPOLL_CTL_ADD, c.fd, c.seq, unix.EPOLLIN); err != nil {
		unix.Close(c.fd)
		l.e.connGone()
		return
	}
	l.fds[int32(c.fd)] = fdOwner{c: c, seq: c.seq}
	l.cur = fdOwner{c: c, seq: c.seq}
	l.now = time.Now().UnixNano()
	head := c.in
	c.in = nil
	c.reading = true
	c.deadline = l.now + int64(l.e.cfg.ReadTimeout)
	l.serve(c, head)
}

// client side

func (l *evLoop) clientReadable(c *lconn) {
	if c.state != cIdle {
		// Pipelined bytes, or the browser going away, while the previous
		// request is with the slice or its answer is being written.
		if len(c.in) >= loopPipelineCap {
			c.inPaused = true
			_ = l.ctl(unix.EPOLL_CTL_MOD, c.fd, c.seq, l.clientEvents(c))
			return
		}
		n, err := readFD(c.fd, l.buf)
		switch {
		case n > 0:
			c.in = append(c.in, l.buf[:n]...)
		case err == nil:
			// A half close: the browser has sent all it will, and still
			// reads. It gets the answers to what it has sent, then the
			// connection ends, as fasthttp's server does.
			c.eof = true
			c.inPaused = true
			_ = l.ctl(unix.EPOLL_CTL_MOD, c.fd, c.seq, l.clientEvents(c))
		case err != unix.EAGAIN:
			l.closeClient(c)
		}
		return
	}
	n, err := readFD(c.fd, l.buf)
	if n <= 0 {
		switch {
		case err == nil && len(c.in) > 0:
			// A half close in the middle of a request: as above, the
			// server answers what is left.
			l.handOff(c, c.in)
		case err != unix.EAGAIN:
			l.closeClient(c)
		}
		return
	}
	data := l.buf[:n]
	if len(c.in) > 0 {
		c.in = append(c.in, data...)
		data = c.in
	} else if !c.reading {
		c.reading = true
		c.deadline = l.now + int64(l.e.cfg.ReadTimeout)
	}
	l.serve(c, data)
}

// keep makes data, what is left unread of the browser's bytes, c.in. data
// may be the loop's read buffer or lie inside c.in.
func (c *lconn) keep(data []byte) {
	if len(data) == 0 {
		c.in = c.in[:0]
		if cap(c.in) > 4<<10 {
			c.in = nil
		}
		return
	}
	if len(c.in) > 0 && &data[0] == &c.in[:cap(c.in)][len(c.in)-len(data)] && len(c.in) >= len(data) {
		c.in = c.in[:copy(c.in, data)] // a tail of c.in: move it to the front
		return
	}
	c.in = append(c.in[:0], data...)
}

// serve takes the next request from data (everything the browser has sent
// and the loop has not used), when it is whole.
func (l *evLoop) serve(c *lconn, data []byte) {
	e := l.e
	cfg := &e.cfg
	headLen := HeadEnd(data)
	if headLen < 0 {
		if len(data) >= cfg.MaxHeaderBytes {
			l.handOff(c, data) // the server answers 431
			return
		}
		c.keep(data)
		return
	}
	if headLen > cfg.MaxHeaderBytes {
		l.handOff(c, data) // over the server's read buffer: it answers 431
		return
	}
	ctx := &l.ctx
	h := &ctx.Request.Header
	if used, err := l.parseRequest(data[:headLen]); err != nil || used != headLen {
		// The server answers 400; or fasthttp's parser ends this head
		// elsewhere than headEnd does, and only the server's split counts.
		l.handOff(c, data)
		return
	}
	cl := h.ContentLength()
	if cl == -2 {
		cl = 0 // no Content-Length and not chunked: no body (-1 is chunked)
	}
	if !h.IsHTTP11() || cl < 0 || cl > cfg.BufferedBodyLimit || len(h.Peek(fasthttp.HeaderExpect)) > 0 {
		l.handOff(c, data)
		return
	}
	total := headLen + cl
	if len(data) < total {
		c.keep(data)
		return
	}
	if OriginPath(h.RequestURI()) == nil {
		l.handOff(c, data) // another form of target: the server's
		return
	}
	ctx.SetRemoteAddr(c.raddr)
	d := &l.dec
	*d = Decision{}
	switch e.host.Decide(ctx, d) {
	case HandOff:
		l.handOff(c, data)
		return
	case Resolve:
		if c.resolves > 0 || d.Resolve == nil {
			l.handOff(c, data) // still a miss: the server reads the database and answers
			return
		}
		c.resolves++
		c.keep(data)
		c.state = cResolve
		l.resolve(c, d.Resolve)
		return
	case Forward:
	}
	c.resolves = 0
	p := l.pool(d.Addr)
	if p == nil || (p.total >= cfg.UpstreamMaxConns && len(p.idle) == 0) {
		l.handOff(c, data) // an address the loop cannot dial itself, or a full pool
		return
	}
	start := time.Now()
	c.closeAfter = h.ConnectionClose()
	c.isHead = h.IsHead()
	c.idempotent = h.IsGet() || h.IsHead() || h.IsPut() || h.IsOptions() || h.IsDelete()
	if t := h.RequestURI(); len(sliceTarget(t)) != len(t) {
		h.SetRequestURIBytes(sliceTarget(t))
	}
	e.host.Prepare(ctx, d)
	e.m.Overhead.Observe(time.Since(start).Seconds())
	c.req = h.AppendBytes(c.req[:0])
	c.req = append(c.req, data[headLen:total]...)
	c.keep(data[total:])
	c.class, c.start, c.sliceID, c.addr = d.Class, start, d.SliceID, d.Addr
	c.state, c.reading, c.deadline = cProxy, false, 0
	c.attempts, c.status, c.answered = 0, 0, false
	l.dispatch(c, p)
}

// resolve fills the caches off the loop, then serves c's request again.
func (l *evLoop) resolve(c *lconn, fill func()) {
	gen := c.gen
	go func() {
		defer func() {
			// Off the loop, but a panic here would end the process, and
			// every connection of every loop with it.
			if r := recover(); r != nil {
				stack := debug.Stack()
				l.post(func(l *evLoop) {
					if c.gen == gen {
						l.cur = fdOwner{c: c, seq: c.seq}
					}
					l.recovered(r, stack)
				})
			}
		}()
		fill()
		l.post(func(l *evLoop) {
			if c.gen != gen || c.state != cResolve {
				return
			}
			l.cur = fdOwner{c: c, seq: c.seq}
			c.state = cIdle
			l.serve(c, c.in)
		})
	}()
}

// handOff gives c, and data (every byte of it not yet used), to the
// fasthttp server. While the browser has not taken all of the previous
// answer (a pipelined request behind it), the connection waits for it in
// cHandOff: the server would otherwise write before those bytes, or they
// would be lost with the loop's buffer. flushClient hands it on then.
func (l *evLoop) handOff(c *lconn, data []byte) {
	if c.outOff < len(c.out) {
		c.keep(data)
		c.state, c.reading = cHandOff, false
		if wt := l.e.cfg.WriteTimeout; wt > 0 {
			c.deadline = l.now + int64(wt)
		}
		return
	}
	pending := bytes.Clone(data)
	fd := c.fd
	l.forget(c)
	f := os.NewFile(uintptr(fd), "client")
	nc, err := net.FileConn(f) // a duplicate, in Go's poller
	f.Close()
	if err != nil {
		l.e.log.Warn("event loop: handing a connection on", "err", err)
		return
	}
	l.e.m.HandOffs.Inc()
	go func() {
		if !l.e.handOff(nc, pending) {
			nc.Close()
		}
	}()
}

// forget removes c from the loop without closing its descriptor.
func (l *evLoop) forget(c *lconn) {
	_ = l.ctl(unix.EPOLL_CTL_DEL, c.fd, c.seq, 0)
	delete(l.fds, int32(c.fd))
	c.state = cGone
	c.gen++
	c.fd = -1
	l.e.connGone()
	if u := c.up; u != nil {
		c.up = nil
		u.c = nil
		l.closeUp(u)
	}
}

func (l *evLoop) closeClient(c *lconn) {
	if c.state == cGone {
		return
	}
	fd := c.fd
	l.forget(c)
	unix.Close(fd)
}

// send writes p to the browser, keeping what it cannot take now. The
// caller must not use c afterwards if it returns false (c is closed).
func (l *evLoop) send(c *lconn, p []byte) bool {
	if len(c.out) > c.outOff {
		c.out = append(c.out, p...)
		return true
	}
	for len(p) > 0 {
		n, err := writeFD(c.fd, p)
		if n > 0 {
			p = p[n:]
			continue
		}
		if err == unix.EAGAIN {
			break
		}
		l.closeClient(c)
		return false
	}
	if len(p) > 0 {
		c.out = append(c.out[:0], p...)
		c.outOff = 0
		c.epollOut = true
		_ = l.ctl(unix.EPOLL_CTL_MOD, c.fd, c.seq, l.clientEvents(c))
		if wt := l.e.cfg.WriteTimeout; wt > 0 {
			c.deadline = l.now + int64(wt)
		}
	}
	return true
}

func (l *evLoop) flushClient(c *lconn) {
	for c.outOff < len(c.out) {
		n, err := writeFD(c.fd, c.out[c.outOff:])
		if n > 0 {
			c.outOff += n
			continue
		}
		if err == unix.EAGAIN {
			return
		}
		l.closeClient(c)
		return
	}
	c.out, c.outOff = c.out[:0], 0
	if cap(c.out) > loopReadBuf {
		c.out = nil
	}
	c.epollOut = false
	_ = l.ctl(unix.EPOLL_CTL_MOD, c.fd, c.seq, l.clientEvents(c))
	switch {
	case c.state == cClosing:
		l.closeClient(c)
	case c.state == cHandOff:
		l.handOff(c, c.in)
	case c.state == cProxy:
		c.deadline = 0
		if u := c.up; u != nil && u.paused {
			u.paused = false
			u.deadline = l.now + int64(l.e.cfg.ProxyTimeout)
			_ = l.ctl(unix.EPOLL_CTL_MOD, u.fd, u.seq, l.upEvents(u))
		}
	case c.state == cIdle:
		c.deadline = l.idleDeadline(c)
	}
}

func (l *evLoop) idleDeadline(c *lconn) int64 {
	if len(c.in) > 0 {
		return l.now + int64(l.e.cfg.ReadTimeout)
	}
	if it := l.e.cfg.IdleTimeout; it > 0 {
		return l.now + int64(it)
	}
	return l.now + int64(l.e.cfg.ReadTimeout)
}

// finish ends c's request once its answer has been handed to send.
func (l *evLoop) finish(c *lconn) {
	if cap(c.req) > 4<<10 {
		c.req = nil
	}
	if c.closeAfter || l.drained || (c.eof && len(c.in) == 0) {
		c.state = cClosing
		if c.outOff >= len(c.out) {
			l.closeClient(c)
		}
		return
	}
	c.state = cIdle
	c.reading = len(c.in) > 0
	c.deadline = l.idleDeadline(c)
	if c.inPaused {
		c.inPaused = false
		_ = l.ctl(unix.EPOLL_CTL_MOD, c.fd, c.seq, l.clientEvents(c))
	}
	if len(c.in) > 0 {
		l.serve(c, c.in) // a pipelined request
		if c.eof && c.state == cIdle {
			// The start of a request whose rest will never come: the
			// server says what it says to that (400), or closes.
			l.handOff(c, c.in)
		}
	}
}

// reader is the loop's bufio.Reader over p: fasthttp parses heads from a
// bufio.Reader, and one reader, reset, serves every head.
func (l *evLoop) reader(p []byte) *bufio.Reader {
	l.src.Reset(p)
	l.br.Reset(&l.src)
	return l.br
}

// parseRequest makes the loop's request context the request whose head
// is in head, and reports how many bytes of it fasthttp's parser used.
func (l *evLoop) parseRequest(head []byte) (int, error) {
	l.ctx.Request.Reset()
	l.ctx.Response.Reset()
	err := l.ctx.Request.Header.Read(l.reader(head))
	return len(head) - l.src.Len() - l.br.Buffered(), err
}

// answerError answers c's request, which the slice failed, as front would.
func (l *evLoop) answerError(c *lconn, err error) {
	e := l.e
	ctx := &l.ctx
	_, _ = l.parseRequest(c.req) // it parsed when it was built
	ctx.SetRemoteAddr(c.raddr)
	e.log.Warn("slice request failed", "slice_id", c.sliceID, "addr", c.addr, "err", err)
	e.host.AnswerError(ctx, err)
	resp := &ctx.Response
	c.status = resp.StatusCode()
	e.m.Count(c.class, c.status)
	l.writeHeadPrefix(c, &resp.Header)
	resp.Header.SetContentLength(len(resp.Body())) // as Response.Write does
	out := resp.Header.AppendBytes(l.wbuf[:0])
	if !c.isHead {
		out = append(out, resp.Body()...)
	}
	l.wbuf = out[:0]
	c.answered = true
	if l.send(c, out) {
		l.finish(c)
	}
}

// writeHeadPrefix sets what fasthttp's server sets on every answer.
func (l *evLoop) writeHeadPrefix(c *lconn, h *fasthttp.ResponseHeader) {
	if l.e.serverName != nil && len(h.Server()) == 0 {
		h.SetServerBytes(l.e.serverName)
	}
	h.ResetConnectionClose()
	if c.closeAfter || l.drained {
		h.SetConnectionClose()
	}
}

// slice side

func (l *evLoop) pool(addr string) *upool {
	if p := l.pools[addr]; p != nil {
		return p
	}
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return nil // a name: the server's HostClient resolves those
	}
	p := &upool{addr: addr}
	ip := ap.Addr().Unmap()
	if ip.Is4() {
		p.family, p.sa = unix.AF_INET, &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ip.As4()}
	} else {
		p.family, p.sa = unix.AF_INET6, &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ip.As16()}
	}
	l.pools[addr] = p
	return p
}

// dispatch sends c.req to a connection from p: an idle one, or a new one.
func (l *evLoop) dispatch(c *lconn, p *upool) {
	cfg := &l.e.cfg
	p.used = l.now
	c.attempts++
	var u *uconn
	if n := len(p.idle); n > 0 {
		u = p.idle[n-1]
		p.idle[n-1] = nil
		p.idle = p.idle[:n-1]
		u.reused = true
		u.state = uWriting
	} else {
		fd, err := unix.Socket(p.family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			l.answerError(c, err)
			return
		}
		_ = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1)
		u = &uconn{fd: fd, pool: p, state: uConnecting, epollOut: true}
		err = unix.Connect(fd, p.sa)
		if err != nil && err != unix.EINPROGRESS {
			unix.Close(fd)
			l.answerError(c, err)
			return
		}
		if err == nil {
			u.state = uWriting
		}
		u.seq = l.nextSeq()
		if err := l.ctl(unix.EPOLL_CTL_ADD, fd, u.seq, unix.EPOLLIN|unix.EPOLLOUT); err != nil {
			unix.Close(fd)
			l.answerError(c, err)
			return
		}
		l.fds[int32(fd)] = fdOwner{u: u, seq: u.seq}
		p.total++
	}
	u.c, c.up = c, u
	u.out = c.req
	u.head = u.head[:0]
	u.gotByte, u.keepAlive, u.paused = false, true, false
	u.chunks = chunkScanner{}
	if u.state == uConnecting {
		u.deadline = l.now + int64(cfg.DialTimeout)
		return // upWritable continues
	}
	u.deadline = l.now + int64(cfg.ProxyTimeout)
	l.upWrite(u)
}

func (l *evLoop) upWritable(u *uconn) {
	if u.state == uConnecting {
		errno, err := unix.GetsockoptInt(u.fd, unix.SOL_SOCKET, unix.SO_ERROR)
		if err == nil && errno != 0 {
			err = unix.Errno(errno)
		}
		if err != nil {
			l.upFailed(u, &net.OpError{Op: "dial", Net: "tcp", Err: err})
			return
		}
		u.state = uWriting
		u.deadline = l.now + int64(l.e.cfg.ProxyTimeout)
	}
	l.upWrite(u)
}

func (l *evLoop) upWrite(u *uconn) {
	for len(u.out) > 0 {
		n, err := writeFD(u.fd, u.out)
		if n > 0 {
			u.out = u.out[n:]
			continue
		}
		if err == unix.EAGAIN {
			if !u.epollOut {
				u.epollOut = true
				_ = l.ctl(unix.EPOLL_CTL_MOD, u.fd, u.seq, l.upEvents(u))
			}
			return
		}
		l.upFailed(u, err)
		return
	}
	if u.state == uWriting {
		u.state = uHead
	}
	if u.epollOut {
		u.epollOut = false
		_ = l.ctl(unix.EPOLL_CTL_MOD, u.fd, u.seq, l.upEvents(u))
	}
}

func (l *evLoop) upReadable(u *uconn) {
	c := u.c
	if c == nil {
		l.closeUp(u) // idle: the slice closed it, or sent what nobody asked for
		return
	}
	if c.outOff < len(c.out) {
		// The browser has not taken the last bytes: read no more from the
		// slice until it has (backpressure, not a growing buffer).
		// The slice is not the slow one: its timeout waits too.
		u.paused = true
		u.deadline = 0
		_ = l.ctl(unix.EPOLL_CTL_MOD, u.fd, u.seq, l.upEvents(u))
		return
	}
	n, err := readFD(u.fd, l.buf)
	if n <= 0 {
		if err == unix.EAGAIN {
			return
		}
		if err == nil && u.state == uBody && u.mode == bodyClose {
			u.keepAlive = false
			if l.send(u.c, lastChunk) {
				l.upDone(u)
			}
			return
		}
		if err == nil {
			err = io.ErrUnexpectedEOF
		}
		l.upFailed(u, err)
		return
	}
	u.gotByte = true
	u.deadline = l.now + int64(l.e.cfg.ProxyTimeout)
	if u.state == uHead || u.state == uWriting { // an answer may come before the request is all sent
		l.upHead(u, l.buf[:n])
		return
	}
	l.upBody(u, l.buf[:n], nil)
}

var errBadAnswer = errors.New("malformed answer from the slice")

// lastChunk ends a chunked body that has no trailers.
var lastChunk = []byte("0\r\n\r\n")

func (l *evLoop) upHead(u *uconn, data []byte) {
	c := u.c
	if len(u.head) > 0 {
		u.head = append(u.head, data...)
		data = u.head
	}
	for {
		end := bytes.Index(data, crlfcrlf)
		if end < 0 && len(data) == 0 {
			u.head = u.head[:0]
			return
		}
		if end < 0 {
			if len(data) > l.e.cfg.MaxHeaderBytes {
				l.upFailed(u, errBadAnswer)
				return
			}
			if len(u.head) == 0 || &data[0] != &u.head[0] {
				u.head = append(u.head[:0], data...)
			}
			return
		}
		h := &l.resp
		h.Reset()
		if err := h.Read(l.reader(data[:end+4])); err != nil {
			l.upFailed(u, errBadAnswer)
			return
		}
		data = data[end+4:]
		status := h.StatusCode()
		if status < 200 {
			if status == fasthttp.StatusSwitchingProtocols {
				l.upFailed(u, errBadAnswer)
				return
			}
			continue // 100 Continue, 103 Early Hints: the browser gets the final answer
		}
		switch cl := h.ContentLength(); {
		case c.isHead || status == fasthttp.StatusNoContent || status == fasthttp.StatusNotModified:
			u.mode = bodyNone
		case cl >= 0:
			u.mode, u.remain = bodyLength, int64(cl)
		case cl == -1:
			u.mode = bodyChunked
		default:
			// Until the slice closes. The server path reads such a body
			// whole and answers it with a length; the loop streams it,
			// chunked, so that the browser's connection lives on as it does
			// there (and a cut is a cut, not a shorter answer).
			u.mode = bodyClose
			h.SetContentLength(-1)
		}
		u.keepAlive = !h.ConnectionClose()
		l.e.host.StripResponse(h)
		l.writeHeadPrefix(c, h)
		u.state = uBody
		c.status = status
		c.answered = true
		l.e.m.Count(c.class, status)
		l.e.m.Latency(c.class, time.Since(c.start))
		prefix := h.AppendBytes(l.wbuf[:0])
		l.wbuf = prefix[:0]
		l.upBody(u, data, prefix)
		if len(u.head) > 0 {
			u.head = u.head[:0]
			if cap(u.head) > 4<<10 {
				u.head = nil
			}
		}
		return
	}
}

// upBody relays data, the next bytes of the slice's answer, after prefix
// (the rendered head, or nil), and ends the request at the answer's end.
func (l *evLoop) upBody(u *uconn, data, prefix []byte) {
	c := u.c
	take, done := 0, false
	switch u.mode {
	case bodyNone:
		done = true
	case bodyLength:
		take = int(min(int64(len(data)), u.remain))
		u.remain -= int64(take)
		done = u.remain == 0
	case bodyChunked:
		var err error
		take, done, err = u.chunks.scan(data, l.e.cfg.MaxHeaderBytes)
		if err != nil {
			l.upFailed(u, errBadAnswer)
			return
		}
	case bodyClose:
		take = len(data)
	}
	if take < len(data) {
		u.keepAlive = false // bytes after the answer: the connection is not to be trusted
	}
	out := data[:take]
	if u.mode == bodyClose && len(out) > 0 { // one chunk (see upHead)
		framed := strconv.AppendInt(l.wbuf[:len(prefix)], int64(len(out)), 16) // prefix is l.wbuf's start
		framed = append(append(append(framed, '\r', '\n'), out...), '\r', '\n')
		out, prefix = framed, nil
		l.wbuf = framed[:0]
	}
	if len(prefix) > 0 {
		out = append(prefix, out...)
		l.wbuf = out[:0]
	}
	if len(out) > 0 && !l.send(c, out) {
		return // the browser is gone, and the slice connection with it
	}
	if done {
		l.upDone(u)
	}
}

// upDone ends the slice's answer: the connection goes back to its pool
// (or is closed) and the browser's connection waits for its next request.
func (l *evLoop) upDone(u *uconn) {
	c := u.c
	u.c, c.up = nil, nil
	if len(u.out) > 0 {
		// The slice answered before reading the whole request: what is left
		// of it would be read as the next request.
		u.keepAlive = false
	}
	if u.keepAlive && !l.drained {
		u.state = uIdle
		u.deadline = l.now + int64(l.e.cfg.UpstreamIdleConnTimeout)
		u.pool.idle = append(u.pool.idle, u)
	} else {
		l.closeUp(u)
	}
	l.finish(c)
}

// upFailed ends a slice connection that failed, and answers or retries the
// request it carried.
func (l *evLoop) upFailed(u *uconn, err error) {
	c := u.c
	retry := u.reused && !u.gotByte && u.state != uConnecting
	u.c = nil
	l.closeUp(u)
	if c == nil {
		return
	}
	c.up = nil
	if c.answered {
		l.closeClient(c) // mid-answer: the browser can only see it cut
		return
	}
	if retry && c.idempotent && c.attempts < 2 && !isTimeout(err) {
		// A pooled connection the slice had closed: send it again, once, as
		// fasthttp's RetryIfErr does.
		if p := l.pool(c.addr); p != nil {
			l.dispatch(c, p)
			return
		}
	}
	l.answerError(c, err)
}

func (l *evLoop) closeUp(u *uconn) {
	if u.fd < 0 {
		return
	}
	if u.state == uIdle {
		p := u.pool
		for i, x := range p.idle {
			if x == u {
				p.idle = append(p.idle[:i], p.idle[i+1:]...)
				break
			}
		}
	}
	delete(l.fds, int32(u.fd))
	unix.Close(u.fd) // closing removes it from the epoll set
	u.fd = -1
	u.pool.total--
}

// sweep enforces the timeouts, and drops pools unused for a while.
func (l *evLoop) sweep() {
	now := l.now
	defer func() { l.cur = fdOwner{} }()
	for _, o := range l.fds {
		l.cur = o
		switch {
		case o.c != nil:
			c := o.c
			if c.deadline != 0 && now > c.deadline && c.state != cGone {
				l.closeClient(c)
			}
		case o.u != nil:
			u := o.u
			if u.deadline == 0 || now <= u.deadline || u.fd < 0 {
				continue
			}
			switch u.state {
			case uIdle:
				l.closeUp(u)
			case uConnecting:
				l.upFailed(u, fasthttp.ErrDialTimeout)
			default:
				l.upFailed(u, fasthttp.ErrTimeout)
			}
		}
	}
	for addr, p := range l.pools {
		if p.total == 0 && now-p.used > int64(5*time.Minute) {
			delete(l.pools, addr)
		}
	}
}

// drain starts a graceful shutdown: idle browsers are closed now, the
// others after their answer.
func (l *evLoop) drain() {
	l.drained = true
	for _, o := range l.fds {
		if c := o.c; c != nil && c.state == cIdle && len(c.in) == 0 && c.outOff >= len(c.out) {
			l.closeClient(c)
		}
		if u := o.u; u != nil && u.state == uIdle {
			l.closeUp(u)
		}
	}
}

func (l *evLoop) closeAll() {
	for _, o := range l.fds {
		if o.c != nil {
			l.closeClient(o.c)
		}
	}
	for _, o := range l.fds {
		if o.u != nil {
			l.closeUp(o.u)
		}
	}
	l.mu.Lock()
	l.closed = true
	unix.Close(l.efd)
	l.mu.Unlock()
	l.pf.Close() // the epoll descriptor, leaving the runtime's poller first
}

// readFD and writeFD are recv(2) and send(2) on a non-blocking socket.
// They never block, so they skip the runtime's system-call bookkeeping
// (entersyscall/exitsyscall, a scheduler round trip each), as the
// runtime's own poller does. recvfrom and sendto, not read and write: they
// go straight to the socket, past the file layer, as nginx's do. p must
// not be empty.
func readFD(fd int, p []byte) (int, error) { return sockIO(unix.SYS_RECVFROM, fd, p, 0) }

func writeFD(fd int, p []byte) (int, error) {
	return sockIO(unix.SYS_SENDTO, fd, p, unix.MSG_NOSIGNAL)
}

func sockIO(trap uintptr, fd int, p []byte, flags uintptr) (int, error) {
	for {
		n, _, e := unix.RawSyscall6(trap, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)), flags, 0, 0)
		switch e {
		case 0:
			return int(n), nil
		case unix.EINTR:
			continue
		}
		return 0, e
	}
}
