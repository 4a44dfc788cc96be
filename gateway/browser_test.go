package gateway

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/slicehub/slicehub"
)

// The pages in a real headless Chromium: what a user does, click by click,
// with a screenshot of every state under test-artifacts/gateway/. The
// gateway runs on fakes (accounts, slices, routes) and a fake slice that
// reports WhatsApp states and QR codes; cmd/slicehub's pages test does the
// same against the real platform.

// chromiumPath finds the browser, or skips: the pages are also covered by
// plain HTTP tests, and a machine without Chromium can still run the rest.
func chromiumPath(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("SLICEHUB_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "headless-shell"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Skip("no Chromium on PATH (apt install chromium)")
	return ""
}

// browserTab starts a headless Chromium for the test and returns its tab.
// Script errors and content-security-policy violations fail the test: the
// pages must run under their own CSP without a complaint.
func browserTab(t *testing.T) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath(t)),
		chromedp.WindowSize(1024, 900),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-dev-shm-usage", true),
	)
	if os.Geteuid() == 0 {
		opts = append(opts, chromedp.NoSandbox) // Chromium refuses to run its sandbox as root
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelAlloc() })

	var mu sync.Mutex
	var problems []string
	if err := chromedp.Listen(ctx, func(ev any) {
		mu.Lock()
		defer mu.Unlock()
		switch ev := ev.(type) {
		case *runtime.EventExceptionThrown:
			problems = append(problems, "exception: "+ev.ExceptionDetails.Text)
		case *log.EventEntryAdded:
			if e := ev.Entry; e.Source == "security" || e.Source == "javascript" {
				problems = append(problems, string(e.Source)+": "+e.Text)
			}
		}
	}); err != nil {
		t.Fatal(err)
	}
	// The Log domain reports CSP violations; it is off until enabled.
	if err := chromedp.Do(ctx, func(ctx context.Context, tg *chromedp.Target) (chromedp.Void, error) {
		_, err := cdp.Call(ctx, tg, log.Enable, cdp.Empty{})
		return chromedp.Void{}, err
	}); err != nil {
		t.Fatalf("starting Chromium: %v", err)
	}
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, p := range problems {
			t.Errorf("browser reported %s", p)
		}
	})
	return ctx
}

// artifactDir is where screenshots go (git-ignored).
func artifactDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("SLICEHUB_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join("..", "test-artifacts")
	}
	dir, _ = filepath.Abs(filepath.Join(dir, "gateway"))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

type browser struct {
	t    *testing.T
	ctx  context.Context
	base string
	dir  string
	n    int
}

func (b *browser) do(what string, steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		b.shot("failed-" + what)
		b.t.Fatalf("%s: %v", what, err)
	}
}

// waitFor polls a JavaScript predicate in the page until it is true. An
// evaluation that fails because the page is navigating is retried: the
// predicate usually waits for exactly that navigation.
func (b *browser) waitFor(what, predicate string) {
	b.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	var lastErr error
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(b.ctx, 2*time.Second)
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool]("!!("+predicate+")"))
		cancel()
		if err == nil && ok {
			return
		}
		lastErr = err
		time.Sleep(20 * time.Millisecond) // polling interval, not synchronisation
	}
	b.shot("failed-" + what)
	text, _ := chromedp.Run(b.ctx, chromedp.Evaluate[string](`document.body ? document.body.innerText : ""`))
	b.t.Fatalf("waiting for %s (last error %v)\npage text:\n%s", what, lastErr, text)
}

func (b *browser) text(sel string) string {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
	if err != nil {
		b.t.Fatalf("text of %s: %v", sel, err)
	}
	return strings.TrimSpace(s)
}

// shot saves a numbered screenshot of the whole page.
func (b *browser) shot(name string) {
	b.n++
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.t.Logf("screenshot %s: %v", name, err)
		return
	}
	name = strings.Map(func(r rune) rune {
		if r == '/' || r == ' ' || r == os.PathSeparator {
			return '-'
		}
		return r
	}, strings.Trim(name, "/ "))
	p := filepath.Join(b.dir, strings.ReplaceAll(b.t.Name(), "/", "-")+"-"+twoDigits(b.n)+"-"+name+".png")
	if err := os.WriteFile(p, png, 0o644); err != nil {
		b.t.Logf("screenshot %s: %v", name, err)
	}
}

func twoDigits(n int) string { return string([]byte{byte('0' + n/10%10), byte('0' + n%10)}) }

func (b *browser) open(path string) {
	b.t.Helper()
	b.do("open "+path, chromedp.Navigate(b.base+path))
}

// fill sets the fields of a form and submits it with its button. The
// values are set by script rather than typed: a page's autofocus can move
// the focus in the middle of typing, and keystrokes would land in the
// wrong field.
func (b *browser) fill(fields map[string]string, submit string) {
	b.t.Helper()
	var steps []chromedp.Action[chromedp.Void]
	for id, v := range fields {
		js := fmt.Sprintf(`(() => { const el = document.getElementById(%q); el.value = %q;
			el.dispatchEvent(new Event("input", {bubbles: true})); })()`, id, v)
		steps = append(steps, chromedp.Evaluate[chromedp.Void](js))
	}
	steps = append(steps, chromedp.Click(chromedp.ID(submit)))
	b.do("fill and submit", steps...)
}

