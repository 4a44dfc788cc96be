package gateway

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/slicehub/slicehub"
)

// Oversized and slow requests against the gateway, on loopback with small
// limits (Config) so that the tests take well under a second each.

const (
	hostileReadTimeout = 400 * time.Millisecond
	hostileHeaderBytes = 4 << 10
	hostileBodyLimit   = 64 << 10
)

func hostileEnv(t *testing.T) (*testEnv, *testUser, *spySlice) {
	e := newEnv(t, func(c *Config, _ *Deps) {
		c.ReadTimeout = hostileReadTimeout
		c.MaxHeaderBytes = hostileHeaderBytes
		c.BodyLimit = hostileBodyLimit
	})
	u := e.signup("hugo@example.com")
	s := newSpySlice(t, 601)
	e.slices.set(u.id, slicehub.Slice{ID: s.id, State: slicehub.StateAssigned, UserID: u.id})
	e.routes.set(s.id, s.addr())
	e.srv.Invalidate(u.id)
	return e, u, s
}

// send writes raw (tolerating the gateway closing early, as it may once it
// has answered) and reads the one response.
func sendRaw(t *testing.T, host, raw string) (*http.Response, []byte) {
	t.Helper()
	conn, err := net.Dial("tcp", host)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	go func() { _, _ = io.WriteString(conn, raw) }() // a refusal may come before the gateway has read it all
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no response: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, body
}

func wantJSONError(t *testing.T, what string, resp *http.Response, body []byte, statuses ...int) {
	t.Helper()
	ok := false
	for _, s := range statuses {
		ok = ok || resp.StatusCode == s
	}
	if !ok {
		t.Fatalf("%s: status %d, want one of %v; body %q", what, resp.StatusCode, statuses, body)
	}
	r := &result{status: resp.StatusCode, header: resp.Header, body: body}
	r.errorCode(t)
}

func TestOversizedHeaders(t *testing.T) {
	e, u, spy := hostileEnv(t)
	cookie := "Cookie: " + slicehub.SessionCookie + "=" + e.sessionToken(u) + "\r\n"
	for name, hdr := range map[string]string{
		"one huge header":   "X-Big: " + strings.Repeat("a", 2*hostileHeaderBytes) + "\r\n",
		"many small ones":   strings.Repeat("X-Small: aaaaaaaaaaaaaaaa\r\n", 2*hostileHeaderBytes/26),
		"a huge cookie":     "Cookie: big=" + strings.Repeat("b", 2*hostileHeaderBytes) + "\r\n",
		"a huge URI":        "X-Pad: 1\r\n",
		"a huge header key": strings.Repeat("K", 2*hostileHeaderBytes) + ": 1\r\n",
	} {
		t.Run(name, func(t *testing.T) {
			target := "/api/x"
			if name == "a huge URI" {
				target += "?q=" + strings.Repeat("u", 2*hostileHeaderBytes)
			}
			raw := "GET " + target + " HTTP/1.1\r\nHost: " + e.host + "\r\n" + cookie + hdr + "\r\n"
			resp, body := sendRaw(t, e.host, raw)
			wantJSONError(t, name, resp, body, http.StatusRequestHeaderFieldsTooLarge)
		})
	}
	if n := len(spy.requests()); n != 0 {
		t.Fatalf("oversized requests reached the slice %d times", n)
	}
}

func TestOversizedBodies(t *testing.T) {
	e, u, spy := hostileEnv(t)
	head := "POST /api/x HTTP/1.1\r\nHost: " + e.host + "\r\nCookie: " + slicehub.SessionCookie + "=" + e.sessionToken(u) +
		"\r\nContent-Type: application/octet-stream\r\n"
	big := strings.Repeat("z", 2*hostileBodyLimit)
	chunked := strconv.FormatInt(int64(len(big)), 16) + "\r\n" + big + "\r\n0\r\n\r\n"
	for name, raw := range map[string]string{
		"declared":          head + "Content-Length: " + strconv.Itoa(len(big)) + "\r\n\r\n" + big,
		"declared, no body": head + "Content-Length: 1099511627776\r\n\r\n",
		"chunked":           head + "Transfer-Encoding: chunked\r\n\r\n" + chunked,
		"auth endpoint":     "POST /auth/login HTTP/1.1\r\nHost: " + e.host + "\r\nContent-Type: application/json\r\nContent-Length: " + strconv.Itoa(len(big)) + "\r\n\r\n" + big,
	} {
		t.Run(name, func(t *testing.T) {
			resp, body := sendRaw(t, e.host, raw)
			want := []int{http.StatusRequestEntityTooLarge}
			if name == "declared, no body" {
				// A body over BufferedBodyLimit streams, and fasthttp reads
				// its first 8 KiB before any handler can look at the
				// declared length; a client that sends none of it is cut
				// off at ReadTimeout like any other slow client.
				want = append(want, http.StatusRequestTimeout)
			}
			wantJSONError(t, name, resp, body, want...)
		})
	}
	if n := len(spy.requests()); n != 0 {
		t.Fatalf("oversized bodies reached the slice %d times", n)
	}
	// Just under the limit still passes.
	resp, body := sendRaw(t, e.host, head+"Origin: http://"+e.host+"\r\nContent-Length: "+strconv.Itoa(hostileBodyLimit-1)+"\r\n\r\n"+
		strings.Repeat("y", hostileBodyLimit-1))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("a body under the limit: %d %s", resp.StatusCode, body)
	}
}

