package loadtest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/cookiejar"
	urlpkg "net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fasthttp/websocket"
)

// Request classes, as reported.
const (
	classSignup    = "POST /auth/signup"
	classWhoami    = "GET /api/whoami"
	classList      = "GET /api/contacts"
	classCreate    = "POST /api/contacts"
	classNote      = "POST /api/contacts/{id}/notes"
	classState     = "GET /api/status/state"
	classSocketAck = "socket.io whoami (ack)"
)

var classes = []string{classSignup, classWhoami, classList, classCreate, classNote, classState, classSocketAck}

// sample is one request: its class, when it started, how long it took, and
// whether it succeeded. wrong marks an answer from another tenant's slice.
type sample struct {
	class  string
	at     time.Time
	dur    time.Duration
	status int // 0: transport error
	ok     bool
	wrong  bool
}

// recorder collects every sample of the run; one mutex is enough at a few
// hundred requests a second.
type recorder struct {
	mu      sync.Mutex
	samples []sample
}

func (r *recorder) add(s sample) {
	r.mu.Lock()
	r.samples = append(r.samples, s)
	r.mu.Unlock()
}

func (r *recorder) all() []sample {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]sample(nil), r.samples...)
}

// user is one simulated customer with a browser of their own: a cookie
// jar, keep-alive connections, and a loopback source address of their own
// (127.1.x.y), so that the gateway's per-address signup throttle sees 500
// people rather than one machine.
type user struct {
	n       int
	email   string
	base    string // gateway host:port
	http    *http.Client
	jar     http.CookieJar
	sliceID string
	rec     *recorder

	signedUp time.Time
	served   time.Time // first whoami 200 from the user's own slice

	contacts []int64

	wsMsgs  atomic.Int64 // socket.io and Engine.IO messages received
	writes  atomic.Int64 // contacts and notes the slice acknowledged with 201
	pushes  atomic.Int64 // "contact" and "note" events received over the socket
	wsDials atomic.Int64
	wsWrong atomic.Int64

	closeMu sync.Mutex
	closes  map[string]int // why a held socket ended (close code or error), while the run went on
}

// sourceAddr is user n's loopback address: 127.1.0.1, 127.1.0.2, ... (the
// whole 127/8 is loopback on Linux).
func sourceAddr(n int) net.IP {
	n++
	return net.IPv4(127, 1, byte(n/250), byte(n%250+1))
}

func newUser(n int, base string, rec *recorder) *user {
	jar, _ := cookiejar.New(nil)
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: sourceAddr(n)}, Timeout: 5 * time.Second}
	tr := &http.Transport{DialContext: d.DialContext, MaxIdleConnsPerHost: 2, IdleConnTimeout: 90 * time.Second}
	return &user{
		n: n, email: fmt.Sprintf("load%d@example.com", n), base: base, rec: rec, jar: jar,
		http: &http.Client{Jar: jar, Transport: tr, Timeout: 15 * time.Second},
	}
}

// do sends one request and records it under class when record is set.
func (u *user) do(class, method, path string, body any, record bool) (int, []byte) {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, "http://"+u.base+path, rd)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	start := time.Now()
	resp, err := u.http.Do(req)
	var raw []byte
	status := 0
	if err == nil {
		raw, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		status = resp.StatusCode
	}
	if record {
		u.rec.add(sample{class: class, at: start, dur: time.Since(start), status: status, ok: status >= 200 && status < 300})
	}
	return status, raw
}

// signup creates the account; the gateway claims a slice for it.
func (u *user) signup() error {
	u.signedUp = time.Now()
	status, raw := u.do(classSignup, "POST", "/auth/signup", map[string]string{"email": u.email, "password": "correct horse battery " + strconv.Itoa(u.n)}, true)
	if status != http.StatusCreated {
		return fmt.Errorf("%s: signup: %d %.200s", u.email, status, raw)
	}
	var acc struct {
		Slice struct {
			ID json.Number `json:"id"`
		} `json:"slice"`
	}
	_ = json.Unmarshal(raw, &acc)
	u.sliceID = acc.Slice.ID.String()
	return nil
}

// whoami asks the user's slice who they are, and checks the answer comes
// from their own slice.
func (u *user) whoami(record bool) (ok bool, status int) {
	start := time.Now()
	status, raw := u.do(classWhoami, "GET", "/api/whoami", nil, false)
	s := sample{class: classWhoami, at: start, dur: time.Since(start), status: status}
	if status == 200 {
		var who struct {
			SliceID string `json:"slice_id"`
		}
		_ = json.Unmarshal(raw, &who)
		if u.sliceID == "" || u.sliceID == "0" {
			// Signed up while no slice could be claimed: the first answer
			// names it.
			u.sliceID = who.SliceID
		}
		s.wrong = who.SliceID != u.sliceID
		s.ok = !s.wrong
	}
	if record {
		u.rec.add(s)
	}
	return s.ok, status
}

