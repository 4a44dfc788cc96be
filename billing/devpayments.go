package billing

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/stripe/stripe-go/v82"
	"github.com/stripe/stripe-go/v82/webhook"

	"github.com/slicehub/slicehub"
	"github.com/slicehub/slicehub/postgres"
)

// The payment side of the development platform (`slicehub dev` with no
// Stripe key), where billing runs for real against stripe-mock, Stripe's
// own stateless API double. Because stripe-mock keeps nothing, DevStripe
// plays the part of Stripe that has state (which subscriptions exist and
// their status), the way this package's tests do, and the page at
// /billing/dev is where a developer pays: at Checkout, a payment that
// fails, retries that run out, a payment that succeeds. Each action
// changes the simulated subscription, then posts Stripe's event, signed
// with the webhook secret, to the site's own POST /billing/webhook: the
// real webhook path, which re-reads the subscription (from DevStripe) and
// applies it as it would in production. So a newcomer can go subscribe →
// active → past due → suspended → paid → resumed without a Stripe account.

// DevPriceID is the development platform's price (stripe-mock takes any).
const DevPriceID = "price_slicehub_dev"

// devCheckout is a Checkout Session as the simulated Stripe knows it.
type devCheckout struct {
	CheckoutSession
	SuccessURL string
}

// DevStripe is stripe-mock with Stripe's state laid over it: the calls
// still reach stripe-mock (which checks their shape), and what stripe-mock
// cannot know (subscriptions and their status, completed checkouts) comes
// from here. The state is kept in the state directory across restarts.
type DevStripe struct {
	Stripe
	file string

	mu        sync.Mutex
	Subs      map[string]Subscription `json:"subscriptions"`
	Checkouts map[string]devCheckout  `json:"checkouts"`
}

func NewDevStripe(real Stripe, stateFile string) *DevStripe {
	d := &DevStripe{Stripe: real, file: stateFile,
		Subs: map[string]Subscription{}, Checkouts: map[string]devCheckout{}}
	if b, err := os.ReadFile(d.file); err == nil {
		_ = json.Unmarshal(b, d) // a damaged file starts over
		if d.Subs == nil {
			d.Subs = map[string]Subscription{}
		}
		if d.Checkouts == nil {
			d.Checkouts = map[string]devCheckout{}
		}
	}
	return d
}

// saveLocked writes the state; d.mu is held.
func (d *DevStripe) saveLocked() error {
	b, err := json.MarshalIndent(d, "", "  ")
	if err != nil {
		return err
	}
	tmp := d.file + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, d.file)
}

