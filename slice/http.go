package slice

import (
	"bufio"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/slicehub/slicehub"
)

// maxBodyBytes caps a JSON request body. The largest valid input is a note
// of 10000 characters (up to 40 kB of UTF-8) plus JSON quoting.
const maxBodyBytes = 64 << 10

// Store is what the handlers need from the CRM; *CRM implements it over
// PostgreSQL. Input validation lives in the store's methods, so that every
// caller gets it.
type Store interface {
	Ping(ctx context.Context) error
	CreateContact(ctx context.Context, in NewContact) (Contact, error)
	ListContacts(ctx context.Context, after int64, limit int) ([]Contact, error)
	Contact(ctx context.Context, id int64) (Contact, error)
	CreateNote(ctx context.Context, contactID int64, body string) (Note, error)
	Notes(ctx context.Context, contactID int64, after int64, limit int) ([]Note, error)
}

// backend is what the handlers need once the slice is ready: the token to
// check and the store to use. It is swapped in atomically when bootstrap and
// migrations are done; until then the slice answers 503 (and /api/health
// says "starting").
type backend struct {
	tokenSum [sha256.Size]byte
	crm      Store
}

// Handler is the slice's HTTP front: routing, the gateway token check, and
// JSON errors. It is an http.Handler.
type Handler struct {
	sliceID string
	state   StateSource
	qr      QRSource     // nil: no QR code ever
	devScan func() error // the stand-in's phone; nil outside development
	sockets http.Handler // socket.io; nil until set
	// notify pushes a CRM change to the slice's socket.io clients (every
	// tab of the user); nil: no pushes.
	notify func(event string, v any)
	log    *slog.Logger
	// syncer, devPhone and adapterStatus serve the WhatsApp endpoints
	// (http_chats.go); nil: not in this slice.
	syncer        *Syncer
	devPhone      DevPhone
	adapterStatus func() AdapterStatus
	ready         atomic.Pointer[backend]
	mux           *http.ServeMux
	// unhealthy remembers the last health answer, to log changes only.
	unhealthy atomic.Bool
	// waSince is when the WhatsApp state last changed (unix nanos), for
	// the WhatsApp check's "disconnected for".
	waSince atomic.Int64
}

// NewHandler returns a handler that answers 503 until SetReady.
func NewHandler(sliceID string, state StateSource, log *slog.Logger) *Handler {
	h := &Handler{sliceID: sliceID, state: state, log: log.With("component", "http")}
	h.routes()
	h.waSince.Store(time.Now().UnixNano())
	state.Subscribe(func(string) { h.waSince.Store(time.Now().UnixNano()) })
	return h
}

// SetReady installs the token and the store; from then on the API serves.
func (h *Handler) SetReady(token string, crm Store) {
	h.ready.Store(&backend{tokenSum: sha256.Sum256([]byte(token)), crm: crm})
}

// SetNotify sets how CRM changes are pushed to the socket.io clients.
func (h *Handler) SetNotify(fn func(event string, v any)) { h.notify = fn }

func (h *Handler) push(event string, v any) {
	if h.notify != nil {
		h.notify(event, v)
	}
}

// SetSockets mounts the socket.io handler under /socket.io/.
func (h *Handler) SetSockets(s http.Handler) { h.sockets = s }

// SetQR sets where GET /api/status/qr reads the QR code.
func (h *Handler) SetQR(q QRSource) { h.qr = q }

// SetDevScan enables POST /api/dev/scan, which links the stand-in page as a
// phone scanning its QR code would. Only the development platform sets it.
func (h *Handler) SetDevScan(fn func() error) { h.devScan = fn }

