package gateway

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/slicehub/slicehub"
	"github.com/slicehub/slicehub/gateway/pages"
)

// The workspace stream, from a slice being provisioned to WhatsApp
// connected: stages from the progress source, then the slice's own state
// and QR codes, then connected, then signed_out at logout.
func TestWorkspaceEventsFollowTheSlice(t *testing.T) {
	e := newPageEnv(t)
	e.slices.claimWarm = false // an on-demand slice: provisioning first
	u := e.signup("wes@example.com")
	sl := e.slices.sliceOf(u.id)
	if sl.State != slicehub.StateProvisioning {
		t.Fatalf("claimed slice %+v; want provisioning", sl)
	}
	ws := newWASlice(t, sl.ID)

	st, resp := e.openEvents(u.client)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" ||
		resp.Header.Get("X-Accel-Buffering") != "no" {
		t.Fatalf("events: %d %v", resp.StatusCode, resp.Header)
	}
	got := st.untilStatus("queued", func(w pages.WorkspaceStatus) bool { return w.Phase == "starting" })
	if stepStates(got) != "done,current,todo,todo,todo,todo" || got.Headline != "Creating your database…" {
		t.Fatalf("first status %+v; want queued done, database current", got)
	}

	e.progress.set(u.id, sl.ID, slicehub.StageDispatched)
	got = st.untilStatus("dispatched", func(w pages.WorkspaceStatus) bool { return stepStates(w) == "done,done,done,current,todo,todo" })
	if got.Headline != "Starting your workspace…" {
		t.Errorf("headline %q", got.Headline)
	}

	// The slice turns healthy and is bound: the gateway asks it for
	// WhatsApp's state, with its token (the fake refuses without).
	e.slices.set(u.id, slicehub.Slice{ID: sl.ID, State: slicehub.StateAssigned, UserID: u.id})
	e.routes.set(sl.ID, ws.addr())
	e.srv.InvalidateSlice(sl.ID)
	got = st.untilStatus("whatsapp starting", func(w pages.WorkspaceStatus) bool { return w.Phase == "whatsapp" })
	if got.WhatsApp != slicehub.WAStarting || stepStates(got) != "done,done,done,done,done,current" {
		t.Fatalf("status %+v; want WhatsApp starting with the slice online", got)
	}

	ws.set(slicehub.WAQR)
	got = st.untilStatus("first QR", func(w pages.WorkspaceStatus) bool { return w.QR != nil })
	if *got.QR != (pages.WorkspaceQR{Seq: 1, Index: 1, Count: 6, Src: "/api/status/qr?seq=1"}) {
		t.Fatalf("QR %+v; want code 1 of 6", *got.QR)
	}
	// The image itself comes through the proxy with the user's session.
	img := e.do(u.client, "GET", got.QR.Src, "", nil)
	if img.status != http.StatusOK || img.header.Get("Content-Type") != "image/png" {
		t.Fatalf("QR image through the proxy: %d %s", img.status, img.header.Get("Content-Type"))
	}
	for i := 2; i <= 7; i++ {
		ws.set(slicehub.WAQR)
		seq := int64(i)
		got = st.untilStatus("next QR", func(w pages.WorkspaceStatus) bool { return w.QR != nil && w.QR.Seq == seq })
	}
	if got.QR.Index != 1 || got.QR.Count != 6 {
		t.Errorf("seventh code shown as %d of %d; want a new round, 1 of 6", got.QR.Index, got.QR.Count)
	}

	ws.set(slicehub.WAConnected)
	got = st.untilStatus("connected", func(w pages.WorkspaceStatus) bool { return w.Phase == "connected" })
	if got.QR != nil || stepStates(got) != "done,done,done,done,done,done" {
		t.Fatalf("connected status %+v", got)
	}

	// Logging out ends the stream with signed_out.
	r := e.do(u.client, "POST", "/auth/logout", "", nil)
	if r.status != http.StatusNoContent {
		t.Fatal(r.status)
	}
	st.until("signed_out", func(ev sseEvent) bool { return ev.name == "signed_out" })
}

func TestWorkspaceQRWithoutSequenceHeader(t *testing.T) {
	e := newPageEnv(t)
	u := e.signup("nos@example.com")
	sl := e.slices.sliceOf(u.id)
	ws := newWASlice(t, sl.ID)
	ws.noSeq = true
	e.routes.set(sl.ID, ws.addr())
	e.srv.Invalidate(u.id)
	ws.set(slicehub.WAQR)
	st, _ := e.openEvents(u.client)
	st.untilStatus("code 1", func(w pages.WorkspaceStatus) bool { return w.QR != nil && w.QR.Index == 1 })
	ws.set(slicehub.WAQR)
	st.untilStatus("code 2, counted by the gateway", func(w pages.WorkspaceStatus) bool { return w.QR != nil && w.QR.Index == 2 })
}

func TestWorkspacePageRendersWithoutJavaScript(t *testing.T) {
	e := newPageEnv(t)
	u := e.signup("nojs@example.com")
	sl := e.slices.sliceOf(u.id)
	ws := newWASlice(t, sl.ID)
	e.routes.set(sl.ID, ws.addr())
	ws.set(slicehub.WAQR)
	e.srv.Invalidate(u.id)
	r := e.do(u.client, "GET", "/workspace", "", nil)
	page := string(r.body)
	for _, want := range []string{`data-phase="whatsapp"`, `src="/api/status/qr?seq=1"`, "Code 1 of 6",
		`http-equiv="refresh"`, "nojs@example.com", `action="/logout"`} {
		if !strings.Contains(page, want) {
			t.Errorf("workspace page lacks %s", want)
		}
	}
}

