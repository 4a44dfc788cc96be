// Package standin is a local stand-in for WhatsApp Web, for tests and for
// the development platform, where the real site cannot be reached.
//
// It reproduces what the slice's Chromium supervisor depends on, and nothing
// else:
//
//   - The same DOM markers as the real site, so that the slice's production
//     selectors work on it unchanged: the QR code is a <canvas> inside a
//     <div data-ref="PAYLOAD">, a reload button replaces it once the codes
//     run out, the chat list is #pane-side, and a lost phone connection shows
//     a span[data-icon="alert-phone"] banner.
//   - A QR code whose payload changes: each pairing attempt shows Codes codes
//     ("code X of N"), each for Refresh.
//   - The login state kept in the browser, like the real site: a linked
//     session lives in IndexedDB (database "wawc", store "user") and in
//     localStorage (key "WAStandinSession"), and the page counts as logged
//     in only when both agree. A Chromium restarted on the same profile, or
//     on a restored copy of its storage, therefore comes back logged in
//     without a new QR code, and a profile missing either part does not.
//
// The server side is a phone and a WhatsApp server rolled into one: Scan
// (POST /scan) links a pairing session as a phone scanning its QR code would,
// SetPhoneOnline and Unlink change a linked session, and Stats counts what
// happened, so that a test can prove that no new QR code was needed.
// Linked sessions that the server does not know (it restarted) are accepted:
// the proof of the login is in the browser, as with the real site.
package standin

import (
	"crypto/rand"
	"embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	qrcode "github.com/skip2/go-qrcode"
)

//go:embed page.html
var page embed.FS

// PayloadPrefix starts every QR payload of the stand-in.
const PayloadPrefix = "standin,"

// Options configure a Server.
type Options struct {
	// Codes is how many QR codes one pairing attempt shows before the page
	// offers "Click to reload QR code" (the real site shows about six).
	// Default 6.
	Codes int
	// Refresh is how long each code is shown. Default 20 s, as on the real
	// site; tests use less.
	Refresh time.Duration
	// Logger; default slog.Default(), with component=standin.
	Logger *slog.Logger
	// History is the account's seeded history, imported by the slice at
	// link time (see phone.go).
	History History
	// StateFile, when set, keeps the account (queued and sent messages)
	// in a journal that a restarted stand-in replays: WhatsApp's servers
	// do not forget when the slice restarts.
	StateFile string
	// Weight is the page's weight model (weight.go); zero: none.
	Weight Weight
}

// Stats counts what the server saw. A browser that comes back logged in
// from its storage adds a Resume and no Pairing.
type Stats struct {
	// Pairings is the number of pairing attempts (a QR page shown).
	Pairings int `json:"pairings"`
	// Codes is the number of QR codes handed out.
	Codes int `json:"codes"`
	// Scans is the number of sessions linked by a scan.
	Scans int `json:"scans"`
	// Resumes is the number of page loads that found a linked session in
	// the browser's storage.
	Resumes int `json:"resumes"`
}

// Server is the stand-in. It is an http.Handler.
type Server struct {
	codes   int
	refresh time.Duration
	log     *slog.Logger
	mux     *http.ServeMux

	mu       sync.Mutex
	sessions map[string]*session
	latest   string // the newest pairing session, for Scan("")
	stats    Stats

	acct *account // the WhatsApp account and its phone (phone.go)

	weight  Weight       // the page's weight model (weight.go)
	wstatus WeightStatus // guarded by mu
}

type session struct {
	created time.Time
	payload string // the code currently shown
	linked  bool
	offline bool // the phone lost its connection (a linked session)
	unlink  bool // the phone unlinked this browser (a linked session)
}

