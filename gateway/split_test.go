package gateway

import (
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

func TestIsWebSocketHead(t *testing.T) {
	for head, want := range map[string]bool{
		"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n": true,
		"GET / HTTP/1.1\r\nHost: x\r\nupgrade:   WebSocket \r\n\r\n":                                                         true,
		"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\n\r\n":                                                                  false,
		"GET / HTTP/1.1\r\nHost: x\r\nX-Upgrade: websocket\r\n\r\n":                                                          false,
		"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 20\r\n\r\nUpgrade: websocket\r\n":                                     false, // a body is not a header
		"GET / HTTP/1.1\r\nUpgrade: websocket\r\n":                                                                           false, // no end of head
	} {
		if got := isWebSocketHead([]byte(head)); got != want {
			t.Errorf("isWebSocketHead(%q) = %v, want %v", head, got, want)
		}
	}
}

// The splitter hands each connection to the server for its first request
// with every byte it peeked given back in order, and closes a connection
// that sends nothing within the peek timeout.
func TestSplitterRoutesAndReplays(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sp := newSplitter(ln.Addr(), 300*time.Millisecond, 1024)
	done := make(chan error, 1)
	go func() { done <- sp.run(ln) }()

	send := func(raw string) net.Conn {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if _, err := io.WriteString(c, raw); err != nil {
			t.Fatal(err)
		}
		return c
	}
	accept := func(l *chanListener, what string) net.Conn {
		got := make(chan net.Conn, 1)
		go func() {
			c, err := l.Accept()
			if err == nil {
				got <- c
			}
		}()
		select {
		case c := <-got:
			return c
		case <-time.After(5 * time.Second):
			t.Fatalf("%s never reached its server", what)
			return nil
		}
	}
	ws := "GET /socket.io/ HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\nFRAME"
	plain := "POST /api/x HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nbody"
	send(ws)
	c := accept(sp.wsLn, "the WebSocket handshake")
	if b := readN(t, c, len(ws)); b != ws {
		t.Fatalf("the WebSocket server read %q, want %q", b, ws)
	}
	send(plain)
	c = accept(sp.httpLn, "the plain request")
	if b := readN(t, c, len(plain)); b != plain {
		t.Fatalf("the HTTP server read %q, want %q", b, plain)
	}
	// A head longer than the peek goes to the HTTP server, which answers 431.
	long := "GET / HTTP/1.1\r\nX-Pad: " + strings.Repeat("a", 2000) + "\r\n\r\n"
	send(long)
	c = accept(sp.httpLn, "the oversized head")
	if b := readN(t, c, len(long)); b != long {
		t.Fatal("the oversized head was not replayed whole")
	}
	// Silent: closed by the splitter, never handed on.
	silent := send("GET / HT")
	silent.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := silent.Read(make([]byte, 1)); err == nil {
		t.Fatal("a connection that never finished its head got an answer")
	}
	ln.Close()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the splitter did not stop with its listener")
	}
	if _, err := sp.httpLn.Accept(); err == nil {
		t.Fatal("the servers' listeners stay open after the splitter stopped")
	}
}

func readN(t *testing.T, c net.Conn, n int) string {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b := make([]byte, n)
	if _, err := io.ReadFull(c, b); err != nil {
		t.Fatalf("reading %d bytes: %v", n, err)
	}
	return string(b)
}