func (h *Handler) routes() {
	m := http.NewServeMux()
	route := func(path string, byMethod map[string]http.HandlerFunc) {
		allow := make([]string, 0, len(byMethod))
		for method, fn := range byMethod {
			m.HandleFunc(method+" "+path, fn)
			allow = append(allow, method)
		}
		// A pattern without a method is less specific than the ones above,
		// so it catches only the other methods: answer them in JSON.
		m.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Allow", strings.Join(allow, ", "))
			writeJSON(w, http.StatusMethodNotAllowed, errorBody{Error: "method not allowed", Code: "method_not_allowed"})
		})
	}
	route("/api/whoami", map[string]http.HandlerFunc{http.MethodGet: h.whoami})
	route("/api/status/state", map[string]http.HandlerFunc{http.MethodGet: h.waState})
	route("/api/status/qr", map[string]http.HandlerFunc{http.MethodGet: h.qrCode})
	// The slice's own metrics (the memory governor's restarts, its cgroup
	// memory, the Go runtime), in Prometheus' text format, behind the
	// gateway token like the rest of /api/: telemetry's collector reads
	// them with each slice's state.
	route("/api/metrics", map[string]http.HandlerFunc{http.MethodGet: promhttp.Handler().ServeHTTP})
	route("/api/dev/scan", map[string]http.HandlerFunc{http.MethodPost: h.devScanHook})
	route("/api/contacts", map[string]http.HandlerFunc{http.MethodGet: h.listContacts, http.MethodPost: h.createContact})
	route("/api/contacts/{id}", map[string]http.HandlerFunc{http.MethodGet: h.getContact, http.MethodPatch: h.patchContact})
	route("/api/contacts/{id}/notes", map[string]http.HandlerFunc{http.MethodGet: h.listNotes, http.MethodPost: h.createNote})
	h.chatRoutes(route)
	m.HandleFunc("/socket.io/", func(w http.ResponseWriter, r *http.Request) {
		if h.sockets == nil {
			notFound(w)
			return
		}
		// The gateway has checked Origin against the public site; the
		// request is authenticated by the token. The WebSocket upgrader's own
		// same-origin check would compare the browser's Origin with this
		// slice's internal address and refuse, so the header stops here.
		r.Header.Del("Origin")
		h.sockets.ServeHTTP(w, r)
	})
	m.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { notFound(w) })
	h.mux = m
}

// ServeHTTP is the slice's only entry point. The order of the checks is the
// security model: /api/health is the one open path (Consul calls it without
// a token, and it tells only ok or not), everything under /api/ and
// /socket.io/ needs the gateway token, everything else does not exist.
// Nothing is ever decided by the caller's address: with host networking any
// local process can reach the port.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	sw := &statusWriter{ResponseWriter: w}
	defer func() {
		// Consul calls /api/health every 2 s; log it only when it fails.
		// A critical WhatsApp check is an answer, not a failure of ours.
		lvl := slog.LevelDebug
		if sw.status >= 500 && r.URL.Path != slicehub.WhatsAppCheckPath {
			lvl = slog.LevelWarn
		}
		h.log.Log(r.Context(), lvl, "request", "method", r.Method, "path", r.URL.Path,
			"status", sw.status, "duration_ms", time.Since(start).Milliseconds())
	}()

	path := r.URL.Path
	if path == "/api/health" {
		h.health(sw, r)
		return
	}
	if path == slicehub.WhatsAppCheckPath {
		h.whatsappHealth(sw, r)
		return
	}
	protected := strings.HasPrefix(path, "/api/") || path == "/api" ||
		strings.HasPrefix(path, "/socket.io/") || path == "/socket.io"
	if !protected {
		notFound(sw)
		return
	}
	b := h.ready.Load()
	if b == nil {
		// No token known yet, so no caller can be authenticated: say only
		// that the slice is starting.
		writeError(sw, h.log, slicehub.Errorf("slice.http", slicehub.KindUnavailable, "starting", "the slice is starting"))
		return
	}
	token := r.Header.Get(slicehub.HeaderGatewayToken)
	if token == "" {
		writeError(sw, h.log, slicehub.Errorf("slice.http", slicehub.KindUnauthorized, "unauthorized", "missing gateway token"))
		return
	}
	// Compare digests so that neither the content nor the length of the
	// token leaks through timing.
	sum := sha256.Sum256([]byte(token))
	if subtle.ConstantTimeCompare(sum[:], b.tokenSum[:]) != 1 {
		h.log.Warn("request with a wrong gateway token", "path", path, "remote", r.RemoteAddr)
		writeError(sw, h.log, slicehub.Errorf("slice.http", slicehub.KindUnauthorized, "unauthorized", "invalid gateway token"))
		return
	}
	ctx := context.WithValue(r.Context(), backendKey{}, b)
	h.mux.ServeHTTP(sw, r.WithContext(ctx))
}

