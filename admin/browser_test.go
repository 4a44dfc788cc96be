package admin

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
	"github.com/gofiber/fiber/v2"
)

// The dashboard in a real headless Chromium, on the fakes of
// dashboard_test.go: every panel rendered with data, a live update over
// SSE, the QR code, and two confirmed actions, with a screenshot of each
// under test-artifacts/admin/. Script errors and CSP violations fail the
// test: the dashboard must run under its own policy without a complaint.

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

func browserTab(t *testing.T) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath(t)),
		chromedp.WindowSize(1366, 900),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-dev-shm-usage", true),
	)
	if os.Geteuid() == 0 {
		opts = append(opts, chromedp.NoSandbox) // Chromium refuses its sandbox as root
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

// waitFor polls a predicate in the page until it holds; an evaluation
// that fails while the page navigates is retried.
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

func (b *browser) shot(name string) {
	b.n++
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.t.Logf("screenshot %s: %v", name, err)
		return
	}
	p := filepath.Join(b.dir, fmt.Sprintf("%s-%02d-%s.png", b.t.Name(), b.n, name))
	if err := os.WriteFile(p, png, 0o644); err != nil {
		b.t.Logf("screenshot %s: %v", name, err)
	}
}

// submit fills a form's fields by script (typing could land in another
// field if focus moves) and clicks its button.
func (b *browser) submit(fields map[string]string, button string) {
	b.t.Helper()
	var steps []chromedp.Action[chromedp.Void]
	for id, v := range fields {
		steps = append(steps, chromedp.Evaluate[chromedp.Void](fmt.Sprintf(`document.getElementById(%q).value = %q`, id, v)))
	}
	steps = append(steps, chromedp.Click(chromedp.ID(button)))
	b.do("submit "+button, steps...)
}

func (b *browser) waitPage(path, sel string) {
	b.t.Helper()
	b.waitFor("page "+path, `location.pathname === "`+path+`" && document.readyState === "complete" && !!document.querySelector("`+sel+`")`)
}

func artifactDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("SLICEHUB_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join("..", "test-artifacts")
	}
	dir, _ = filepath.Abs(filepath.Join(dir, "admin"))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestDashboardInChromium(t *testing.T) {
	chromiumPath(t)
	e := newDashEnv(t, true)
	// The gateway serves the shared stylesheet the dashboard builds on.
	css, err := os.ReadFile(filepath.Join("..", "gateway", "static", "style.css"))
	if err != nil {
		t.Fatal(err)
	}
	e.app.Get("/static/style.css", func(c *fiber.Ctx) error {
		c.Set(fiber.HeaderContentType, "text/css; charset=utf-8")
		return c.Send(css)
	})
	b := &browser{t: t, ctx: browserTab(t), base: e.serve(t), dir: artifactDir(t)}

	// Every panel, with data, and the live stream connected.
	b.do("open /admin", chromedp.Navigate(b.base+"/admin"))
	b.waitPage("/admin", "#slice-grid")
	b.waitFor("live stream", `document.querySelector("#live").dataset.live === "on"`)
	for _, sel := range []string{"#alerts", "#stat-users", "#stat-pool", "#stat-fit", "#cap-memory svg", "#nodes svg.spark",
		`tr[data-slice="1"] svg.spark`, `tr[data-slice="1"] a.nomad`, "#users-table", "#audit-log"} {
		b.waitFor(sel, `!!document.querySelector('`+sel+`')`)
	}
	b.shot("dashboard")

	// A change on the platform reaches the open page over SSE.
	if _, err := e.pool.Suspend(t.Context(), 1, "admin:7"); err != nil {
		t.Fatal(err)
	}
	b.waitFor("live update", `document.querySelector('tr[data-slice="1"]').dataset.state === "suspended" && !!document.querySelector("#live").dataset.updated`)
	b.shot("live-update")
	if _, err := e.pool.Resume(t.Context(), 1, "admin:7"); err != nil {
		t.Fatal(err)
	}
	b.waitFor("second live update", `document.querySelector('tr[data-slice="1"]').dataset.state === "provisioning"`)

	// One slice: its WhatsApp state and QR code, fetched server-side.
	b.do("open slice 1", chromedp.Click(chromedp.CSS(`tr[data-slice="1"] a.slice-link`)))
	b.waitPage("/admin/slices/1", "#actions")
	b.waitFor("QR image", `document.querySelector("#qr-img").complete && document.querySelector("#qr-img").naturalWidth === 33`)
	b.shot("slice-qr")

	// Retire needs the id typed: first without, then with.
	b.do("open slice 2", chromedp.Navigate(b.base+"/admin/slices/2"))
	b.waitPage("/admin/slices/2", "#retire-form")
	b.submit(map[string]string{"retire-confirm": "3"}, "retire")
	b.waitFor("refused retire", `!!document.querySelector("#error")`)
	b.shot("retire-unconfirmed")
	b.submit(map[string]string{"retire-confirm": "2"}, "retire")
	b.waitFor("retired", `!!document.querySelector("#notice") && document.querySelector("#slice-state").textContent === "retired"`)
	b.shot("retired")

	// Disable a user from the users table.
	b.do("back to /admin", chromedp.Navigate(b.base+"/admin"))
	b.waitPage("/admin", "#disable-3")
	b.submit(map[string]string{"disable-confirm-3": "3"}, "disable-submit-3")
	b.waitFor("disabled", `!!document.querySelector("#notice") && document.querySelector('tr[data-user="3"]').classList.contains("disabled")`)
	b.shot("user-disabled")
	if got := strings.Join(e.pool.actors, ","); got != "admin:7,admin:7,admin:7" {
		t.Errorf("scheduler actions by %q", got)
	}
}
