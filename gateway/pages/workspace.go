package pages

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/valyala/fasthttp"

	"github.com/slicehub/slicehub"
	"github.com/slicehub/slicehub/gateway/accounts"
	"github.com/slicehub/slicehub/gateway/wire"
	"github.com/slicehub/slicehub/sliceclient"
)

// "Your workspace": the page a user lands on after signing up or in. While
// the slice starts it shows how far it has come (stages from PostgreSQL
// through ProgressSource, and the route table); once the slice answers, the
// WhatsApp state and QR code that the slice itself reports on
// /api/status/state and /api/status/qr; then the connected state.
//
// The page is rendered complete on the server, so it is right even without
// JavaScript (a <noscript> refresh keeps it current). With JavaScript, it
// follows GET /workspace/events, a server-sent event stream of the same
// status whenever it changes. The gateway polls on behalf of the page
// (Config.WorkspacePoll) rather than the page polling the slice, so a
// browser holds one connection and the slice sees one cheap request a tick
// from the gateway it already trusts. The QR image itself goes through the
// ordinary proxy path (/api/status/qr) with the user's own session.

// WorkspaceStatus is what the page shows; the SSE stream sends it as JSON.
type WorkspaceStatus struct {
	// Phase: "pending" (no slice bound yet), "starting", "whatsapp" (the
	// slice answers; WhatsApp not linked), "connected", "suspended",
	// "unavailable".
	Phase    string          `json:"phase"`
	Headline string          `json:"headline"`
	Detail   string          `json:"detail,omitempty"`
	SliceID  int64           `json:"slice_id,omitempty"`
	Steps    []WorkspaceStep `json:"steps,omitempty"`
	WhatsApp string          `json:"whatsapp,omitempty"`
	QR       *WorkspaceQR    `json:"qr,omitempty"`
	// App is where the CRM lives, once connected (the SPA, when served).
	App string `json:"app,omitempty"`
	// Queued is what the user waits in line for ("dispatch": the slice to
	// start; "pairing": a QR code), QueuePosition the place, 1 next
	// (admission control, scheduler/admission.go).
	Queued        string `json:"queued,omitempty"`
	QueuePosition int    `json:"queue_position,omitempty"`
}

// WorkspaceStep is one line of the progress list.
type WorkspaceStep struct {
	ID    string `json:"id"`
	Label string `json:"label"`
	State string `json:"state"` // "done", "current", "todo"
}

// WorkspaceQR is one QR code: "code Index of Count", and the image URL
// (through the proxy; seq makes each code a new URL).
type WorkspaceQR struct {
	Seq   int64  `json:"seq"`
	Index int    `json:"index"`
	Count int    `json:"count"`
	Src   string `json:"src"`
}

// workspaceSteps are the stages of slicehub.Stages, then WhatsApp.
var workspaceSteps = []struct {
	id, label, doing string
}{
	{string(slicehub.StageQueued), "Workspace reserved", "Reserving your workspace…"},
	{string(slicehub.StageDatabase), "Database created", "Creating your database…"},
	{string(slicehub.StageDispatched), "Workspace scheduled", "Scheduling your workspace…"},
	{string(slicehub.StageRunning), "Workspace started", "Starting your workspace…"},
	{string(slicehub.StageHealthy), "Workspace online", "Bringing your workspace online…"},
	{"whatsapp", "WhatsApp linked", "Opening WhatsApp…"},
}

const stepWhatsApp = 5

func stageIndex(st slicehub.Stage) int {
	for i, s := range slicehub.Stages {
		if s == st {
			return i
		}
	}
	return -1
}

func stepsUpTo(reached int) []WorkspaceStep {
	out := make([]WorkspaceStep, len(workspaceSteps))
	for i, s := range workspaceSteps {
		state := "todo"
		switch {
		case i <= reached:
			state = "done"
		case i == reached+1:
			state = "current"
		}
		out[i] = WorkspaceStep{ID: s.id, Label: s.label, State: state}
	}
	return out
}

// qrTracker numbers QR codes for one viewer. The reference slice numbers
// them itself (X-Slicehub-QR-Seq); for a slice that does not, a new image
// is a new code.
type qrTracker struct {
	last  [sha256.Size]byte
	local int64
}