// CreateCheckout asks stripe-mock, then sends the user to the simulated
// Checkout page: stripe-mock's URL leads nowhere.
func (d *DevStripe) CreateCheckout(ctx context.Context, req CheckoutRequest) (Checkout, error) {
	co, err := d.Stripe.CreateCheckout(ctx, req)
	if err != nil {
		return co, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.Checkouts[co.ID] = devCheckout{CheckoutSession: CheckoutSession{ID: co.ID, CustomerID: req.CustomerID, Status: "open"},
		SuccessURL: req.SuccessURL}
	if err := d.saveLocked(); err != nil {
		return co, slicehub.Wrap("dev_checkout", slicehub.KindInternal, err)
	}
	co.URL = "/billing/dev?checkout=" + co.ID
	return co, nil
}

// CreatePortal: the Customer Portal of the development platform is its
// payment page.
func (d *DevStripe) CreatePortal(ctx context.Context, customerID, returnURL string) (string, error) {
	if _, err := d.Stripe.CreatePortal(ctx, customerID, returnURL); err != nil {
		return "", err
	}
	return "/billing/dev", nil
}

func (d *DevStripe) Subscription(ctx context.Context, id string) (Subscription, error) {
	if _, err := d.Stripe.Subscription(ctx, id); err != nil {
		return Subscription{}, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if s, ok := d.Subs[id]; ok {
		return s, nil
	}
	return Subscription{}, &slicehub.Error{Op: "dev_subscription", Kind: slicehub.KindNotFound,
		Code: "stripe_not_found", Message: "no such subscription"}
}

func (d *DevStripe) CheckoutSession(ctx context.Context, id string) (CheckoutSession, error) {
	real, err := d.Stripe.CheckoutSession(ctx, id)
	if err != nil {
		return real, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if c, ok := d.Checkouts[id]; ok {
		return c.CheckoutSession, nil
	}
	return real, nil
}

// subOf returns the customer's newest simulated subscription.
func (d *DevStripe) subOf(customerID string) (Subscription, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	var best Subscription
	for _, s := range d.Subs {
		if s.CustomerID == customerID && s.Created.After(best.Created) {
			best = s
		}
	}
	return best, best.ID != ""
}

func devID(prefix string) string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

// devAction is one thing the payment side does, and the event Stripe sends
// about it.
type devAction struct {
	Name, Label, Help string
	// From lists the subscription statuses it applies to ("" is none).
	From []string
}

var devActions = []devAction{
	{"pay-checkout", "Pay at Checkout", "Completes Checkout: a new active subscription (checkout.session.completed).", []string{""}},
	{"payment-fails", "Next payment fails", "The renewal charge is declined: past due, the slice keeps running during the grace period (invoice.payment_failed).", []string{"active", "trialing"}},
	{"retries-exhausted", "Retries run out", "Stripe gives up and marks the subscription unpaid: the slice is suspended (customer.subscription.updated).", []string{"past_due"}},
	{"payment-succeeds", "Payment succeeds", "The customer pays the open invoice: active again, a billing-suspended slice resumes (invoice.paid).", []string{"past_due", "unpaid"}},
	{"cancel", "Cancel now", "The subscription ends now; the slice runs until the end of the period paid for (customer.subscription.deleted).", []string{"active", "trialing", "past_due", "unpaid"}},
}

func (a devAction) appliesTo(status string) bool {
	for _, s := range a.From {
		if s == status {
			return true
		}
	}
	return false
}

// devBilling serves /billing/dev.
type devBilling struct {
	stripe *DevStripe
	// customer returns the user's Stripe customer id, "" before the
	// first Checkout.
	customer func(ctx context.Context, userID int64) (string, error)
	web      Web
	secret   string
	webhook  string // the gateway's own POST /billing/webhook
	client   *http.Client
}

var devPage = template.Must(template.New("dev").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Payments (development) · Slicehub</title><link rel="stylesheet" href="/static/style.css"></head>
<body><main class="card wide" id="dev-billing" data-status="{{.Status}}">
<h1>Payments (development)</h1>
<p>This platform runs billing against stripe-mock, which keeps no state. This page plays the payment side of Stripe:
each button changes your simulated subscription, then Stripe's event is signed and posted to <code>/billing/webhook</code>,
the same path Stripe calls in production.</p>
{{if .Notice}}<p class="notice" role="status" id="notice">{{.Notice}}</p>{{end}}
<p>Customer <code>{{or .Customer "none yet"}}</code> · subscription <code>{{or .SubID "none"}}</code> · status <strong id="sub-status">{{or .Status "none"}}</strong></p>
{{if not .Customer}}<p>Subscribe on <a href="/billing">the billing page</a> first: it creates your customer and a Checkout.</p>{{end}}
<ul class="dev-actions">
{{range .Actions}}<li><form method="post" action="/billing/dev/{{.Name}}">
<input type="hidden" name="csrf_token" value="{{$.CSRF}}">{{if $.Checkout}}<input type="hidden" name="checkout" value="{{$.Checkout}}">{{end}}
<button type="submit" id="dev-{{.Name}}">{{.Label}}</button> <span class="hint">{{.Help}}</span></form></li>
{{else}}<li>Nothing to simulate in this state.</li>{{end}}
</ul>
<p><a href="/billing">Billing page</a> · <a href="/workspace">Workspace</a></p>
</main></body></html>`))

const devPageCSP = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// RegisterDev adds the simulated payment side to r, the gateway's root
// router: GET /billing/dev and POST /billing/dev/:action. webhookURL is
// this site's own POST /billing/webhook, and secret its signing secret.
// Never in production: only the development platform calls it.
func RegisterDev(r fiber.Router, d *DevStripe, web Web, db *postgres.DB, secret, webhookURL string) {
	h := &devBilling{stripe: d, web: web, secret: secret, webhook: webhookURL, client: &http.Client{Timeout: time.Minute},
		customer: func(ctx context.Context, userID int64) (string, error) {
			a, err := db.BillingAccount(ctx, userID)
			if slicehub.KindOf(err) == slicehub.KindNotFound {
				return "", nil
			}
			return a.CustomerID, err
		}}
	r.Get("/billing/dev", h.page)
	r.Post("/billing/dev/:action", h.act)
}

func (h *devBilling) page(c *fiber.Ctx) error {
	user, err := h.web.User(c)
	if err != nil {
		return c.Redirect("/login", http.StatusSeeOther)
	}
	customer, err := h.customer(c.UserContext(), user.ID)
	if err != nil {
		return err
	}
	sub, _ := h.stripe.subOf(customer)
	d := struct {
		Customer, SubID, Status, Checkout, CSRF, Notice string
		Actions                                         []devAction
	}{Customer: customer, SubID: sub.ID, Status: sub.Status, CSRF: h.web.CSRFToken(c), Notice: c.Query("notice")}
	if customer != "" {
		for _, a := range devActions {
			if a.appliesTo(sub.Status) || (sub.Status == "canceled" && a.Name == "pay-checkout") {
				d.Actions = append(d.Actions, a)
			}
		}
	}
	if id := c.Query("checkout"); strings.HasPrefix(id, "cs_") {
		d.Checkout = id
	}
	var buf bytes.Buffer
	if err := devPage.Execute(&buf, d); err != nil {
		return slicehub.Wrap("dev_page", slicehub.KindInternal, err)
	}
	c.Set(fiber.HeaderCacheControl, "no-store")
	c.Set(fiber.HeaderContentSecurityPolicy, devPageCSP)
	c.Set(fiber.HeaderXFrameOptions, "DENY")
	c.Type("html", "utf-8")
	return c.Send(buf.Bytes())
}

func (h *devBilling) act(c *fiber.Ctx) error {
	const op = "dev_action"
	user, err := h.web.User(c)
	if err != nil {
		return err
	}
	if err := h.web.VerifyCSRF(c); err != nil {
		return err
	}
	customer, err := h.customer(c.UserContext(), user.ID)
	if err != nil {
		return err
	}
	if customer == "" {
		return slicehub.Errorf(op, slicehub.KindConflict, "no_customer", "subscribe on the billing page first")
	}
	name := c.Params("action")
	var act *devAction
	for i := range devActions {
		if devActions[i].Name == name {
			act = &devActions[i]
		}
	}
	if act == nil {
		return slicehub.Errorf(op, slicehub.KindNotFound, "no_action", "no such action")
	}
	sub, _ := h.stripe.subOf(customer)
	if !act.appliesTo(sub.Status) && (act.Name != "pay-checkout" || sub.Status != "canceled") {
		return slicehub.Errorf(op, slicehub.KindConflict, "wrong_state", "%s does not apply to a subscription that is %s", act.Label, orNoSub(sub.Status))
	}
	events, redirect, err := h.apply(user.ID, customer, sub, name, c.FormValue("checkout"))
	if err != nil {
		return err
	}
	var outcomes []string
	for _, ev := range events {
		res, err := h.deliver(c.UserContext(), ev)
		if err != nil {
			return slicehub.Wrap(op, slicehub.KindUnavailable, err)
		}
		outcomes = append(outcomes, res.Type+": "+res.Outcome)
	}
	if redirect == "" {
		redirect = "/billing/dev?notice=" + url.QueryEscape(act.Label+" — webhook "+strings.Join(outcomes, ", "))
	}
	return c.Redirect(redirect, http.StatusSeeOther)
}

func orNoSub(s string) string {
	if s == "" {
		return "not there"
	}
	return s
}

// apply changes the simulated subscription and returns Stripe's events
// about the change (payloads, unsigned).
func (h *devBilling) apply(userID int64, customer string, sub Subscription, action, checkout string) ([][]byte, string, error) {
	d := h.stripe
	d.mu.Lock()
	defer d.mu.Unlock()
	now := time.Now()
	var events [][]byte
	var redirect string
	switch action {
	case "pay-checkout":
		cs, ok := d.Checkouts[checkout]
		if !ok || cs.CustomerID != customer {
			// No open Checkout named: any open one of this customer.
			ok = false
			for _, c := range d.Checkouts {
				if c.CustomerID == customer && c.Status == "open" {
					cs, ok = c, true
				}
			}
		}
		if !ok {
			return nil, "", slicehub.Errorf("dev_action", slicehub.KindConflict, "no_checkout", "start a Checkout on the billing page first")
		}
		sub = Subscription{ID: devID("sub_dev_"), CustomerID: customer, Status: "active", PriceID: DevPriceID,
			Created: now, CurrentPeriodEnd: now.AddDate(0, 1, 0)}
		cs.Status, cs.SubscriptionID = "complete", sub.ID
		d.Checkouts[cs.ID] = cs
		events = append(events, devEvent("checkout.session.completed", map[string]any{
			"id": cs.ID, "object": "checkout.session", "mode": "subscription", "status": "complete",
			"customer": customer, "subscription": sub.ID, "client_reference_id": fmt.Sprint(userID)}))
		redirect = strings.ReplaceAll(cs.SuccessURL, "{CHECKOUT_SESSION_ID}", cs.ID)
	case "payment-fails":
		sub.Status = "past_due"
		events = append(events, devEvent("invoice.payment_failed", devInvoice(customer, sub.ID, "open")))
	case "retries-exhausted":
		sub.Status = "unpaid"
		events = append(events, devEvent("customer.subscription.updated", devSubObject(sub)))
	case "payment-succeeds":
		sub.Status = "active"
		sub.CurrentPeriodEnd = now.AddDate(0, 1, 0)
		events = append(events, devEvent("invoice.paid", devInvoice(customer, sub.ID, "paid")))
	case "cancel":
		sub.Status, sub.EndedAt = "canceled", now
		events = append(events, devEvent("customer.subscription.deleted", devSubObject(sub)))
	}
	d.Subs[sub.ID] = sub
	if err := d.saveLocked(); err != nil {
		return nil, "", slicehub.Wrap("dev_action", slicehub.KindInternal, err)
	}
	return events, redirect, nil
}

func devEvent(typ string, object map[string]any) []byte {
	b, _ := json.Marshal(map[string]any{
		"id": devID("evt_dev_"), "object": "event", "api_version": stripe.APIVersion, "created": time.Now().Unix(),
		"type": typ, "livemode": false, "pending_webhooks": 1, "data": map[string]any{"object": object},
	})
	return b
}

func devSubObject(s Subscription) map[string]any {
	return map[string]any{"id": s.ID, "object": "subscription", "customer": s.CustomerID, "status": s.Status}
}

func devInvoice(customer, subID, status string) map[string]any {
	return map[string]any{"id": devID("in_dev_"), "object": "invoice", "customer": customer, "status": status,
		"parent": map[string]any{"type": "subscription_details", "subscription_details": map[string]any{"subscription": subID}}}
}

// deliver signs payload as Stripe does and posts it to the webhook.
func (h *devBilling) deliver(ctx context.Context, payload []byte) (WebhookResult, error) {
	var res WebhookResult
	sp := webhook.GenerateTestSignedPayload(&webhook.UnsignedPayload{Payload: payload, Secret: h.secret, Timestamp: time.Now()})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.webhook, bytes.NewReader(payload))
	if err != nil {
		return res, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Stripe-Signature", sp.Header)
	resp, err := h.client.Do(req)
	if err != nil {
		return res, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusOK {
		return res, fmt.Errorf("webhook answered %d: %s", resp.StatusCode, body)
	}
	return res, json.Unmarshal(body, &res)
}
