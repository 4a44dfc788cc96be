package gateway

import (
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
	"github.com/slicehub/slicehub/testsupport"

	"github.com/slicehub/slicehub"
)

// The pages in a real headless Chromium: what a user does, click by click,
// with a screenshot of every state under test-artifacts/gateway/. The
// gateway runs on fakes (accounts, slices, routes) and a fake slice that
// reports WhatsApp states and QR codes; cmd/slicehub's pages test does the
// same against the real platform.

func TestPagesInChromium(t *testing.T) {
	e := newPageEnv(t)
	e.slices.claimWarm = false // an on-demand slice, so the workspace shows it starting
	b := testsupport.NewBrowser(t, e.url, "gateway", 1024)

	// Landing, then sign up through the form (a weak password first).
	b.Open("/")
	b.WaitPage("/", "#cta-signup")
	b.Shot("landing")
	b.Do("click sign up", chromedp.Click(chromedp.ID("cta-signup")))
	b.WaitPage("/signup", "#signup-form")
	b.Fill(map[string]string{"email": "ada@example.com", "password": "short"}, "submit")
	b.WaitPage("/signup", "#error")
	if got := b.Text("#error"); !strings.Contains(got, "10 to 128 characters") {
		t.Fatalf("weak password error %q", got)
	}
	b.Shot("signup-error")
	b.Fill(map[string]string{"email": "ada@example.com", "password": "correct horse battery"}, "submit")

	// The workspace shows the slice starting, stage by stage.
	b.WaitPage("/workspace", "#workspace")
	u, _, err := e.accounts.UserByEmail(t.Context(), "ada@example.com")
	if err != nil {
		t.Fatal(err)
	}
	sl := e.slices.sliceOf(u.ID)
	b.WaitFor("starting", `document.querySelector("#workspace").dataset.phase === "starting"`)
	b.Shot("workspace-queued")
	e.progress.set(u.ID, sl.ID, slicehub.StageRunning)
	b.WaitFor("allocation running", `document.querySelector('[data-step="allocation_running"]').classList.contains("done")`)
	if got := b.Text("#headline"); got != "Bringing your workspace online…" {
		t.Errorf("headline %q", got)
	}
	b.Shot("workspace-running")

	// The slice comes up: WhatsApp's state, then QR codes, through the proxy.
	ws := newWASlice(t, sl.ID)
	e.slices.set(u.ID, slicehub.Slice{ID: sl.ID, State: slicehub.StateAssigned, UserID: u.ID})
	e.routes.set(sl.ID, ws.addr())
	e.srv.InvalidateSlice(sl.ID)
	b.WaitFor("whatsapp starting", `document.querySelector("#workspace").dataset.whatsapp === "starting"`)
	b.Shot("whatsapp-starting")
	ws.set(slicehub.WAQR)
	b.WaitFor("QR code 1", `document.querySelector("#qr-count").textContent === "Code 1 of 6" &&
		document.querySelector("#qr-img").complete && document.querySelector("#qr-img").naturalWidth === 264`)
	b.Shot("qr-code-1")
	ws.set(slicehub.WAQR)
	b.WaitFor("QR code 2", `document.querySelector("#qr-count").textContent === "Code 2 of 6" &&
		document.querySelector("#qr-img").getAttribute("src") === "/api/status/qr?seq=2" &&
		document.querySelector("#qr-img").complete && document.querySelector("#qr-img").naturalWidth === 264`)
	b.Shot("qr-code-2")
	if n := ws.qrCalls.Load(); n < 2 {
		t.Errorf("the slice served %d QR requests; want the gateway's and the browser's", n)
	}
	ws.set(slicehub.WAConnected)
	b.WaitFor("connected", `document.querySelector("#workspace").dataset.phase === "connected" && document.querySelector("#qr").hidden`)
	b.Shot("connected")

	// Log out, log in again: straight to the connected workspace.
	b.Do("log out", chromedp.Click(chromedp.ID("logout")))
	b.WaitPage("/login", "#notice")
	b.Shot("logged-out")
	b.Fill(map[string]string{"email": "ada@example.com", "password": "correct horse battery"}, "submit")
	b.WaitPage("/workspace", "#workspace")
	b.WaitFor("connected after login", `document.querySelector("#workspace").dataset.phase === "connected"`)
	b.Do("log out again", chromedp.Click(chromedp.ID("logout")))
	b.WaitPage("/login", "#login-form")

	// Forgot the password: the log mailer has the link.
	b.Do("forgot", chromedp.Click(chromedp.ID("forgot")))
	b.WaitPage("/reset", "#reset-form")
	b.Fill(map[string]string{"email": "ada@example.com"}, "submit")
	b.WaitPage("/reset", "#notice")
	b.Shot("reset-sent")
	link := resetLink(t, e.mails.wait(t))
	b.Do("open the reset link", chromedp.Navigate(link))
	b.WaitPage("/reset/confirm", "#reset-confirm-form")
	if got := b.Text("#reset-email"); got != "ada@example.com" {
		t.Errorf("reset page names %q", got)
	}
	b.Shot("reset-confirm")
	b.Fill(map[string]string{"password": "a whole new password", "password2": "a whole new password"}, "submit")
	b.WaitPage("/login", "#notice")
	if got := b.Text("#notice"); !strings.Contains(got, "password has been changed") {
		t.Errorf("notice after reset %q", got)
	}
	b.Fill(map[string]string{"email": "ada@example.com", "password": "a whole new password"}, "submit")
	b.WaitPage("/workspace", "#workspace")
	b.Shot("workspace-after-reset")
}

// TestSliceHTMLIsSandboxedInChromium: a slice answers a signed-in user's
// navigation to /api/page with HTML and a script that would read
// /auth/me. In a real browser the page shows, but as an opaque origin
// that runs no script: the gateway's CSP on slice answers (gateway/proxy).
func TestSliceHTMLIsSandboxedInChromium(t *testing.T) {
	e := newEnv(t)
	u := e.signup("eve@example.com")
	e.withSlice(u, newFakeSlice(t, 48))
	b := testsupport.NewBrowser(t, e.url, "gateway", 1024)
	// The blocked script is what this test provokes; Chromium reports it.
	b.Expected = func(p string) bool {
		return strings.Contains(p, "sandboxed") || strings.Contains(p, "Content Security Policy")
	}
	b.Open("/login")
	b.WaitPage("/login", "#login-form")
	b.Fill(map[string]string{"email": u.email, "password": "correct horse battery"}, "submit")
	b.WaitPage("/workspace", "#workspace")

	b.Open("/api/page")
	b.WaitPage("/api/page", "#p")
	b.WaitFor("the page's origin to be opaque and its script not to have run",
		`self.origin === "null" && document.title === "slice page"`)
	b.Shot("slice-page")
}