// New returns a Server.
func New(o Options) *Server {
	if o.Codes <= 0 {
		o.Codes = 6
	}
	if o.Refresh <= 0 {
		o.Refresh = 20 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	s := &Server{
		codes:    o.Codes,
		refresh:  o.Refresh,
		log:      o.Logger.With("component", "standin"),
		sessions: map[string]*session{},
		acct:     newAccount(o.History, o.StateFile, o.Logger.With("component", "standin")),
		weight:   o.Weight,
	}
	m := http.NewServeMux()
	m.HandleFunc("GET /{$}", s.servePage)
	m.HandleFunc("GET /qr.png", s.serveQR)
	m.HandleFunc("POST /pair", s.pair)
	m.HandleFunc("GET /pair/code", s.code)
	m.HandleFunc("GET /pair/status", s.status)
	m.HandleFunc("POST /resume", s.resume)
	m.HandleFunc("GET /session", s.sessionStatus)
	// The account: history sync, queued events, sending (phone.go).
	m.HandleFunc("GET /account", s.serveAccount)
	m.HandleFunc("GET /events", s.events)
	m.HandleFunc("POST /events/ack", s.ackEvents)
	m.HandleFunc("POST /send", s.send)
	m.HandleFunc("POST /seen", s.seen)
	// Test hooks: the phone's side.
	m.HandleFunc("/phone/messages", s.phoneMessages)
	m.HandleFunc("POST /scan", s.scanHook)
	m.HandleFunc("POST /phone", s.phoneHook)
	m.HandleFunc("POST /unlink", s.unlinkHook)
	m.HandleFunc("GET /stats", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, http.StatusOK, s.Stats()) })
	s.routeWeight(m)
	s.mux = m
	return s
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// The page is an application, not a document: never cached, so that a
	// restarted Chromium always asks the server again, as with the real site.
	w.Header().Set("Cache-Control", "no-store")
	s.mux.ServeHTTP(w, r)
}

// Stats returns the counters.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

// ErrUnknownSession is returned by the hooks for a session the server does
// not know, and by Scan when no pairing session is pending.
var ErrUnknownSession = errors.New("standin: unknown session")

// Scan links a pairing session, as a phone scanning its QR code would. An
// empty id means the newest pairing session (convenient by hand, when only
// one browser is pairing).
func (s *Server) Scan(id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if id == "" {
		id = s.latest
	}
	ss, ok := s.sessions[id]
	if !ok {
		return ErrUnknownSession
	}
	if !ss.linked {
		ss.linked = true
		s.stats.Scans++
		s.log.Info("session linked", "session", id)
	}
	return nil
}

// SetPhoneOnline makes a linked session's page show, or stop showing, the
// "phone not connected" banner.
func (s *Server) SetPhoneOnline(id string, online bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	ss := s.sessions[id]
	if ss == nil {
		// A session linked before a restart of the server: the browser's
		// heartbeat will find this entry.
		ss = &session{created: time.Now(), linked: true}
		s.sessions[id] = ss
	}
	ss.offline = !online
	return nil
}

// Unlink logs a linked session out, as "Log out" on the phone would: its page
// clears its storage and shows a new QR code.
func (s *Server) Unlink(id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	ss := s.sessions[id]
	if ss == nil {
		ss = &session{created: time.Now(), linked: true}
		s.sessions[id] = ss
	}
	ss.unlink = true
	return nil
}

// SessionFromPayload returns the pairing session a QR payload of the
// stand-in belongs to: what a phone would learn by scanning it.
func SessionFromPayload(payload string) (string, bool) {
	rest, ok := strings.CutPrefix(payload, PayloadPrefix)
	if !ok {
		return "", false
	}
	id, _, ok := strings.Cut(rest, ",")
	return id, ok && id != ""
}

func (s *Server) servePage(w http.ResponseWriter, r *http.Request) {
	b, err := page.ReadFile("page.html")
	if err != nil {
		http.Error(w, "page missing", http.StatusInternalServerError)
		return
	}
	html := strings.NewReplacer(
		"{{CODES}}", strconv.Itoa(s.codes),
		"{{REFRESH_MS}}", strconv.FormatInt(s.refresh.Milliseconds(), 10),
	).Replace(string(b))
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_, _ = w.Write([]byte(html))
}

