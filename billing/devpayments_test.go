package billing

import (
	"io"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gofiber/fiber/v2"

	"github.com/slicehub/slicehub"
)

// The development platform's payment side, end to end over HTTP: the
// billing page's Subscribe leads to the simulated Checkout, and each
// action posts a signed event to the real webhook endpoint of the same
// server, which re-reads the subscription and suspends or resumes the
// slice in PostgreSQL: subscribe → active → past due → suspended → paid →
// resumed.
func TestDevPayments(t *testing.T) {
	if testing.Short() {
		t.Skip("needs PostgreSQL and stripe-mock")
	}
	e := newEnv(t, startStripeMock(t))
	dev := NewDevStripe(e.stripe.Stripe, filepath.Join(t.TempDir(), "stripe-dev.json"))
	svc, err := New(e.cfg, e.db, dev)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + ln.Addr().String()
	app := fiber.New(fiber.Config{ErrorHandler: writeTestError, DisableStartupMessage: true})
	Register(app, svc, e.web)
	RegisterDev(app, dev, e.web, e.db, webhookSecret, base+"/billing/webhook")
	go app.Listener(ln)
	t.Cleanup(func() { _ = app.Shutdown() })

	c := e.newCustomer("dev@example.com", true)
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	post := func(user, path string, form url.Values) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, base+path, strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.AddCookie(&http.Cookie{Name: "test_user", Value: user})
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode == http.StatusSeeOther {
			return resp.StatusCode, resp.Header.Get("Location")
		}
		return resp.StatusCode, string(b)
	}
	form := func(kv ...string) url.Values {
		v := url.Values{"csrf_token": {testCSRF}}
		for i := 0; i+1 < len(kv); i += 2 {
			v.Set(kv[i], kv[i+1])
		}
		return v
	}
	wantAccount := func(status string, state slicehub.SliceState) {
		t.Helper()
		if a := e.account(c.user.ID); a.Status != status {
			t.Fatalf("account status %q, want %q", a.Status, status)
		}
		e.wantState(c.slice.ID, state)
	}

	code, loc := post(c.user.Email, "/billing/checkout", form())
	if code != http.StatusSeeOther || !strings.HasPrefix(loc, "/billing/dev?checkout=cs_") {
		t.Fatalf("Subscribe: %d %q; want a redirect to the simulated Checkout", code, loc)
	}
	checkout := strings.TrimPrefix(loc, "/billing/dev?checkout=")
	req, _ := http.NewRequest(http.MethodGet, base+loc, nil)
	req.AddCookie(&http.Cookie{Name: "test_user", Value: c.user.Email})
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(page), `id="dev-pay-checkout"`) || !strings.Contains(string(page), checkout) {
		t.Fatalf("Checkout page: %d %s", resp.StatusCode, page)
	}

	code, loc = post(c.user.Email, "/billing/dev/pay-checkout", form("checkout", checkout))
	if code != http.StatusSeeOther || !strings.Contains(loc, "/billing?checkout=done&session_id="+checkout) {
		t.Fatalf("pay at Checkout: %d %q; want Stripe's success URL", code, loc)
	}
	wantAccount("active", slicehub.StateAssigned)

	for _, step := range []struct {
		action, event, status string
		state                 slicehub.SliceState
	}{
		{"payment-fails", "invoice.payment_failed", "past_due", slicehub.StateAssigned}, // grace: still running
		{"retries-exhausted", "customer.subscription.updated", "unpaid", slicehub.StateSuspended},
		{"payment-succeeds", "invoice.paid", "active", slicehub.StateProvisioning}, // resumed: a new generation
	} {
		code, loc := post(c.user.Email, "/billing/dev/"+step.action, form())
		if code != http.StatusSeeOther || !strings.Contains(loc, url.QueryEscape(step.event+": "+OutcomeApplied)) {
			t.Fatalf("%s: %d %q; want the webhook to have applied %s", step.action, code, loc, step.event)
		}
		wantAccount(step.status, step.state)
	}

	// Refusals: an action that does not fit the state, a form without its
	// CSRF token, a user who never started a Checkout, an unknown action.
	if code, body := post(c.user.Email, "/billing/dev/retries-exhausted", form()); code != http.StatusConflict || !strings.Contains(body, "wrong_state") {
		t.Errorf("retries on an active subscription: %d %s", code, body)
	}
	if code, body := post(c.user.Email, "/billing/dev/payment-fails", url.Values{}); code != http.StatusForbidden {
		t.Errorf("without CSRF token: %d %s", code, body)
	}
	other := e.newCustomer("nocheckout@example.com", false)
	if code, body := post(other.user.Email, "/billing/dev/pay-checkout", form()); code != http.StatusConflict || !strings.Contains(body, "no_customer") {
		t.Errorf("without a customer: %d %s", code, body)
	}
	if code, _ := post(c.user.Email, "/billing/dev/refund-everything", form()); code != http.StatusNotFound {
		t.Errorf("unknown action: %d", code)
	}
	if code, _ := post("", "/billing/dev/payment-fails", form()); code != http.StatusUnauthorized {
		t.Errorf("signed out: %d", code)
	}

	// The simulated Stripe outlives a restart of the platform.
	again := NewDevStripe(e.stripe.Stripe, dev.file)
	if s, ok := again.subOf(e.account(c.user.ID).CustomerID); !ok || s.Status != "active" {
		t.Errorf("after a restart: %+v, %v", s, ok)
	}
}