func (b *browser) waitPage(path, sel string) {
	b.t.Helper()
	b.waitFor("page "+path, `location.pathname === "`+path+`" && document.readyState === "complete" && !!document.querySelector("`+sel+`")`)
}

func TestPagesInChromium(t *testing.T) {
	e := newPageEnv(t)
	e.slices.claimWarm = false // an on-demand slice, so the workspace shows it starting
	b := &browser{t: t, ctx: browserTab(t), base: e.url, dir: artifactDir(t)}

	// Landing, then sign up through the form (a weak password first).
	b.open("/")
	b.waitPage("/", "#cta-signup")
	b.shot("landing")
	b.do("click sign up", chromedp.Click(chromedp.ID("cta-signup")))
	b.waitPage("/signup", "#signup-form")
	b.fill(map[string]string{"email": "ada@example.com", "password": "short"}, "submit")
	b.waitPage("/signup", "#error")
	if got := b.text("#error"); !strings.Contains(got, "10 to 128 characters") {
		t.Fatalf("weak password error %q", got)
	}
	b.shot("signup-error")
	b.fill(map[string]string{"email": "ada@example.com", "password": "correct horse battery"}, "submit")

	// The workspace shows the slice starting, stage by stage.
	b.waitPage("/workspace", "#workspace")
	u, _, err := e.accounts.UserByEmail(t.Context(), "ada@example.com")
	if err != nil {
		t.Fatal(err)
	}
	sl := e.slices.sliceOf(u.ID)
	b.waitFor("starting", `document.querySelector("#workspace").dataset.phase === "starting"`)
	b.shot("workspace-queued")
	e.progress.set(u.ID, sl.ID, slicehub.StageRunning)
	b.waitFor("allocation running", `document.querySelector('[data-step="allocation_running"]').classList.contains("done")`)
	if got := b.text("#headline"); got != "Bringing your workspace online…" {
		t.Errorf("headline %q", got)
	}
	b.shot("workspace-running")

	// The slice comes up: WhatsApp's state, then QR codes, through the proxy.
	ws := newWASlice(t, sl.ID)
	e.slices.set(u.ID, slicehub.Slice{ID: sl.ID, State: slicehub.StateAssigned, UserID: u.ID})
	e.routes.set(sl.ID, ws.addr())
	e.srv.InvalidateSlice(sl.ID)
	b.waitFor("whatsapp starting", `document.querySelector("#workspace").dataset.whatsapp === "starting"`)
	b.shot("whatsapp-starting")
	ws.set(slicehub.WAQR)
	b.waitFor("QR code 1", `document.querySelector("#qr-count").textContent === "Code 1 of 6" &&
		document.querySelector("#qr-img").complete && document.querySelector("#qr-img").naturalWidth === 264`)
	b.shot("qr-code-1")
	ws.set(slicehub.WAQR)
	b.waitFor("QR code 2", `document.querySelector("#qr-count").textContent === "Code 2 of 6" &&
		document.querySelector("#qr-img").getAttribute("src") === "/api/status/qr?seq=2" &&
		document.querySelector("#qr-img").complete && document.querySelector("#qr-img").naturalWidth === 264`)
	b.shot("qr-code-2")
	if n := ws.qrCalls.Load(); n < 2 {
		t.Errorf("the slice served %d QR requests; want the gateway's and the browser's", n)
	}
	ws.set(slicehub.WAConnected)
	b.waitFor("connected", `document.querySelector("#workspace").dataset.phase === "connected" && document.querySelector("#qr").hidden`)
	b.shot("connected")

	// Log out, log in again: straight to the connected workspace.
	b.do("log out", chromedp.Click(chromedp.ID("logout")))
	b.waitPage("/login", "#notice")
	b.shot("logged-out")
	b.fill(map[string]string{"email": "ada@example.com", "password": "correct horse battery"}, "submit")
	b.waitPage("/workspace", "#workspace")
	b.waitFor("connected after login", `document.querySelector("#workspace").dataset.phase === "connected"`)
	b.do("log out again", chromedp.Click(chromedp.ID("logout")))
	b.waitPage("/login", "#login-form")

	// Forgot the password: the log mailer has the link.
	b.do("forgot", chromedp.Click(chromedp.ID("forgot")))
	b.waitPage("/reset", "#reset-form")
	b.fill(map[string]string{"email": "ada@example.com"}, "submit")
	b.waitPage("/reset", "#notice")
	b.shot("reset-sent")
	link := resetLink(t, e.mails.wait(t))
	b.do("open the reset link", chromedp.Navigate(link))
	b.waitPage("/reset/confirm", "#reset-confirm-form")
	if got := b.text("#reset-email"); got != "ada@example.com" {
		t.Errorf("reset page names %q", got)
	}
	b.shot("reset-confirm")
	b.fill(map[string]string{"password": "a whole new password", "password2": "a whole new password"}, "submit")
	b.waitPage("/login", "#notice")
	if got := b.text("#notice"); !strings.Contains(got, "password has been changed") {
		t.Errorf("notice after reset %q", got)
	}
	b.fill(map[string]string{"email": "ada@example.com", "password": "a whole new password"}, "submit")
	b.waitPage("/workspace", "#workspace")
	b.shot("workspace-after-reset")
}
