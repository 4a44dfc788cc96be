package gateway

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/slicehub/slicehub"
)

// An upload over BufferedBodyLimit reaches the slice while the browser is
// still sending it: the slice's handler starts after the first half has
// been sent and before the second, and receives every byte.
func TestProxyStreamsUploads(t *testing.T) {
	started := make(chan struct{}, 1)
	slice := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		started <- struct{}{}
		h := sha256.New()
		n, err := io.Copy(h, r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		fmt.Fprintf(w, `{"bytes":%d,"sha256":%q}`, n, hex.EncodeToString(h.Sum(nil)))
	}))
	t.Cleanup(slice.Close)
	e := newEnv(t, func(c *Config, _ *Deps) { c.BodyLimit = 8 << 20; c.BufferedBodyLimit = 64 << 10 })
	u := e.signup("uma@example.com")
	e.slices.set(u.id, slicehub.Slice{ID: 71, State: slicehub.StateAssigned, UserID: u.id})
	e.routes.set(71, strings.TrimPrefix(slice.URL, "http://"))
	e.srv.Invalidate(u.id)

	body := make([]byte, 4<<20)
	for i := range body {
		body[i] = byte(i * 7)
	}
	sum := sha256.Sum256(body)
	conn, err := net.Dial("tcp", e.host)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	fmt.Fprintf(conn, "POST /api/upload HTTP/1.1\r\nHost: %s\r\nOrigin: http://%s\r\nCookie: %s=%s\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n",
		e.host, e.host, slicehub.SessionCookie, e.sessionToken(u), len(body))
	half := len(body) / 2
	if _, err := conn.Write(body[:half]); err != nil {
		t.Fatal(err)
	}
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("the slice saw nothing while half of a 4 MiB upload had been sent: the gateway buffers uploads")
	}
	if _, err := conn.Write(body[half:]); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	want := fmt.Sprintf(`{"bytes":%d,"sha256":%q}`, len(body), hex.EncodeToString(sum[:]))
	if resp.StatusCode != 200 || string(got) != want {
		t.Fatalf("%d %s; want 200 %s", resp.StatusCode, got, want)
	}
}

// A request whose body the gateway did not read to the end (refused over
// the limit, or answered early) ends its connection: the rest of the body
// must never be parsed as the next request. Behind nginx the next request
// on a connection can be another user's, so this is tenant isolation.
func TestUnreadBodiesNeverBecomeRequests(t *testing.T) {
	e, u, spy := hostileEnv(t) // BodyLimit 64 KiB
	cookie := slicehub.SessionCookie + "=" + e.sessionToken(u)
	smuggled := "GET /api/smuggled HTTP/1.1\r\nHost: " + e.host + "\r\nCookie: " + cookie + "\r\n\r\n"
	pad := strings.Repeat("p", 2*hostileBodyLimit)
	for name, path := range map[string]string{"proxy": "/api/x", "gateway": "/auth/login"} {
		t.Run(name, func(t *testing.T) {
			// fasthttp reads the first 8 KiB of a streamed body before the
			// handler runs; what follows is where a desync would begin.
			body := strings.Repeat("p", 8<<10) + smuggled + pad + smuggled
			conn, err := net.Dial("tcp", e.host)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(10 * time.Second))
			go fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: %s\r\nOrigin: http://%s\r\nCookie: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
				path, e.host, e.host, cookie, len(body), body)
			br := bufio.NewReader(conn)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			if resp.StatusCode != http.StatusRequestEntityTooLarge {
				t.Fatalf("status %d, want 413", resp.StatusCode)
			}
			// Whatever follows is the end of the connection, not an answer
			// to a request cut out of the body.
			if next, err := http.ReadResponse(br, nil); err == nil {
				t.Fatalf("a second answer on the connection: %d", next.StatusCode)
			}
		})
	}
	for _, r := range spy.requests() {
		if strings.Contains(r.RequestURI, "smuggled") {
			t.Fatalf("a request cut out of a body reached the slice: %s", r.RequestURI)
		}
	}
}