func TestWorkspaceStates(t *testing.T) {
	for _, tc := range []struct {
		state slicehub.SliceState
		phase string
	}{
		{slicehub.StateSuspended, "suspended"},
		{slicehub.StateFailed, "unavailable"},
	} {
		e := newPageEnv(t)
		u := e.signup(string(tc.state) + "@example.com")
		e.slices.set(u.id, slicehub.Slice{ID: 500, State: tc.state, UserID: u.id})
		e.srv.Invalidate(u.id)
		r := e.do(u.client, "GET", "/workspace", "", nil)
		if !strings.Contains(string(r.body), `data-phase="`+tc.phase+`"`) {
			t.Errorf("%s slice: workspace page is not in phase %s", tc.state, tc.phase)
		}
	}

	// No slice at all (the claim failed at signup): the page claims again.
	e := newPageEnv(t)
	e.slices.claimErr = slicehub.Errorf("fake.claim", slicehub.KindUnavailable, "no_capacity", "full")
	u := e.signup("late@example.com")
	e.slices.mu.Lock()
	e.slices.claimErr = nil
	e.slices.mu.Unlock()
	r := e.do(u.client, "GET", "/workspace", "", nil)
	if e.slices.sliceOf(u.id).ID == 0 || strings.Contains(string(r.body), `data-phase="pending"`) {
		t.Fatalf("workspace did not claim a slice for a user without one")
	}
}

func TestWorkspaceEventsNeedASession(t *testing.T) {
	e := newPageEnv(t)
	_, resp := e.openEvents(newBrowser())
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("events without a session: %d; want 401", resp.StatusCode)
	}
	// And /workspace sends the browser to log in.
	r := e.do(nil, "GET", "/workspace", "", nil)
	if r.status != http.StatusSeeOther || r.header.Get("Location") != "/login" {
		t.Fatalf("/workspace anonymous: %d %q", r.status, r.header.Get("Location"))
	}
}

func TestWorkspaceEventsPerUserLimit(t *testing.T) {
	e := newPageEnv(t)
	u := e.signup("tabs@example.com")
	for i := 0; i < pages.MaxStreamsPerUser; i++ {
		st, resp := e.openEvents(u.client)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("stream %d: %d", i+1, resp.StatusCode)
		}
		st.until("the first event", func(sseEvent) bool { return true })
	}
	_, resp := e.openEvents(u.client)
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("stream %d: %d; want 429 with Retry-After", pages.MaxStreamsPerUser+1, resp.StatusCode)
	}
	// Another user is not affected.
	if _, resp := e.openEvents(e.signup("other@example.com").client); resp.StatusCode != http.StatusOK {
		t.Fatalf("another user's stream: %d", resp.StatusCode)
	}
}

// The billing link shows on the workspace only when billing is on.
func TestWorkspaceLinksBillingWhenEnabled(t *testing.T) {
	for _, enabled := range []bool{false, true} {
		e := newPageEnv(t, func(c *Config, _ *Deps) { c.BillingEnabled = enabled })
		u := e.signup(fmt.Sprintf("billing-%t@example.com", enabled))
		page := string(e.do(u.client, "GET", "/workspace", "", nil).body)
		if got := strings.Contains(page, `href="/billing"`); got != enabled {
			t.Errorf("billing enabled=%t: workspace links /billing = %t", enabled, got)
		}
	}
}

// On the development platform the workspace offers to play the phone: the
// form (CSRF-protected) asks the user's own slice to link its stand-in, and
// the page then shows WhatsApp connected. Without StandinScan there is no
// such button and no such route.
func TestWorkspaceDevScanLinksTheStandin(t *testing.T) {
	e := newPageEnv(t, func(c *Config, _ *Deps) { c.StandinScan = true })
	u := e.signup("scan@example.com")
	sl := e.slices.sliceOf(u.id)
	ws := newWASlice(t, sl.ID)
	e.routes.set(sl.ID, ws.addr())
	ws.set(slicehub.WAQR)
	e.srv.Invalidate(u.id)

	// Without the CSRF token the scan is refused and nothing changes.
	if r := e.do(u.client, "POST", "/workspace/dev-scan", "csrf_token=forged", map[string]string{"Content-Type": "application/x-www-form-urlencoded"}); r.status != http.StatusForbidden {
		t.Fatalf("dev scan without a CSRF token: status %d, want 403", r.status)
	}
	if got := e.do(u.client, "GET", "/api/status/state", "", nil); !strings.Contains(string(got.body), `"`+slicehub.WAQR+`"`) {
		t.Fatalf("state after a refused scan: %s", got.body)
	}
	r := e.form(u.client, "/workspace", "/workspace/dev-scan", url.Values{})
	if r.status != http.StatusSeeOther {
		t.Fatalf("dev scan: status %d, want 303 back to the workspace", r.status)
	}
	e.srv.Invalidate(u.id)
	if page := string(e.do(u.client, "GET", "/workspace", "", nil).body); !strings.Contains(page, `data-whatsapp="connected"`) {
		t.Errorf("workspace after the simulated scan does not show WhatsApp connected")
	}

	off := newPageEnv(t)
	v := off.signup("noscan@example.com")
	if page := string(off.do(v.client, "GET", "/workspace", "", nil).body); strings.Contains(page, "dev-scan") {
		t.Error("the production workspace offers a simulated scan")
	}
	if r := off.do(v.client, "POST", "/workspace/dev-scan", "csrf_token=forged", map[string]string{"Content-Type": "application/x-www-form-urlencoded"}); r.status != http.StatusNotFound && r.status != http.StatusForbidden && r.status != http.StatusMethodNotAllowed {
		t.Errorf("POST /workspace/dev-scan without StandinScan: status %d, want no such route", r.status)
	}
}