type backendKey struct{}

func backendOf(r *http.Request) *backend { return r.Context().Value(backendKey{}).(*backend) }

// health answers Consul. It reveals only whether the slice can serve.
func (h *Handler) health(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		writeJSON(w, http.StatusMethodNotAllowed, errorBody{Error: "method not allowed", Code: "method_not_allowed"})
		return
	}
	b := h.ready.Load()
	if b == nil {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "starting"})
		return
	}
	// Below Consul's 1 s check timeout, so that a slow database shows up as
	// our 503 rather than as a timeout.
	ctx, cancel := context.WithTimeout(r.Context(), 800*time.Millisecond)
	defer cancel()
	if err := b.crm.Ping(ctx); err != nil {
		// Consul asks every 2 s; log the change, not every failure.
		if h.unhealthy.CompareAndSwap(false, true) {
			h.log.Warn("health: database ping failed; reporting unavailable", "err", err)
		}
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "unavailable"})
		return
	}
	if h.unhealthy.CompareAndSwap(true, false) {
		h.log.Info("health: database answers again")
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// whatsappHealth answers Consul's WhatsApp check (slicehub.WhatsAppCheck),
// which shows operators each slice's WhatsApp state in the Consul UI. Like
// /api/health it is open (Consul has no gateway token) and tells only a
// state in words, never a QR code or an account. Consul reads 2xx as
// passing, 429 as warning and anything else as critical, and shows the
// body as the check's output.
func (h *Handler) whatsappHealth(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		writeJSON(w, http.StatusMethodNotAllowed, errorBody{Error: "method not allowed", Code: "method_not_allowed"})
		return
	}
	downAfter := slicehub.DefaultWhatsAppDownAfter
	if v := r.URL.Query().Get(slicehub.DownAfterParam); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			writeError(w, h.log, slicehub.Errorf("slice.http", slicehub.KindInvalid, "invalid_down_after",
				"%s must be a duration such as 10m", slicehub.DownAfterParam))
			return
		}
		downAfter = d
	}
	state := h.state.State()
	since := time.Since(time.Unix(0, h.waSince.Load())).Round(time.Second)
	status, text := http.StatusServiceUnavailable, fmt.Sprintf("WhatsApp state %q: not one this check knows", state)
	switch state {
	case slicehub.WAConnected:
		status, text = http.StatusOK, "WhatsApp connected"
	case slicehub.WAQR:
		status, text = http.StatusTooManyRequests, fmt.Sprintf("WhatsApp waits for a QR scan (for %s)", since)
	case slicehub.WAStarting:
		status, text = http.StatusTooManyRequests, fmt.Sprintf("WhatsApp is starting: loading and linking (for %s)", since)
	case slicehub.WADisconnected:
		if since >= downAfter {
			text = fmt.Sprintf("WhatsApp disconnected for %s, over the %s alert threshold", since, downAfter)
		} else {
			status, text = http.StatusTooManyRequests, fmt.Sprintf("WhatsApp disconnected for %s; critical after %s", since, downAfter)
		}
	case slicehub.WAFailed:
		text = "WhatsApp failed: Chromium cannot run WhatsApp Web (the slice's log says why)"
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, text+"\n")
}

// Identity is what whoami answers, over HTTP and socket.io.
type Identity struct {
	SliceID string `json:"slice_id"`
	UserID  string `json:"user_id"`
}

func (h *Handler) whoami(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, Identity{SliceID: h.sliceID, UserID: r.Header.Get(slicehub.HeaderUserID)})
}

func (h *Handler) waState(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, struct {
		State string `json:"state"`
		// Importing: the history import runs after a link; the gateway's
		// admission counts it against the host's import cap.
		Importing bool `json:"importing"`
	}{h.state.State(), h.syncer != nil && h.syncer.Importing()})
}

// QRStatus is GET /api/status/qr?format=json.
type QRStatus struct {
	Seq int64  `json:"seq"`
	QR  string `json:"qr"` // the payload; "" when the page does not expose it
	At  string `json:"at"`
}

