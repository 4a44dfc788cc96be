package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// The workspace page in a real headless Chromium against the real
// platform: sign up through the form, watch the slice come up on Nomad and
// Consul, see the WhatsApp QR code that the slice's own Chromium reads
// from the stand-in page (through the gateway's SSE stream and proxy), link
// it, and see the connected state. Screenshots go to
// test-artifacts/cmd-slicehub/.
func TestWorkspacePageInChromium(t *testing.T) {
	chromium := ""
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			chromium = p
			break
		}
	}
	if chromium == "" {
		t.Skip("no Chromium on PATH (apt install chromium)")
	}
	m := startPlatform(t)

	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(chromium),
		chromedp.WindowSize(1024, 900), chromedp.Flag("disable-gpu", true), chromedp.Flag("disable-dev-shm-usage", true))
	if os.Geteuid() == 0 {
		opts = append(opts, chromedp.NoSandbox)
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	// Start the browser on the long-lived context: a browser started by an
	// action under a timeout would die with that timeout.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("starting Chromium: %v", err)
	}

	dir, _ := filepath.Abs(filepath.Join("..", "..", "test-artifacts", "cmd-slicehub"))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	n := 0
	shot := func(name string) {
		n++
		sctx, scancel := context.WithTimeout(ctx, 10*time.Second)
		defer scancel()
		if png, err := chromedp.Run(sctx, chromedp.FullScreenshot(100)); err == nil {
			_ = os.WriteFile(filepath.Join(dir, fmt.Sprintf("%s-%02d-%s.png", t.Name(), n, name)), png, 0o644)
		}
	}
	do := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		dctx, dcancel := context.WithTimeout(ctx, 30*time.Second)
		defer dcancel()
		if err := chromedp.Do(dctx, steps...); err != nil {
			shot("failed")
			t.Fatalf("%s: %v", what, err)
		}
	}
	// waitFor polls a predicate in the page; a page that is navigating
	// fails the evaluation, which is retried.
	waitFor := func(what, predicate string, within time.Duration) {
		t.Helper()
		deadline := time.Now().Add(within)
		for time.Now().Before(deadline) {
			ectx, ecancel := context.WithTimeout(ctx, 5*time.Second)
			ok, err := chromedp.Run(ectx, chromedp.Evaluate[bool]("!!("+predicate+")"))
			ecancel()
			if err == nil && ok {
				return
			}
			time.Sleep(100 * time.Millisecond) // polling interval, not synchronisation
		}
		shot("failed")
		text, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body ? document.body.innerText : ""`))
		t.Fatalf("waiting for %s:\n%s", what, text)
	}
	phase := `document.querySelector("#workspace") && document.querySelector("#workspace").dataset.phase`

	start := time.Now()
	do("open the sign-up page", chromedp.Navigate("http://"+m.PublicAddr+"/signup"))
	waitFor("the sign-up form", `document.querySelector("#signup-form")`, 10*time.Second)
	do("sign up",
		chromedp.Evaluate[chromedp.Void](`document.getElementById("email").value = "chromium@example.com"`),
		chromedp.Evaluate[chromedp.Void](`document.getElementById("password").value = "correct horse battery"`),
		chromedp.Click(chromedp.ID("submit")))
	waitFor("the workspace page", `location.pathname === "/workspace" && `+phase, 20*time.Second)
	shot("workspace")

	// The stand-in page shows a QR code; the slice reads it, and the page
	// shows it through the proxy.
	waitFor("a QR code", phase+` === "whatsapp" && /^Code \d+ of \d+$/.test(document.querySelector("#qr-count").textContent) &&
		document.querySelector("#qr-img").complete && document.querySelector("#qr-img").naturalWidth > 0`, 3*time.Minute)
	t.Logf("signup to a QR code on the workspace page: %s", time.Since(start).Round(time.Millisecond))
	shot("qr")

	// The stand-in's phone scans it (POST /api/dev/scan, through the
	// gateway with this browser's session), and the page turns connected.
	do("scan", chromedp.Evaluate[chromedp.Void](`fetch("/api/dev/scan", {method: "POST"}).then(r => r.status)`,
		chromedp.EvalAwaitPromise))
	waitFor("connected", phase+` === "connected"`, time.Minute)
	shot("connected")
	if text, _ := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("#headline"))); !strings.Contains(text, "connected") {
		t.Errorf("headline %q", text)
	}
}