// workspaceStatusOf builds the status of sess's workspace now.
func (s *Service) workspaceStatusOf(ctx context.Context, sess *accounts.Session, qt *qrTracker) WorkspaceStatus {
	if sess.SliceID == 0 {
		return WorkspaceStatus{Phase: "pending", Headline: "Preparing your workspace…",
			Detail: "All our workspaces are busy right now; yours is next in line.", Steps: stepsUpTo(-1)}
	}
	st := WorkspaceStatus{SliceID: sess.SliceID}
	switch sess.State {
	case slicehub.StateSuspended:
		st.Phase, st.Headline = "suspended", "Your workspace is suspended"
		st.Detail = "Your data is kept. Contact us to resume it."
		return st
	case slicehub.StateFailed, slicehub.StateRetired:
		st.Phase, st.Headline = "unavailable", "Your workspace is unavailable"
		st.Detail = "We have been alerted and are on it. Please try again later."
		return st
	case slicehub.StateProvisioning, slicehub.StateWarm, slicehub.StateAssigned:
		// On its way, or there: the progress below says how far.
	}

	reached := stageIndex(slicehub.StageQueued)
	if s.progress != nil {
		if p, err := s.progress.SliceProgress(ctx, sess.User.ID); err == nil && p.SliceID == sess.SliceID {
			reached = max(reached, stageIndex(p.Stage))
			if p.Queue != nil {
				st.Queued, st.QueuePosition = string(p.Queue.For), p.Queue.Position
			}
		} else if err != nil && slicehub.KindOf(err) != slicehub.KindNotFound {
			s.log.Warn("workspace progress unavailable", "user_id", sess.User.ID, "err", err)
		}
	}
	if sess.State == slicehub.StateAssigned {
		// Bound to the user means dispatched: assignment happens to a warm
		// slice or, on demand, to one whose job exists.
		reached = max(reached, stageIndex(slicehub.StageDispatched))
	}
	route, routed := s.deps.Routes.Lookup(sess.SliceID)
	routed = routed && route.Addr != "" && route.SliceID == sess.SliceID
	if routed {
		reached = stageIndex(slicehub.StageHealthy)
	}
	st.Steps = stepsUpTo(reached)
	st.Phase = "starting"
	if reached+1 < len(workspaceSteps) {
		st.Headline = workspaceSteps[reached+1].doing
	}
	if st.Queued != "" {
		st.Headline = "Your workspace starts soon: you are number " + strconv.Itoa(st.QueuePosition) + " in line"
		st.Detail = "Many people are signing up right now; we start workspaces a few at a time so that each runs well."
	}
	if !routed || sess.State != slicehub.StateAssigned {
		return st
	}

	wa, importing, err := s.sliceWhatsAppState(sess)
	if err != nil {
		// Passing its health check but not answering the API yet: the slice
		// is still fetching its credentials or migrating.
		st.Headline = "Your workspace is starting…"
		return st
	}
	st.Phase, st.WhatsApp = "whatsapp", wa
	switch wa {
	case slicehub.WAStarting:
		st.Headline = "Opening WhatsApp…"
	case slicehub.WAQR:
		if pm := s.pairingPermit(ctx, sess, wa, importing); !pm.Granted && pm.Queue != nil {
			st.Queued, st.QueuePosition = string(pm.Queue.For), pm.Queue.Position
			st.Headline = "You are number " + strconv.Itoa(pm.Queue.Position) + " in line to link your WhatsApp"
			st.Detail = "We link a few accounts at a time on each server; your QR code appears here when it is your turn. Keep this page open."
			return st
		}
		st.Headline = "Link your WhatsApp"
		st.Detail = "On your phone, open WhatsApp, go to Settings › Linked devices › Link a device, and scan this code."
		st.QR = s.sliceQR(sess, qt)
		if st.QR == nil {
			st.Headline = "Waiting for a QR code…"
		}
	case slicehub.WAConnected:
		s.pairingPermit(ctx, sess, wa, importing) // moves the permit on: importing, then given back
		st.Phase, st.Headline = "connected", "WhatsApp is connected"
		st.Detail = "Your workspace is ready."
		st.Steps = stepsUpTo(stepWhatsApp)
		if s.spa != nil {
			st.App = s.cfg.SPAPrefix
		}
	case slicehub.WADisconnected:
		st.Headline = "WhatsApp lost its connection"
		st.Detail = "Check that your phone is on and connected to the internet."
	case slicehub.WAFailed:
		st.Headline = "WhatsApp could not start"
		st.Detail = "Your workspace keeps trying. If this lasts, contact us."
	default:
		st.Headline = "WhatsApp is " + wa
	}
	return st
}