// qrCode serves the current QR code as a PNG, or as JSON with ?format=json
// (the payload, for a client that renders the code itself). The sequence
// number is in X-Slicehub-QR-Seq either way, so that a poller can tell a new
// code from the one it has. 404 "no_qr" while the page shows none.
func (h *Handler) qrCode(w http.ResponseWriter, r *http.Request) {
	var c QRCode
	ok := false
	if h.qr != nil {
		c, ok = h.qr.QR()
	}
	if !ok {
		writeError(w, h.log, slicehub.Errorf("slice.http", slicehub.KindNotFound, "no_qr",
			"no QR code is shown now (WhatsApp state %q)", h.state.State()))
		return
	}
	w.Header().Set("X-Slicehub-QR-Seq", strconv.FormatInt(c.Seq, 10))
	if r.URL.Query().Get("format") == "json" {
		writeJSON(w, http.StatusOK, QRStatus{Seq: c.Seq, QR: c.Payload, At: c.At.UTC().Format(time.RFC3339Nano)})
		return
	}
	w.Header().Set("Content-Type", "image/png")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Content-Length", strconv.Itoa(len(c.PNG)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(c.PNG)
}

// devScanHook plays the phone for the stand-in page (development only).
func (h *Handler) devScanHook(w http.ResponseWriter, r *http.Request) {
	if h.devScan == nil {
		notFound(w)
		return
	}
	if err := h.devScan(); err != nil {
		writeError(w, h.log, slicehub.Errorf("slice.http", slicehub.KindConflict, "nothing_to_scan", "the stand-in page shows no QR code to scan"))
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusNoContent)
}

func (h *Handler) listContacts(w http.ResponseWriter, r *http.Request) {
	after, limit, err := page(r)
	if err != nil {
		writeError(w, h.log, err)
		return
	}
	cs, err := backendOf(r).crm.ListContacts(r.Context(), after, limit)
	if err != nil {
		writeError(w, h.log, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"contacts": cs})
}

func (h *Handler) createContact(w http.ResponseWriter, r *http.Request) {
	var in NewContact
	if err := decodeJSON(w, r, &in); err != nil {
		writeError(w, h.log, err)
		return
	}
	c, err := backendOf(r).crm.CreateContact(r.Context(), in)
	if err != nil {
		writeError(w, h.log, err)
		return
	}
	w.Header().Set("Location", "/api/contacts/"+strconv.FormatInt(c.ID, 10))
	writeJSON(w, http.StatusCreated, c)
	h.push("contact", c)
}

func (h *Handler) getContact(w http.ResponseWriter, r *http.Request) {
	id, err := pathID(r)
	if err != nil {
		writeError(w, h.log, err)
		return
	}
	c, err := backendOf(r).crm.Contact(r.Context(), id)
	if err != nil {
		writeError(w, h.log, err)
		return
	}
	writeJSON(w, http.StatusOK, c)
}

func (h *Handler) listNotes(w http.ResponseWriter, r *http.Request) {
	id, err := pathID(r)
	if err != nil {
		writeError(w, h.log, err)
		return
	}
	after, limit, err := page(r)
	if err != nil {
		writeError(w, h.log, err)
		return
	}
	ns, err := backendOf(r).crm.Notes(r.Context(), id, after, limit)
	if err != nil {
		writeError(w, h.log, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"notes": ns})
}

// NewNote is the body of POST /api/contacts/{id}/notes.
type NewNote struct {
	Body string `json:"body"`
}

func (h *Handler) createNote(w http.ResponseWriter, r *http.Request) {
	id, err := pathID(r)
	if err != nil {
		writeError(w, h.log, err)
		return
	}
	var in NewNote
	if err := decodeJSON(w, r, &in); err != nil {
		writeError(w, h.log, err)
		return
	}
	n, err := backendOf(r).crm.CreateNote(r.Context(), id, in.Body)
	if err != nil {
		writeError(w, h.log, err)
		return
	}
	writeJSON(w, http.StatusCreated, n)
	h.push("note", n)
}

// pathID parses {id} as a positive integer.
func pathID(r *http.Request) (int64, error) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id <= 0 {
		return 0, slicehub.Errorf("slice.http", slicehub.KindInvalid, "invalid_id", "the contact id must be a positive integer")
	}
	return id, nil
}