// trickle writes raw one byte at a time, paced by a ticker, until the
// gateway closes the connection or raw runs out. It returns how long the
// connection lived and whether the gateway cut it before the end.
func trickle(host, raw string, every time.Duration) (time.Duration, bool, error) {
	conn, err := net.Dial("tcp", host)
	if err != nil {
		return 0, false, err
	}
	defer conn.Close()
	start := time.Now()
	// The gateway answers (408 or nothing) and closes; the reader notices.
	closed := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, conn)
		close(closed)
	}()
	tick := time.NewTicker(every) // pacing the attack, not synchronising
	defer tick.Stop()
	for i := 0; i < len(raw); i++ {
		select {
		case <-closed:
			return time.Since(start), true, nil
		case <-tick.C:
		}
		if _, err := conn.Write([]byte{raw[i]}); err != nil {
			return time.Since(start), true, nil
		}
	}
	return time.Since(start), false, nil
}

// TestSlowloris trickles requests byte by byte on many connections at once.
// Each is cut off by ReadTimeout, and meanwhile other clients are served as
// usual: slow clients cost a goroutine and a socket each, never a worker
// that others wait for.
func TestSlowloris(t *testing.T) {
	e, u, spy := hostileEnv(t)
	cookie := "Cookie: " + slicehub.SessionCookie + "=" + e.sessionToken(u) + "\r\n"
	// Long enough that trickling all of it at one byte per 10 ms would take
	// ten times ReadTimeout.
	pad := strings.Repeat("X-Pad: aaaaaaaaaaaaaaaa\r\n", int(10*hostileReadTimeout/(10*time.Millisecond))/24+1)
	attacks := map[string]string{
		"headers": "GET /api/x HTTP/1.1\r\nHost: " + e.host + "\r\n" + cookie + pad + "\r\n",
		"body": "POST /api/x HTTP/1.1\r\nHost: " + e.host + "\r\n" + cookie + "Origin: http://" + e.host +
			"\r\nContent-Length: 1000\r\n\r\n" + strings.Repeat("b", 1000),
	}
	const perAttack = 25
	type outcome struct {
		name  string
		lived time.Duration
		cut   bool
		err   error
	}
	results := make(chan outcome, 2*perAttack)
	var wg sync.WaitGroup
	for name, raw := range attacks {
		for i := 0; i < perAttack; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				lived, cut, err := trickle(e.host, raw, 10*time.Millisecond)
				results <- outcome{name, lived, cut, err}
			}()
		}
	}

	// While the attack runs, an ordinary client is served at once, again
	// and again.
	client := newBrowser()
	client.Timeout = 2 * time.Second
	deadline := time.Now().Add(hostileReadTimeout)
	served := 0
	for time.Now().Before(deadline) {
		start := time.Now()
		resp, err := client.Get(e.url + "/healthz")
		if err != nil {
			t.Fatalf("an ordinary client during the attack: %v", err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if took := time.Since(start); took > time.Second {
			t.Fatalf("an ordinary request took %v during the attack", took)
		}
		served++
	}
	r := e.do(u.client, "GET", "/api/x", "", nil)
	if r.status != http.StatusOK {
		t.Fatalf("the proxy during the attack: %d %s", r.status, r.body)
	}

	wg.Wait()
	close(results)
	for o := range results {
		if o.err != nil {
			t.Fatalf("%s: %v", o.name, o.err)
		}
		if !o.cut {
			t.Fatalf("%s: the gateway read the whole trickled request (%v) without cutting it off", o.name, o.lived)
		}
		// ReadTimeout plus scheduling slack on a busy test machine (-race,
		// packages in parallel); the whole trickle would take 10x.
		if o.lived > 5*hostileReadTimeout {
			t.Fatalf("%s: a trickling connection lived %v, ReadTimeout is %v", o.name, o.lived, hostileReadTimeout)
		}
	}
	// Only the ordinary proxied request above reached the slice.
	if n := len(spy.requests()); n != 1 {
		t.Fatalf("the slice saw %d requests, want 1", n)
	}
	t.Logf("served %d ordinary requests while %d connections trickled", served, 2*perAttack)
}
