package admin

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
	"github.com/gofiber/fiber/v2"
	"github.com/slicehub/slicehub/testsupport"
)

// The dashboard in a real headless Chromium, on the fakes of
// dashboard_test.go: every panel rendered with data, a live update over
// SSE, the QR code, and two confirmed actions, with a screenshot of each
// under test-artifacts/admin/. Script errors and CSP violations fail the
// test: the dashboard must run under its own policy without a complaint.

func TestDashboardInChromium(t *testing.T) {
	testsupport.ChromiumPath(t)
	e := newDashEnv(t, true)
	// The gateway serves the shared stylesheet the dashboard builds on.
	css, err := os.ReadFile(filepath.Join("..", "gateway", "pages", "static", "style.css"))
	if err != nil {
		t.Fatal(err)
	}
	e.app.Get("/static/style.css", func(c *fiber.Ctx) error {
		c.Set(fiber.HeaderContentType, "text/css; charset=utf-8")
		return c.Send(css)
	})
	b := testsupport.NewBrowser(t, e.serve(t), "admin", 1366)

	// Every panel, with data, and the live stream connected.
	b.Do("open /admin", chromedp.Navigate(b.Base+"/admin"))
	b.WaitPage("/admin", "#slice-grid")
	b.WaitFor("live stream", `document.querySelector("#live").dataset.live === "on"`)
	for _, sel := range []string{"#alerts", "#stat-users", "#stat-pool", "#stat-fit", "#cap-memory svg", "#nodes svg.spark",
		`tr[data-slice="1"] svg.spark`, `tr[data-slice="1"] a.nomad`, "#users-table", "#audit-log"} {
		b.WaitFor(sel, `!!document.querySelector('`+sel+`')`)
	}
	b.Shot("dashboard")

	// A change on the platform reaches the open page over SSE.
	if _, err := e.pool.Suspend(t.Context(), 1, "admin:7"); err != nil {
		t.Fatal(err)
	}
	b.WaitFor("live update", `document.querySelector('tr[data-slice="1"]').dataset.state === "suspended" && !!document.querySelector("#live").dataset.updated`)
	b.Shot("live-update")
	if _, err := e.pool.Resume(t.Context(), 1, "admin:7"); err != nil {
		t.Fatal(err)
	}
	b.WaitFor("second live update", `document.querySelector('tr[data-slice="1"]').dataset.state === "provisioning"`)

	// One slice: its WhatsApp state and QR code, fetched server-side.
	b.Do("open slice 1", chromedp.Click(chromedp.CSS(`tr[data-slice="1"] a.slice-link`)))
	b.WaitPage("/admin/slices/1", "#actions")
	b.WaitFor("QR image", `document.querySelector("#qr-img").complete && document.querySelector("#qr-img").naturalWidth === 33`)
	b.Shot("slice-qr")

	// Retire needs the id typed: first without, then with.
	b.Do("open slice 2", chromedp.Navigate(b.Base+"/admin/slices/2"))
	b.WaitPage("/admin/slices/2", "#retire-form")
	b.Fill(map[string]string{"retire-confirm": "3"}, "retire")
	b.WaitFor("refused retire", `!!document.querySelector("#error")`)
	b.Shot("retire-unconfirmed")
	b.Fill(map[string]string{"retire-confirm": "2"}, "retire")
	b.WaitFor("retired", `!!document.querySelector("#notice") && document.querySelector("#slice-state").textContent === "retired"`)
	b.Shot("retired")

	// Disable a user from the users table.
	b.Do("back to /admin", chromedp.Navigate(b.Base+"/admin"))
	b.WaitPage("/admin", "#disable-3")
	b.Fill(map[string]string{"disable-confirm-3": "3"}, "disable-submit-3")
	b.WaitFor("disabled", `!!document.querySelector("#notice") && document.querySelector('tr[data-user="3"]').classList.contains("disabled")`)
	b.Shot("user-disabled")
	if got := strings.Join(e.pool.actors, ","); got != "admin:7,admin:7,admin:7" {
		t.Errorf("scheduler actions by %q", got)
	}
}
