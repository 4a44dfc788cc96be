package gateway

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/slicehub/slicehub"
	"github.com/slicehub/slicehub/gateway/accounts"
	"github.com/slicehub/slicehub/gateway/pages"
)

// waSlice is a fake slice that reports a WhatsApp state and serves QR
// codes, as the reference slice does on /api/status/state and
// /api/status/qr. It refuses requests without its gateway token.
type waSlice struct {
	id    int64
	token string
	srv   *httptest.Server

	mu    sync.Mutex
	state string
	seq   int64
	noSeq bool // serve codes without X-Slicehub-QR-Seq, as a foreign slice might

	stateCalls atomic.Int64
	qrCalls    atomic.Int64
}

func newWASlice(t testing.TB, id int64) *waSlice {
	ws := &waSlice{id: id, token: "token-of-slice-" + strconv.FormatInt(id, 10), state: slicehub.WAStarting}
	ws.srv = httptest.NewServer(http.HandlerFunc(ws.serve))
	t.Cleanup(func() { ws.srv.CloseClientConnections(); ws.srv.Close() })
	return ws
}

func (ws *waSlice) addr() string { return strings.TrimPrefix(ws.srv.URL, "http://") }

// set changes the WhatsApp state; entering "qr" (or calling it again in
// "qr") shows a new code.
func (ws *waSlice) set(state string) {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	ws.state = state
	if state == slicehub.WAQR {
		ws.seq++
	}
}

