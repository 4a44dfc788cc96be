package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// The admin dashboard in a real headless Chromium against the real
// platform (Nomad, Consul, PostgreSQL, a slice on the stand-in WhatsApp):
// an admin made by slicectl logs in through the form, sees every panel
// with the platform's own data (capacity from Nomad's allocations, the
// customer's slice healthy in Consul, the audit log), opens the slice with
// its WhatsApp state and QR code read server-side, and suspends it through
// the CSRF-protected form. Screenshots go to test-artifacts/cmd-slicehub/.
func TestAdminDashboardInChromium(t *testing.T) {
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
	m := startPlatform(t, "-telemetry-interval", "2s")
	base := "http://" + m.PublicAddr

	var boot struct {
		Password string `json:"password"`
	}
	r := slicectl(t, "users", "create-admin", "--database-url", m.Config.DatabaseURL, "--email", "ops@example.com", "--json")
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &boot) != nil || boot.Password == "" {
		t.Fatalf("create-admin: exit %d, %q", r.code, r.stdout)
	}
	customer := newClient(t, m)
	sliceID := customer.signup("customer@example.com")
	customer.whoami() // the slice answers: WhatsApp has a state
	row := fmt.Sprintf(`tr[data-slice="%d"]`, sliceID)

	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(chromium),
		chromedp.WindowSize(1366, 900), chromedp.Flag("disable-gpu", true), chromedp.Flag("disable-dev-shm-usage", true))
	if os.Geteuid() == 0 {
		opts = append(opts, chromedp.NoSandbox)
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
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
	try := func(predicate string, within time.Duration) bool {
		deadline := time.Now().Add(within)
		for time.Now().Before(deadline) {
			ectx, ecancel := context.WithTimeout(ctx, 5*time.Second)
			ok, err := chromedp.Run(ectx, chromedp.Evaluate[bool]("!!("+predicate+")"))
			ecancel()
			if err == nil && ok {
				return true
			}
			time.Sleep(100 * time.Millisecond) // polling interval, not synchronisation
		}
		return false
	}
	waitFor := func(what, predicate string, within time.Duration) {
		t.Helper()
		if !try(predicate, within) {
			shot("failed")
			text, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body ? document.body.innerText : ""`))
			t.Fatalf("waiting for %s:\n%s", what, text)
		}
	}

	do("open the login page", chromedp.Navigate(base+"/login"))
	waitFor("the login form", `document.querySelector("#login-form")`, 10*time.Second)
	do("log in as the admin",
		chromedp.Evaluate[chromedp.Void](`document.getElementById("email").value = "ops@example.com"`),
		chromedp.Evaluate[chromedp.Void](fmt.Sprintf(`document.getElementById("password").value = %q`, boot.Password)),
		chromedp.Click(chromedp.ID("submit")))
	waitFor("signed in", `location.pathname === "/workspace"`, 20*time.Second)

	do("open the dashboard", chromedp.Navigate(base+"/admin"))
	waitFor("every panel with the platform's data", `document.querySelector("#live").dataset.live === "on" &&
		document.querySelector("#cap-memory svg") && document.querySelector("#nodes") &&
		document.querySelector('`+row+`').dataset.state === "assigned" && document.querySelector('`+row+` .dot.ok') &&
		document.querySelector('`+row+` a.nomad').href.includes("/ui/allocations/") &&
		document.querySelector("#users-table").textContent.includes("customer@example.com") &&
		document.querySelector("#audit-log").textContent.includes("assigned")`, 30*time.Second)
	// Telemetry is sampled by the collector every 2 s here; its numbers
	// reach the open page over the live stream.
	waitFor("telemetry in the grid", `document.querySelector('`+row+` .wa .pill')`, 60*time.Second)
	if !try(`document.querySelector('`+row+` svg.spark')`, 30*time.Second) {
		t.Log("no sparkline yet: fewer than two samples of the slice")
	}
	shot("dashboard")

	do("open the slice", chromedp.Click(chromedp.CSS(row+" a.slice-link")))
	waitFor("the slice page with its WhatsApp state", `location.pathname === "/admin/slices/`+strconv.FormatInt(sliceID, 10)+`" &&
		document.querySelector("#wa-state")`, 20*time.Second)
	if try(`document.querySelector("#qr-img")`, time.Second) {
		waitFor("the QR code", `document.querySelector("#qr-img").complete && document.querySelector("#qr-img").naturalWidth > 0`, 20*time.Second)
	}
	shot("slice")

	do("suspend", chromedp.Click(chromedp.ID("suspend")))
	waitFor("suspended", `document.querySelector("#notice") && document.querySelector("#slice-state").textContent === "suspended" &&
		document.querySelector("#events").textContent.includes("admin:")`, 60*time.Second)
	shot("suspended")
}
