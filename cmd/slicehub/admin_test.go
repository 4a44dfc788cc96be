package main

import (
	"encoding/json"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/slicehub/slicehub/testsupport"
)

// The admin dashboard in a real headless Chromium against the real
// platform (Nomad, Consul, PostgreSQL, a slice on the stand-in WhatsApp):
// an admin made by slicectl logs in through the form, sees every panel
// with the platform's own data (capacity from Nomad's allocations, the
// customer's slice healthy in Consul, the audit log), opens the slice with
// its WhatsApp state and QR code read server-side, and suspends it through
// the CSRF-protected form. Screenshots go to test-artifacts/cmd-slicehub/.
func TestAdminDashboardInChromium(t *testing.T) {
	testsupport.ChromiumPath(t) // skips, loudly, before the platform starts
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

	b := testsupport.NewBrowser(t, base, "cmd-slicehub", 1366)
	b.DoTimeout = 30 * time.Second

	b.Open("/login")
	b.WaitFor("the login form", `document.querySelector("#login-form")`)
	b.Fill(map[string]string{"email": "ops@example.com", "password": boot.Password}, "submit")
	b.WaitWithin("signed in", `location.pathname === "/workspace"`, 20*time.Second)

	b.Open("/admin")
	b.WaitWithin("every panel with the platform's data", `document.querySelector("#live").dataset.live === "on" &&
		document.querySelector("#cap-memory svg") && document.querySelector("#nodes") &&
		document.querySelector('`+row+`').dataset.state === "assigned" && document.querySelector('`+row+` .dot.ok') &&
		document.querySelector('`+row+` a.nomad').href.includes("/ui/allocations/") &&
		document.querySelector("#users-table").textContent.includes("customer@example.com") &&
		document.querySelector("#audit-log").textContent.includes("assigned")`, 30*time.Second)
	// Telemetry is sampled by the collector every 2 s here; its numbers
	// reach the open page over the live stream.
	b.WaitWithin("telemetry in the grid", `document.querySelector('`+row+` .wa .pill')`, 60*time.Second)
	if !b.Try(`document.querySelector('`+row+` svg.spark')`, 30*time.Second) {
		t.Log("no sparkline yet: fewer than two samples of the slice")
	}
	b.Shot("dashboard")

	b.Do("open the slice", chromedp.Click(chromedp.CSS(row+" a.slice-link")))
	b.WaitWithin("the slice page with its WhatsApp state", `location.pathname === "/admin/slices/`+strconv.FormatInt(sliceID, 10)+`" &&
		document.querySelector("#wa-state")`, 20*time.Second)
	if b.Try(`document.querySelector("#qr-img")`, time.Second) {
		b.WaitWithin("the QR code", `document.querySelector("#qr-img").complete && document.querySelector("#qr-img").naturalWidth > 0`, 20*time.Second)
	}
	b.Shot("slice")

	b.Do("suspend", chromedp.Click(chromedp.ID("suspend")))
	b.WaitWithin("suspended", `document.querySelector("#notice") && document.querySelector("#slice-state").textContent === "suspended" &&
		document.querySelector("#events").textContent.includes("admin:")`, 60*time.Second)
	b.Shot("suspended")
}