// sliceWhatsAppState asks the slice for its WhatsApp state, and whether
// its history import runs.
func (s *Service) sliceWhatsAppState(sess *accounts.Session) (string, bool, error) {
	c, sl, err := s.sliceClient(sess)
	if err != nil {
		return "", false, err
	}
	st, err := c.WhatsAppStatus(context.Background(), sl)
	return st.State, st.Importing, err
}

// pairingPermit asks the pairing gate (Deps.Pairing) whether sess may see
// a QR code now, and renews or moves on its permit. Without a gate, or
// when the gate cannot answer (logged), the code is shown: the gate
// protects the host, and a broken database is not the user's to wait on.
func (s *Service) pairingPermit(ctx context.Context, sess *accounts.Session, wa string, importing bool) slicehub.Permit {
	if s.pairing == nil {
		return slicehub.Permit{Granted: true}
	}
	pm, err := s.pairing.Pairing(ctx, sess.SliceID, wa, importing)
	if err != nil {
		s.log.Warn("pairing gate unavailable; the QR code is shown", "slice_id", sess.SliceID, "err", err)
		return slicehub.Permit{Granted: true}
	}
	return pm
}

// sliceQR reads the slice's current QR code, or nil when it shows none.
func (s *Service) sliceQR(sess *accounts.Session, qt *qrTracker) *WorkspaceQR {
	c, sl, err := s.sliceClient(sess)
	if err != nil {
		return nil
	}
	qr, err := c.QR(context.Background(), sl)
	if err != nil {
		return nil
	}
	seq := qr.Seq
	if seq <= 0 {
		if sum := sha256.Sum256(qr.PNG); sum != qt.last {
			qt.last = sum
			qt.local++
		}
		seq = qt.local
	}
	n := s.cfg.QRCodesPerRound
	return &WorkspaceQR{Seq: seq, Index: int((seq-1)%int64(n)) + 1, Count: n,
		Src: sliceclient.PathQR + "?seq=" + strconv.FormatInt(seq, 10)}
}

// workspacePage renders "Your workspace" for the signed-in user.
func (s *Service) workspacePage(c *fiber.Ctx) error {
	sess := s.signedIn(c)
	if sess == nil {
		return redirect(c, "/login")
	}
	if sess.SliceID == 0 {
		// The claim at signup found no slice (or failed): try again, as
		// login does, so that reloading this page is enough to get in line.
		ctx, cancel := s.acc.BackendContext(c)
		id, _ := s.acc.SliceAtLogin(ctx, sess.User.ID)
		cancel()
		if id != 0 {
			s.invalidate(sess.User.ID)
			if fresh, err := s.acc.Session(c); err == nil {
				sess = fresh
			}
		}
	}
	ctx, cancel := s.acc.BackendContext(c)
	defer cancel()
	var qt qrTracker
	d := &pageData{Title: "Your workspace", CSRF: s.CSRFToken(c), SignedIn: true, Email: sess.User.Email, Billing: s.cfg.BillingEnabled, DevScan: s.cfg.StandinScan,
		Status: s.workspaceStatusOf(ctx, sess, &qt)}
	return s.render(c, http.StatusOK, "workspace", d)
}

// workspaceDevScan plays the phone on the development platform: the slices
// serve a stand-in for WhatsApp Web (no internet, no phone), and this form
// asks the user's own slice to link it, as scanning the QR code would. It
// exists only when Config.StandinScan is set.
func (s *Service) workspaceDevScan(c *fiber.Ctx) error {
	if err := s.VerifyCSRF(c); err != nil {
		return err
	}
	sess := s.signedIn(c)
	if sess == nil {
		return redirect(c, "/login")
	}
	sc, sl, err := s.sliceClient(sess)
	if err != nil {
		return err
	}
	a, err := sc.Do(context.Background(), sl, fasthttp.MethodPost, sliceclient.PathDevScan, 4<<10)
	if cause := errors.Unwrap(err); slicehub.CodeOf(err) == "slice_unreachable" && cause != nil {
		return cause // the proxy's answer to it (the gateway's client maps it)
	}
	if err != nil {
		return err
	}
	if status := a.Status; status >= 300 {
		return slicehub.Errorf("gateway.dev_scan", slicehub.KindBadGateway, "dev_scan_refused",
			"the workspace refused the simulated scan (status %d)", status)
	}
	return redirect(c, "/workspace")
}