// step is one action of a user of the CRM, chosen by weight: mostly reads,
// some writes, as a person working a contact list does.
func (u *user) step(rng *rand.Rand) {
	switch r := rng.IntN(100); {
	case r < 35:
		u.whoami(true)
	case r < 60:
		u.do(classList, "GET", "/api/contacts?limit=20", nil, true)
	case r < 80 || len(u.contacts) == 0:
		status, raw := u.do(classCreate, "POST", "/api/contacts", map[string]string{
			"name": fmt.Sprintf("Customer %d-%d", u.n, len(u.contacts)), "phone": fmt.Sprintf("+1555%03d%04d", u.n%1000, len(u.contacts)%10000),
		}, true)
		if status == http.StatusCreated {
			u.writes.Add(1)
			var c struct {
				ID int64 `json:"id"`
			}
			if json.Unmarshal(raw, &c) == nil && c.ID > 0 {
				u.contacts = append(u.contacts, c.ID)
			}
		}
	case r < 95:
		id := u.contacts[rng.IntN(len(u.contacts))]
		if status, _ := u.do(classNote, "POST", fmt.Sprintf("/api/contacts/%d/notes", id), map[string]string{"body": "called back, wants the premium plan"}, true); status == http.StatusCreated {
			u.writes.Add(1)
		}
	default:
		u.do(classState, "GET", "/api/status/state", nil, true)
	}
}

// socket holds a socket.io WebSocket through the gateway until ctx ends,
// dialing again when it drops, and asks "whoami" over it every ackEvery.
func (u *user) socket(ctx context.Context, ackEvery time.Duration, record func() bool) {
	for ctx.Err() == nil {
		err := u.socketOnce(ctx, ackEvery, record)
		if ctx.Err() != nil {
			return
		}
		why := "error"
		var ce *websocket.CloseError
		switch {
		case errors.As(err, &ce):
			why = fmt.Sprintf("close %d", ce.Code)
		case err != nil:
			why = err.Error()
		}
		u.closeMu.Lock()
		if u.closes == nil {
			u.closes = map[string]int{}
		}
		u.closes[why]++
		u.closeMu.Unlock()
		select {
		case <-ctx.Done():
		case <-time.After(500 * time.Millisecond): // socket.io-client's first reconnection delay
		}
	}
}

func (u *user) socketOnce(ctx context.Context, ackEvery time.Duration, record func() bool) error {
	hdr := http.Header{}
	hdr.Set("Origin", "http://"+u.base)
	for _, ck := range u.jar.Cookies(&urlpkg.URL{Scheme: "http", Host: u.base}) {
		hdr.Add("Cookie", ck.Name+"="+ck.Value)
	}
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second, NetDialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: sourceAddr(u.n)}}).DialContext}
	u.wsDials.Add(1)
	conn, _, err := d.DialContext(ctx, "ws://"+u.base+"/socket.io/?EIO=4&transport=websocket", hdr)
	if err != nil {
		return err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()

	// The writer: acks are asked for on a ticker, from this goroutine only
	// (a websocket.Conn allows one writer at a time), with pongs.
	var wmu sync.Mutex
	write := func(s string) error {
		wmu.Lock()
		defer wmu.Unlock()
		_ = conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
		return conn.WriteMessage(websocket.TextMessage, []byte(s))
	}
	var pending sync.Map // ack id -> time sent
	var ackID atomic.Int64
	joined := make(chan struct{})
	go func() {
		select {
		case <-joined:
		case <-ctx.Done():
			return
		}
		tk := time.NewTicker(ackEvery)
		defer tk.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tk.C:
			}
			id := ackID.Add(1)
			pending.Store(id, time.Now())
			if write(fmt.Sprintf(`42%d["whoami"]`, id)) != nil {
				return
			}
		}
	}()
	// An ack asked for and never answered (the socket dropped) is a failed
	// request, not a missing one.
	defer pending.Range(func(_, v any) bool {
		if record() {
			u.rec.add(sample{class: classSocketAck, at: v.(time.Time), dur: time.Since(v.(time.Time))})
		}
		return true
	})
	isJoined := false
	for {
		// Engine.IO pings every 25 s; a longer silence is a dead peer.
		_ = conn.SetReadDeadline(time.Now().Add(60 * time.Second))
		_, msg, err := conn.ReadMessage()
		if err != nil {
			if !isJoined {
				close(joined)
			}
			return err
		}
		u.wsMsgs.Add(1)
		s := string(msg)
		switch {
		case strings.HasPrefix(s, "0{") && !isJoined:
			if err := write("40"); err != nil {
				return err
			}
		case strings.HasPrefix(s, "40") && !isJoined:
			isJoined = true
			close(joined)
		case s == "2":
			_ = write("3")
		case strings.HasPrefix(s, `42["hello"`):
			var ev []json.RawMessage
			var hello struct {
				SliceID string `json:"slice_id"`
			}
			if json.Unmarshal([]byte(s[2:]), &ev) == nil && len(ev) > 1 {
				_ = json.Unmarshal(ev[1], &hello)
			}
			if hello.SliceID != u.sliceID {
				u.wsWrong.Add(1)
			}
		case strings.HasPrefix(s, `42["contact",`), strings.HasPrefix(s, `42["note",`):
			u.pushes.Add(1)
		case strings.HasPrefix(s, "43"):
			// 43<id>[{"slice_id":..,"user_id":..}]
			rest := s[2:]
			i := strings.IndexByte(rest, '[')
			if i <= 0 {
				continue
			}
			id, err := strconv.ParseInt(rest[:i], 10, 64)
			if err != nil {
				continue
			}
			v, ok := pending.LoadAndDelete(id)
			if !ok {
				continue
			}
			sent := v.(time.Time)
			var who []struct {
				SliceID string `json:"slice_id"`
			}
			_ = json.Unmarshal([]byte(rest[i:]), &who)
			wrong := len(who) == 0 || who[0].SliceID != u.sliceID
			if record() {
				u.rec.add(sample{class: classSocketAck, at: sent, dur: time.Since(sent), status: 200, ok: !wrong, wrong: wrong})
			}
		}
	}
}
