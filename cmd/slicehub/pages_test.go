package main

import (
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/slicehub/slicehub/testsupport"
)

// The workspace page in a real headless Chromium against the real
// platform: sign up through the form, watch the slice come up on Nomad and
// Consul, see the WhatsApp QR code that the slice's own Chromium reads
// from the stand-in page (through the gateway's SSE stream and proxy), link
// it, and see the connected state. Screenshots go to
// test-artifacts/cmd-slicehub/.
func TestWorkspacePageInChromium(t *testing.T) {
	testsupport.ChromiumPath(t) // skips, loudly, before the platform starts
	m := startPlatform(t)
	b := testsupport.NewBrowser(t, "http://"+m.PublicAddr, "cmd-slicehub", 1024)
	b.DoTimeout = 30 * time.Second
	phase := `document.querySelector("#workspace") && document.querySelector("#workspace").dataset.phase`

	start := time.Now()
	b.Open("/signup")
	b.WaitFor("the sign-up form", `document.querySelector("#signup-form")`)
	b.Fill(map[string]string{"email": "chromium@example.com", "password": "correct horse battery"}, "submit")
	b.WaitWithin("the workspace page", `location.pathname === "/workspace" && `+phase, 20*time.Second)
	b.Shot("workspace")

	// The stand-in page shows a QR code; the slice reads it, and the page
	// shows it through the proxy.
	b.WaitWithin("a QR code", phase+` === "whatsapp" && /^Code \d+ of \d+$/.test(document.querySelector("#qr-count").textContent) &&
		document.querySelector("#qr-img").complete && document.querySelector("#qr-img").naturalWidth > 0`, 3*time.Minute)
	t.Logf("signup to a QR code on the workspace page: %s", time.Since(start).Round(time.Millisecond))
	b.Shot("qr")

	// The stand-in's phone scans it (POST /api/dev/scan, through the
	// gateway with this browser's session), and the page turns connected.
	b.Do("scan", chromedp.Evaluate[chromedp.Void](`fetch("/api/dev/scan", {method: "POST"}).then(r => r.status)`,
		chromedp.EvalAwaitPromise))
	b.WaitWithin("connected", phase+` === "connected"`, time.Minute)
	b.Shot("connected")
	if text := b.Text("#headline"); !strings.Contains(text, "connected") {
		t.Errorf("headline %q", text)
	}
}