// workspaceEvents streams the workspace status as server-sent events: an
// event "status" whenever it changes, a comment every few seconds otherwise
// (so a closed tab is noticed and proxies keep the stream open), and "signed_out"
// when the session ends, after which the stream closes.
func (s *Service) workspaceEvents(c *fiber.Ctx) error {
	sess, err := s.acc.Session(c)
	if err != nil {
		return err
	}
	c.Set(fiber.HeaderContentType, "text/event-stream")
	c.Set(fiber.HeaderCacheControl, "no-store")
	c.Set(fiber.HeaderXContentTypeOptions, "nosniff")
	// nginx buffers proxied answers unless told otherwise; events must flow.
	c.Set("X-Accel-Buffering", "no")
	// Each stream polls on the user's behalf; a few tabs are normal, a
	// thousand are an attack on the database and the slice.
	userID := sess.User.ID
	if !s.streams.acquire(userID, MaxStreamsPerUser) {
		return wire.WithRetry("gateway.workspace", slicehub.KindRateLimited, "too_many_streams",
			"too many open workspace pages; close some", 10*time.Second)
	}
	h := sess.Hash
	c.Context().SetBodyStreamWriter(func(w *bufio.Writer) {
		defer s.streams.release(userID)
		s.streamWorkspace(h, w)
	})
	return nil
}

// MaxStreamsPerUser bounds a user's open workspace event streams.
const MaxStreamsPerUser = 8

// streamCounts counts open workspace streams per user.
type streamCounts struct {
	mu sync.Mutex
	m  map[int64]int
}

func (sc *streamCounts) acquire(userID int64, limit int) bool {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if sc.m == nil {
		sc.m = map[int64]int{}
	}
	if sc.m[userID] >= limit {
		return false
	}
	sc.m[userID]++
	return true
}

func (sc *streamCounts) release(userID int64) {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if sc.m[userID]--; sc.m[userID] <= 0 {
		delete(sc.m, userID)
	}
}

// sseKeepAlive is how often a quiet stream gets a comment line. A stream
// learns that its tab is gone only when a write fails, and until then it
// keeps polling and holds one of the user's stream slots: short, so that
// a user reloading the page never runs out of them.
const sseKeepAlive = 2 * time.Second

func (s *Service) streamWorkspace(h accounts.TokenHash, w *bufio.Writer) {
	// The browser reconnects after this long when the stream ends.
	if _, err := w.WriteString("retry: 2000\n\n"); err != nil || w.Flush() != nil {
		return
	}
	started := time.Now()
	tick := time.NewTicker(s.cfg.WorkspacePoll)
	defer tick.Stop()
	var (
		last      []byte
		lastWrite = time.Now()
		qt        qrTracker
		connected bool
	)
	for n := 0; ; n++ {
		sess, err := s.sessionByHash(h)
		switch {
		case err == nil && connected && n%5 != 0:
			// Linked: the state rarely changes any more, so the slice is
			// asked every fifth tick; the session is still checked each tick.
		case err == nil:
			ctx, cancel := context.WithTimeout(context.Background(), s.cfg.BackendTimeout)
			st := s.workspaceStatusOf(ctx, sess, &qt)
			cancel()
			connected = st.Phase == "connected"
			b, _ := json.Marshal(st)
			if !bytes.Equal(b, last) {
				last = b
				if writeEvent(w, "status", b) != nil {
					return
				}
				lastWrite = time.Now()
			}
		case slicehub.KindOf(err) == slicehub.KindUnauthorized:
			_ = writeEvent(w, "signed_out", []byte("{}"))
			return
		default:
			// PostgreSQL blinked: keep the last status and try next tick.
		}
		if time.Since(lastWrite) >= sseKeepAlive {
			if _, err := w.WriteString(": keep-alive\n\n"); err != nil || w.Flush() != nil {
				return
			}
			lastWrite = time.Now()
		}
		if time.Since(started) >= s.cfg.WorkspaceMaxStream {
			return
		}
		select {
		case <-s.stop:
			return
		case <-tick.C:
		}
	}
}

func writeEvent(w *bufio.Writer, name string, data []byte) error {
	w.WriteString("event: ")
	w.WriteString(name)
	w.WriteString("\ndata: ")
	w.Write(data) // JSON: one line, no raw newlines
	w.WriteString("\n\n")
	return w.Flush()
}

// sessionByHash resolves a session outside a request, as a stream does
// each tick: from the cache, or once from the database.
func (s *Service) sessionByHash(h accounts.TokenHash) (*accounts.Session, error) {
	if sess := s.acc.Sessions.Get(h, s.now()); sess != nil {
		return sess, nil
	}
	return s.acc.LoadSession(h)
}
