package testsupport

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
	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/slicehub/slicehub/devenv"
)

// Browser is one headless Chromium tab driven the way a user would: the
// page tests of the gateway and of the admin dashboard share it. Script
// errors and content-security-policy violations reported by the browser
// fail the test, because the pages must run under their own CSP without a
// complaint. Screenshots are numbered per test under
// test-artifacts/<artifacts>/ (git-ignored).
type Browser struct {
	T    *testing.T
	Ctx  context.Context
	Base string // the site under test, "http://127.0.0.1:port"
	Dir  string // where screenshots go
	// DoTimeout bounds each Do (10 s when zero): a page of the whole
	// platform on a loaded machine may want more.
	DoTimeout time.Duration
	// ThirdParty: the site is not ours (the Consul UI), so its script
	// errors are logged, not failures.
	ThirdParty bool
	// Expected, when set, passes the reports a test provokes on purpose
	// (a script it checks the browser blocks); any other still fails it.
	Expected func(problem string) bool
	n        int
}

// ChromiumPath finds the browser, or skips saying why: pages are also
// covered by plain HTTP tests, and a machine without Chromium can still
// run the rest. `make tools` installs it.
func ChromiumPath(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("SLICEHUB_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "headless-shell"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Skip("SKIPPED: no Chromium on PATH (make tools, or apt install chromium)")
	return ""
}

// ArtifactDir is test-artifacts/<sub> at the repository's root, or under
// $SLICEHUB_ARTIFACTS, created if needed.
func ArtifactDir(t *testing.T, sub string) string {
	t.Helper()
	dir := os.Getenv("SLICEHUB_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join(devenv.RepoRoot(), "test-artifacts")
	}
	dir, _ = filepath.Abs(filepath.Join(dir, sub))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// NewBrowser starts a headless Chromium window of the given width for the
// test, on the site at base, and stops it when the test ends.
func NewBrowser(t *testing.T, base, artifacts string, width int) *Browser {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(ChromiumPath(t)),
		chromedp.WindowSize(width, 900),
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
		case *cdplog.EventEntryAdded:
			if e := ev.Entry; e.Source == "security" || e.Source == "javascript" {
				problems = append(problems, string(e.Source)+": "+e.Text)
			}
		}
	}); err != nil {
		t.Fatal(err)
	}
	// The Log domain reports CSP violations; it is off until enabled. This
	// also starts the browser on the long-lived context: one started by an
	// action under a timeout would die with that timeout.
	if err := chromedp.Do(ctx, func(ctx context.Context, tg *chromedp.Target) (chromedp.Void, error) {
		_, err := cdp.Call(ctx, tg, cdplog.Enable, cdp.Empty{})
		return chromedp.Void{}, err
	}); err != nil {
		t.Fatalf("starting Chromium: %v", err)
	}
	b := &Browser{T: t, Ctx: ctx, Base: base, Dir: ArtifactDir(t, artifacts)}
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, p := range problems {
			if b.ThirdParty {
				t.Logf("browser reported %s (a third-party page: not ours to fix)", p)
				continue
			}
			if b.Expected == nil || !b.Expected(p) {
				t.Errorf("browser reported %s", p)
			}
		}
	})
	return b
}

// Do runs steps within DoTimeout, or fails the test with a screenshot.
func (b *Browser) Do(what string, steps ...chromedp.Action[chromedp.Void]) {
	b.T.Helper()
	d := b.DoTimeout
	if d <= 0 {
		d = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(b.Ctx, d)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		b.Shot("failed-" + what)
		b.T.Fatalf("%s: %v", what, err)
	}
}

// WaitFor polls a JavaScript predicate in the page until it is true,
// for up to 10 s. An evaluation that fails because the page is navigating
// is retried: the predicate usually waits for exactly that navigation.
func (b *Browser) WaitFor(what, predicate string) {
	b.T.Helper()
	b.WaitWithin(what, predicate, 10*time.Second)
}

// WaitWithin is WaitFor with its own bound, for what the platform takes
// longer to show (a slice starting, telemetry's next sample).
func (b *Browser) WaitWithin(what, predicate string, within time.Duration) {
	b.T.Helper()
	if ok, lastErr := b.poll(predicate, within); !ok {
		b.Shot("failed-" + what)
		text, _ := chromedp.Run(b.Ctx, chromedp.Evaluate[string](`document.body ? document.body.innerText : ""`))
		b.T.Fatalf("waiting for %s (last error %v)\npage text:\n%s", what, lastErr, text)
	}
}

// Try reports whether predicate turns true within the bound, without
// failing the test: for what a page may or may not show yet.
func (b *Browser) Try(predicate string, within time.Duration) bool {
	ok, _ := b.poll(predicate, within)
	return ok
}

func (b *Browser) poll(predicate string, within time.Duration) (bool, error) {
	deadline := time.Now().Add(within)
	var lastErr error
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(b.Ctx, 2*time.Second)
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool]("!!("+predicate+")"))
		cancel()
		if err == nil && ok {
			return true, nil
		}
		lastErr = err
		time.Sleep(20 * time.Millisecond) // polling interval, not synchronisation
	}
	return false, lastErr
}

// Text is the trimmed text of the first element matching sel.
func (b *Browser) Text(sel string) string {
	b.T.Helper()
	ctx, cancel := context.WithTimeout(b.Ctx, 10*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
	if err != nil {
		b.T.Fatalf("text of %s: %v", sel, err)
	}
	return strings.TrimSpace(s)
}

// Shot saves a numbered screenshot of the whole page.
func (b *Browser) Shot(name string) {
	b.n++
	ctx, cancel := context.WithTimeout(b.Ctx, 10*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.T.Logf("screenshot %s: %v", name, err)
		return
	}
	clean := func(s string) string {
		return strings.Map(func(r rune) rune {
			if r == '/' || r == ' ' || r == os.PathSeparator {
				return '-'
			}
			return r
		}, strings.Trim(s, "/ "))
	}
	p := filepath.Join(b.Dir, fmt.Sprintf("%s-%02d-%s.png", clean(b.T.Name()), b.n, clean(name)))
	if err := os.WriteFile(p, png, 0o644); err != nil {
		b.T.Logf("screenshot %s: %v", name, err)
	}
}

// Open navigates to path on the site.
func (b *Browser) Open(path string) {
	b.T.Helper()
	b.Do("open "+path, chromedp.Navigate(b.Base+path))
}

// Fill sets the fields of a form (by element id) and submits it with its
// button. The values are set by script rather than typed: a page's
// autofocus can move the focus in the middle of typing, and keystrokes
// would land in the wrong field.
func (b *Browser) Fill(fields map[string]string, submit string) {
	b.T.Helper()
	var steps []chromedp.Action[chromedp.Void]
	for id, v := range fields {
		js := fmt.Sprintf(`(() => { const el = document.getElementById(%q); el.value = %q;
			el.dispatchEvent(new Event("input", {bubbles: true})); })()`, id, v)
		steps = append(steps, chromedp.Evaluate[chromedp.Void](js))
	}
	steps = append(steps, chromedp.Click(chromedp.ID(submit)))
	b.Do("fill and submit "+submit, steps...)
}

// WaitPage waits until the browser shows path, loaded, with sel in it.
func (b *Browser) WaitPage(path, sel string) {
	b.T.Helper()
	b.WaitFor("page "+path, `location.pathname === "`+path+`" && document.readyState === "complete" && !!document.querySelector("`+sel+`")`)
}