func (ws *waSlice) serve(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get(slicehub.HeaderGatewayToken) != ws.token {
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	ws.mu.Lock()
	state, seq, noSeq := ws.state, ws.seq, ws.noSeq
	ws.mu.Unlock()
	switch r.URL.Path {
	case "/api/dev/scan":
		// The stand-in's phone: scanning links WhatsApp.
		if r.Method != http.MethodPost {
			w.WriteHeader(http.StatusMethodNotAllowed)
			return
		}
		ws.set(slicehub.WAConnected)
		w.WriteHeader(http.StatusNoContent)
	case "/api/status/state":
		ws.stateCalls.Add(1)
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"state":%q}`, state)
	case "/api/status/qr":
		ws.qrCalls.Add(1)
		if state != slicehub.WAQR {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusNotFound)
			w.Write([]byte(`{"error":"no QR code is shown now","code":"no_qr"}`))
			return
		}
		if !noSeq {
			w.Header().Set("X-Slicehub-QR-Seq", strconv.FormatInt(seq, 10))
		}
		w.Header().Set("Content-Type", "image/png")
		w.Header().Set("Cache-Control", "no-store")
		w.Write(qrPicture(seq))
	default:
		w.WriteHeader(http.StatusNotFound)
	}
}

// qrPicture is a PNG that differs for each seq: a checkerboard of 1 bits of seq.
func qrPicture(seq int64) []byte {
	const side, cell = 264, 24
	img := image.NewGray(image.Rect(0, 0, side, side))
	for y := 0; y < side; y++ {
		for x := 0; x < side; x++ {
			c := color.Gray{Y: 255}
			i := (y/cell)*(side/cell) + x/cell
			if (i+int(seq))%3 == 0 || (x/cell+y/cell)%2 == int(seq%2) {
				c = color.Gray{Y: 0}
			}
			img.SetGray(x, y, c)
		}
	}
	var b bytes.Buffer
	_ = png.Encode(&b, img)
	return b.Bytes()
}

// fakeProgress is a ProgressSource whose stage the test sets.
type fakeProgress struct {
	mu    sync.Mutex
	stage map[int64]slicehub.Stage // by user
	slice map[int64]int64
}

func newFakeProgress() *fakeProgress {
	return &fakeProgress{stage: map[int64]slicehub.Stage{}, slice: map[int64]int64{}}
}

func (p *fakeProgress) set(userID, sliceID int64, st slicehub.Stage) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stage[userID], p.slice[userID] = st, sliceID
}

func (p *fakeProgress) SliceProgress(_ context.Context, userID int64) (slicehub.SliceProgress, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	st, ok := p.stage[userID]
	if !ok {
		return slicehub.SliceProgress{}, slicehub.Errorf("fake.progress", slicehub.KindNotFound, "no_slice", "no slice")
	}
	return slicehub.SliceProgress{SliceID: p.slice[userID], Stage: st}, nil
}

// mailCapture is a slog handler that keeps the LogMailer's messages, so a
// test reads reset links where a developer would: in the log.
type mailCapture struct {
	mu    sync.Mutex
	mails []Mail
	next  chan Mail
}

func newMailCapture() *mailCapture { return &mailCapture{next: make(chan Mail, 16)} }

func (m *mailCapture) Enabled(context.Context, slog.Level) bool { return true }
func (m *mailCapture) WithAttrs([]slog.Attr) slog.Handler       { return m }
func (m *mailCapture) WithGroup(string) slog.Handler            { return m }
func (m *mailCapture) Handle(_ context.Context, r slog.Record) error {
	if !strings.HasPrefix(r.Message, "mail ") {
		return nil
	}
	var mail Mail
	r.Attrs(func(a slog.Attr) bool {
		switch a.Key {
		case "to":
			mail.To = a.Value.String()
		case "subject":
			mail.Subject = a.Value.String()
		case "text":
			mail.Text = a.Value.String()
		}
		return true
	})
	m.mu.Lock()
	m.mails = append(m.mails, mail)
	m.mu.Unlock()
	m.next <- mail
	return nil
}

func (m *mailCapture) count() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.mails)
}

// wait returns the next mail, or fails after a few seconds.
func (m *mailCapture) wait(t testing.TB) Mail {
	t.Helper()
	select {
	case mail := <-m.next:
		return mail
	case <-time.After(5 * time.Second):
		t.Fatal("no mail was sent")
		return Mail{}
	}
}

var resetLinkRE = regexp.MustCompile(`https?://\S+/reset/confirm\?token=[A-Za-z0-9_-]+`)

func resetLink(t testing.TB, m Mail) string {
	t.Helper()
	link := resetLinkRE.FindString(m.Text)
	if link == "" {
		t.Fatalf("no reset link in mail %q", m.Text)
	}
	return link
}

// pageEnv is a gateway with pages, a log mailer feeding mailCapture, a
// fake progress source, and fast workspace polling.
type pageEnv struct {
	*testEnv
	mails    *mailCapture
	progress *fakeProgress
}

func newPageEnv(t testing.TB, opts ...func(*Config, *Deps)) *pageEnv {
	t.Helper()
	pe := &pageEnv{mails: newMailCapture(), progress: newFakeProgress()}
	all := append([]func(*Config, *Deps){func(c *Config, d *Deps) {
		c.WorkspacePoll = 20 * time.Millisecond
		d.Mailer = LogMailer{Logger: slog.New(pe.mails)}
		d.Progress = pe.progress
	}}, opts...)
	pe.testEnv = newEnv(t, all...)
	return pe
}

// form is a browser filling a form: it GETs the page for the CSRF cookie
// and token, then POSTs the fields with it.
func (e *testEnv) form(c *http.Client, page, action string, fields url.Values) *result {
	e.t.Helper()
	r := e.do(c, "GET", page, "", nil)
	if r.status != http.StatusOK {
		e.t.Fatalf("GET %s: status %d", page, r.status)
	}
	tok := csrfTokenIn(e.t, r.body)
	fields.Set(accounts.CSRFField, tok)
	return e.do(c, "POST", action, fields.Encode(), map[string]string{"Content-Type": "application/x-www-form-urlencoded"})
}

var csrfInputRE = regexp.MustCompile(`name="csrf_token" value="([A-Za-z0-9_-]{43})"`)

func csrfTokenIn(t testing.TB, page []byte) string {
	t.Helper()
	m := csrfInputRE.FindSubmatch(page)
	if m == nil {
		t.Fatalf("no CSRF token in page:\n%s", page)
	}
	return string(m[1])
}

// sseStream reads server-sent events.
type sseStream struct {
	t      testing.TB
	cancel context.CancelFunc
	events chan sseEvent
}

type sseEvent struct {
	name string
	data string
}

func (e *testEnv) openEvents(c *http.Client) (*sseStream, *http.Response) {
	e.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", e.url+"/workspace/events", nil)
	req.Header.Set("Accept", "text/event-stream")
	cl := *c
	cl.Timeout = 0 // a stream
	resp, err := cl.Do(req)
	if err != nil {
		cancel()
		e.t.Fatal(err)
	}
	st := &sseStream{t: e.t, cancel: cancel, events: make(chan sseEvent, 64)}
	e.t.Cleanup(func() { cancel(); resp.Body.Close() })
	if resp.StatusCode != http.StatusOK {
		return st, resp
	}
	go func() {
		defer close(st.events)
		br := bufio.NewReader(resp.Body)
		var ev sseEvent
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			line = strings.TrimRight(line, "\r\n")
			switch {
			case line == "":
				if ev.name != "" || ev.data != "" {
					st.events <- ev
				}
				ev = sseEvent{}
			case strings.HasPrefix(line, "event: "):
				ev.name = line[len("event: "):]
			case strings.HasPrefix(line, "data: "):
				ev.data += line[len("data: "):]
			}
		}
	}()
	return st, resp
}

// until reads events until one satisfies cond, and returns it.
func (st *sseStream) until(what string, cond func(sseEvent) bool) sseEvent {
	st.t.Helper()
	deadline := time.After(5 * time.Second)
	var last sseEvent
	for {
		select {
		case ev, ok := <-st.events:
			if !ok {
				st.t.Fatalf("stream ended while waiting for %s (last event %s %s)", what, last.name, last.data)
			}
			last = ev
			if cond(ev) {
				return ev
			}
		case <-deadline:
			st.t.Fatalf("timed out waiting for %s (last event %s %s)", what, last.name, last.data)
		}
	}
}

// untilStatus waits for a status event satisfying cond.
func (st *sseStream) untilStatus(what string, cond func(pages.WorkspaceStatus) bool) pages.WorkspaceStatus {
	st.t.Helper()
	var ws pages.WorkspaceStatus
	st.until(what, func(ev sseEvent) bool {
		if ev.name != "status" {
			return false
		}
		ws = pages.WorkspaceStatus{}
		if err := json.Unmarshal([]byte(ev.data), &ws); err != nil {
			st.t.Fatalf("status event %q: %v", ev.data, err)
		}
		return cond(ws)
	})
	return ws
}

// stepStates is "done,done,current,todo,..." for a compact comparison.
func stepStates(ws pages.WorkspaceStatus) string {
	var s []string
	for _, st := range ws.Steps {
		s = append(s, st.State)
	}
	return strings.Join(s, ",")
}

func readAll(t testing.TB, r io.Reader) string {
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