// page reads ?after=<id>&limit=<n> for keyset pagination.
func page(r *http.Request) (after int64, limit int, err error) {
	const op = "slice.http"
	q := r.URL.Query()
	limit = 50
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > maxPageLen {
			return 0, 0, slicehub.Errorf(op, slicehub.KindInvalid, "invalid_limit", "limit must be between 1 and %d", maxPageLen)
		}
		limit = n
	}
	if s := q.Get("after"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 0 {
			return 0, 0, slicehub.Errorf(op, slicehub.KindInvalid, "invalid_after", "after must be a non-negative integer")
		}
		after = n
	}
	return after, limit, nil
}

// decodeJSON reads exactly one JSON object of a known shape from a bounded
// body. Each failure gets its own code, so a client developer sees at once
// what is wrong.
func decodeJSON(w http.ResponseWriter, r *http.Request, v any) error {
	const op = "slice.decode"
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/json" {
		return slicehub.Errorf(op, slicehub.KindInvalid, "not_json", "the body must be JSON (Content-Type: application/json)")
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var maxErr *http.MaxBytesError
		var synErr *json.SyntaxError
		var typeErr *json.UnmarshalTypeError
		switch {
		case errors.As(err, &maxErr):
			return slicehub.Errorf(op, slicehub.KindTooLarge, "too_large", "the body is larger than %d bytes", maxBodyBytes)
		case errors.Is(err, io.EOF):
			return slicehub.Errorf(op, slicehub.KindInvalid, "empty_body", "the body is empty")
		case errors.As(err, &synErr), errors.Is(err, io.ErrUnexpectedEOF):
			return slicehub.Errorf(op, slicehub.KindInvalid, "malformed_json", "the body is not valid JSON")
		case errors.As(err, &typeErr) && typeErr.Field == "":
			return slicehub.Errorf(op, slicehub.KindInvalid, "invalid_field", "the body must be a JSON object")
		case errors.As(err, &typeErr):
			return slicehub.Errorf(op, slicehub.KindInvalid, "invalid_field", "field %q has the wrong type", typeErr.Field)
		case strings.HasPrefix(err.Error(), "json: unknown field "):
			return slicehub.Errorf(op, slicehub.KindInvalid, "unknown_field", "%s", strings.TrimPrefix(err.Error(), "json: "))
		default:
			return slicehub.Errorf(op, slicehub.KindInvalid, "malformed_json", "the body is not valid JSON")
		}
	}
	if dec.More() {
		return slicehub.Errorf(op, slicehub.KindInvalid, "malformed_json", "the body must hold a single JSON object")
	}
	return nil
}

// errorBody is every error answer: a message for people and a stable code
// for programs.
type errorBody struct {
	Error string `json:"error"`
	Code  string `json:"code"`
}

// statusOf maps an error kind to its HTTP status, as the gateway does.
func statusOf(k slicehub.Kind) int { return k.HTTPStatus() }

// writeError is the one place an error becomes an answer. Only internal
// errors are logged (the others are the client's business), and their
// cause never reaches the client.
func writeError(w http.ResponseWriter, log *slog.Logger, err error) {
	kind := slicehub.KindOf(err)
	if kind == slicehub.KindInternal || kind == slicehub.KindUnavailable {
		log.Error("request failed", "err", err)
	}
	writeJSON(w, statusOf(kind), errorBody{Error: slicehub.MessageOf(err), Code: slicehub.CodeOf(err)})
}

func notFound(w http.ResponseWriter) {
	writeJSON(w, http.StatusNotFound, errorBody{Error: "not found", Code: "not_found"})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// statusWriter records the status for the access log. It passes Hijack and
// Flush through (socket.io's WebSocket upgrade and long polling need them)
// via Unwrap, which http.ResponseController uses.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (s *statusWriter) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// Flush and Hijack are also implemented directly, because libraries (the
// socket.io engine among them) type-assert instead of using
// http.ResponseController.
func (s *statusWriter) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Hijack hands the connection to the WebSocket upgrader (gorilla/websocket
// type-asserts http.Hijacker).
func (s *statusWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	h, ok := s.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, errors.New("the response writer cannot be hijacked")
	}
	if s.status == 0 {
		s.status = http.StatusSwitchingProtocols
	}
	return h.Hijack()
}