// A chunked body has no declared length: the proxy reads it whole, up to
// BodyLimit, and the slice gets it with a Content-Length.
func TestProxyChunkedUploadWithinTheLimit(t *testing.T) {
	e, u, spy := hostileEnv(t)
	payload := strings.Repeat("c", hostileBodyLimit-10)
	chunked := fmt.Sprintf("%x\r\n%s\r\n0\r\n\r\n", len(payload), payload)
	resp, body := sendRaw(t, e.host, "POST /api/x HTTP/1.1\r\nHost: "+e.host+"\r\nOrigin: http://"+e.host+
		"\r\nCookie: "+slicehub.SessionCookie+"="+e.sessionToken(u)+"\r\nTransfer-Encoding: chunked\r\n\r\n"+chunked)
	if resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	var got echo
	(&result{status: resp.StatusCode, body: body}).decode(t, &got)
	if got.Body != payload {
		t.Fatalf("the slice got %d bytes, want %d", len(got.Body), len(payload))
	}
	if n := len(spy.requests()); n != 1 {
		t.Fatalf("the slice saw %d requests", n)
	}
}

// TestSlowUploadsGetUploadTimeout: a body that streams may take
// UploadTimeout to arrive, far beyond ReadTimeout; a small request sent as
// slowly is still cut at ReadTimeout.
func TestSlowUploadsGetUploadTimeout(t *testing.T) {
	const read = 300 * time.Millisecond
	e := newEnv(t, func(c *Config, _ *Deps) { c.ReadTimeout, c.UploadTimeout = read, 20*time.Second })
	u := e.signup("slowupload@example.com")
	fs := newFakeSlice(t, 12)
	e.withSlice(u, fs)
	cookie := "Cookie: " + slicehub.SessionCookie + "=" + e.sessionToken(u) + "\r\n"
	send := func(body int) (*http.Response, []byte, error) {
		rc := e.rawConn()
		rc.send(fmt.Sprintf("POST /api/upload HTTP/1.1\r\nHost: x\r\n%sContent-Length: %d\r\n\r\n", cookie, body))
		// Four pieces over four times ReadTimeout: pacing, not synchronisation.
		piece := strings.Repeat("u", body/4)
		for i := 0; i < 4; i++ {
			time.Sleep(read)
			if _, err := io.WriteString(rc.c, piece); err != nil {
				return nil, nil, err
			}
		}
		resp, err := http.ReadResponse(rc.br, nil)
		if err != nil {
			return nil, nil, err
		}
		b, err := io.ReadAll(resp.Body)
		return resp, b, err
	}
	resp, body, err := send(128 << 10)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("a streamed upload over 1.2 s with ReadTimeout %v: %v %v", read, resp, err)
	}
	var got echo
	if err := json.Unmarshal(body, &got); err != nil || len(got.Body) != 128<<10 {
		t.Fatalf("the slice got %d bytes (%v)", len(got.Body), err)
	}
	if resp, _, err := send(4 << 10); err == nil && resp.StatusCode == 200 {
		t.Fatalf("a small request sent over 1.2 s was served; ReadTimeout is %v", read)
	}
}

func TestHeaderReceivedGivesStreamsUploadTimeout(t *testing.T) {
	srv := New(Config{Argon2: cheapArgon2, Logger: testLogger(), UploadTimeout: time.Hour, BodyLimit: 1 << 20},
		Deps{Accounts: newFakeAccounts(time.Now), Slices: newFakeSlices(), Routes: newFakeRoutes()})
	srv.StreamBody("POST", func(path string) bool { return path == "/admin/restore" })
	for _, tc := range []struct {
		method, uri string
		length      int
		want        time.Duration
	}{
		{"POST", "/api/x", 10, 0},                      // read whole: ReadTimeout
		{"POST", "/api/x", 128 << 10, time.Hour},       // streams
		{"POST", "/api/x", -1, time.Hour},              // chunked
		{"POST", "/api/x", 2 << 20, 0},                 // over BodyLimit: refused unread
		{"POST", "/admin/restore", 2 << 20, time.Hour}, // a streaming route has no limit
		{"POST", "/admin/restore?x=1", 2 << 20, time.Hour},
		{"PUT", "/admin/restore", 2 << 20, 0},
	} {
		var h fasthttp.RequestHeader
		h.SetMethod(tc.method)
		h.SetRequestURI(tc.uri)
		h.SetContentLength(tc.length)
		if got := srv.headerReceived(&h).ReadTimeout; got != tc.want {
			t.Errorf("%s %s with %d bytes: read timeout %v, want %v", tc.method, tc.uri, tc.length, got, tc.want)
		}
	}
}