// serveQR renders a payload as a QR code image for the page's canvas.
func (s *Server) serveQR(w http.ResponseWriter, r *http.Request) {
	data := r.URL.Query().Get("data")
	if data == "" || len(data) > 1024 {
		http.Error(w, "bad data", http.StatusBadRequest)
		return
	}
	png, err := qrcode.Encode(data, qrcode.Medium, 264)
	if err != nil {
		http.Error(w, "cannot encode", http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "image/png")
	_, _ = w.Write(png)
}

func (s *Server) pair(w http.ResponseWriter, r *http.Request) {
	id := randomHex(8)
	s.mu.Lock()
	s.sessions[id] = &session{created: time.Now()}
	s.latest = id
	s.stats.Pairings++
	s.gcLocked()
	s.mu.Unlock()
	s.log.Info("pairing started", "session", id)
	writeJSON(w, http.StatusOK, map[string]any{"session": id, "codes": s.codes, "refresh_ms": s.refresh.Milliseconds()})
}

// code hands out the n-th QR code of a pairing session. The payload names
// the session (so that a scan can find it), the code's number and a random
// part, like the real payload's keys: every code differs.
func (s *Server) code(w http.ResponseWriter, r *http.Request) {
	id := r.URL.Query().Get("session")
	n, err := strconv.Atoi(r.URL.Query().Get("n"))
	if err != nil || n < 1 || n > s.codes {
		http.Error(w, "bad n", http.StatusBadRequest)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	ss, ok := s.sessions[id]
	if !ok {
		http.Error(w, "unknown session", http.StatusNotFound)
		return
	}
	ss.payload = fmt.Sprintf("%s%s,%d,%s", PayloadPrefix, id, n, randomHex(16))
	s.stats.Codes++
	writeJSON(w, http.StatusOK, map[string]any{"payload": ss.payload, "n": n, "of": s.codes})
}

func (s *Server) status(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ss, ok := s.sessions[r.URL.Query().Get("session")]
	if !ok {
		http.Error(w, "unknown session", http.StatusNotFound)
		return
	}
	writeJSON(w, http.StatusOK, map[string]bool{"linked": ss.linked})
}

// resume counts a page load that found its login in the browser's storage.
func (s *Server) resume(w http.ResponseWriter, r *http.Request) {
	id := r.URL.Query().Get("session")
	s.mu.Lock()
	s.stats.Resumes++
	s.mu.Unlock()
	s.log.Info("session resumed from browser storage", "session", id)
	w.WriteHeader(http.StatusNoContent)
}

// sessionStatus is the logged-in page's heartbeat.
func (s *Server) sessionStatus(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := "ok"
	if ss := s.sessions[r.URL.Query().Get("session")]; ss != nil {
		switch {
		case ss.unlink:
			st = "unlinked"
		case ss.offline:
			st = "offline"
		}
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": st})
}

func (s *Server) scanHook(w http.ResponseWriter, r *http.Request) {
	id := r.URL.Query().Get("session")
	if p := r.URL.Query().Get("payload"); p != "" {
		var ok bool
		if id, ok = SessionFromPayload(p); !ok {
			http.Error(w, "not a stand-in payload", http.StatusBadRequest)
			return
		}
	}
	if err := s.Scan(id); err != nil {
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) phoneHook(w http.ResponseWriter, r *http.Request) {
	online, err := strconv.ParseBool(r.URL.Query().Get("online"))
	if err != nil {
		http.Error(w, "online must be true or false", http.StatusBadRequest)
		return
	}
	_ = s.SetPhoneOnline(r.URL.Query().Get("session"), online)
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) unlinkHook(w http.ResponseWriter, r *http.Request) {
	_ = s.Unlink(r.URL.Query().Get("session"))
	w.WriteHeader(http.StatusNoContent)
}

// gcLocked forgets pairing sessions that were never linked and are long
// expired, so that a page left open for days does not grow the map.
func (s *Server) gcLocked() {
	limit := time.Duration(s.codes)*s.refresh + time.Hour
	for id, ss := range s.sessions {
		if !ss.linked && time.Since(ss.created) > limit {
			delete(s.sessions, id)
		}
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
