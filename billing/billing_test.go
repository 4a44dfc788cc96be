package billing

import (
	"errors"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stripe/stripe-go/v82/webhook"

	"github.com/slicehub/slicehub"
	"github.com/slicehub/slicehub/testsupport"
)

const day = 24 * time.Hour

// TestBilling runs every story against one stripe-mock; each subtest has
// its own database, clock and service.
func TestBilling(t *testing.T) {
	if testing.Short() {
		t.Skip("needs PostgreSQL and stripe-mock")
	}
	mock := startStripeMock(t)

	t.Run("stripe client against stripe-mock", func(t *testing.T) { testStripeClient(t, mock) })
	t.Run("customer is created once, idempotently", func(t *testing.T) { testCustomerOnce(t, mock) })
	t.Run("plans: regular, launch by sign-up date, launch by coupon", func(t *testing.T) { testPlans(t, mock) })
	t.Run("subscribe -> active -> slice running", func(t *testing.T) { testSubscribe(t, mock) })
	t.Run("payment failed -> grace -> suspended -> paid -> resumed", func(t *testing.T) { testPastDue(t, mock) })
	t.Run("canceled -> suspended -> export -> retired -> pays again", func(t *testing.T) { testCancel(t, mock) })
	t.Run("webhook refuses forged, stale and malformed deliveries", func(t *testing.T) { testWebhookRefusals(t, mock) })
	t.Run("replayed event is a no-op", func(t *testing.T) { testReplay(t, mock) })
	t.Run("out-of-order delivery follows Stripe, not arrival", func(t *testing.T) { testOutOfOrder(t, mock) })
	t.Run("a failure mid-transaction leaves nothing half-applied", func(t *testing.T) { testAtomic(t, mock) })
	t.Run("complimentary accounts run whatever Stripe says", func(t *testing.T) { testComplimentary(t, mock) })
	t.Run("pages and JSON API", func(t *testing.T) { testPages(t, mock) })
}

func testStripeClient(t *testing.T, mock string) {
	c := NewStripeClient(StripeConfig{SecretKey: "sk_test_123", URL: mock}, nil)
	ctx := t.Context()
	sub, err := c.Subscription(ctx, "sub_fromtest")
	if err != nil {
		t.Fatal(err)
	}
	if sub.ID != "sub_fromtest" || sub.Status == "" || sub.CustomerID == "" || sub.PriceID == "" || sub.CurrentPeriodEnd.IsZero() || sub.Created.IsZero() {
		t.Errorf("Subscription = %+v: want id, status, customer, price and period end", sub)
	}
	co, err := c.CreateCheckout(ctx, CheckoutRequest{CustomerID: "cus_x", UserID: 7, PriceID: "price_regular", TrialDays: 7,
		SuccessURL: "http://localhost/billing?checkout=done", CancelURL: "http://localhost/billing"})
	if err != nil || co.ID == "" || !strings.HasPrefix(co.URL, "https://") {
		t.Errorf("CreateCheckout = %+v, %v", co, err)
	}
	cs, err := c.CheckoutSession(ctx, co.ID)
	if err != nil || cs.ID != co.ID {
		t.Errorf("CheckoutSession(%s) = %+v, %v", co.ID, cs, err)
	}
	if u, err := c.CreatePortal(ctx, "cus_x", "http://localhost/billing"); err != nil || u == "" {
		t.Errorf("CreatePortal = %q, %v", u, err)
	}
	inv, err := c.Invoices(ctx, "cus_x", 3)
	if err != nil || len(inv) == 0 || len(inv) > 3 || inv[0].ID == "" || inv[0].Currency == "" {
		t.Errorf("Invoices = %+v, %v", inv, err)
	}
	if ok, err := c.CouponValid(ctx, "LAUNCH"); err != nil || !ok {
		t.Errorf("CouponValid = %t, %v", ok, err)
	}
	// Nothing listens here: an unreachable Stripe is "unavailable" (a
	// webhook then answers 503 and Stripe retries).
	down := NewStripeClient(StripeConfig{SecretKey: "sk_test_123", URL: "http://127.0.0.1:1"}, &http.Client{Timeout: time.Second})
	if _, err := down.Subscription(ctx, "sub_x"); slicehub.KindOf(err) != slicehub.KindUnavailable {
		t.Errorf("Subscription with Stripe down: %v (kind %v), want unavailable", err, slicehub.KindOf(err))
	}
}

func testCustomerOnce(t *testing.T, mock string) {
	e := newEnv(t, mock)
	c := e.newCustomer("ada@example.com", false)
	a1, err := e.svc.customer(t.Context(), c.user)
	if err != nil {
		t.Fatal(err)
	}
	a2, err := e.svc.customer(t.Context(), c.user)
	if err != nil {
		t.Fatal(err)
	}
	if a1.CustomerID == "" || a1.CustomerID != a2.CustomerID {
		t.Fatalf("customer ids %q then %q: want one, kept", a1.CustomerID, a2.CustomerID)
	}
	calls := e.rec.find(http.MethodPost, "/v1/customers")
	if len(calls) != 1 {
		t.Fatalf("POST /v1/customers called %d times, want 1", len(calls))
	}
	wantKey := "slicehub-customer-" + itoa(c.user.ID) + "-" + a1.CustomerNonce
	if calls[0].IdempotencyKey != wantKey || len(a1.CustomerNonce) < 16 {
		t.Errorf("Idempotency-Key %q, want %q (user id + the row's nonce)", calls[0].IdempotencyKey, wantKey)
	}
	if got := calls[0].Form.Get("metadata[slicehub_user_id]"); got != itoa(c.user.ID) {
		t.Errorf("customer metadata user id %q, want %d", got, c.user.ID)
	}
	audit, _ := e.db.BillingAuditOf(t.Context(), c.user.ID)
	if len(audit) != 1 || audit[0].Action != "customer_created" {
		t.Errorf("audit %+v, want one customer_created", audit)
	}
}

func testPlans(t *testing.T, mock string) {
	checkoutPrice := func(e *env, c customer) (string, string) {
		t.Helper()
		resp := e.do(http.MethodPost, "/billing/api/checkout", c.user.Email, "application/json", "{}")
		if resp.StatusCode != http.StatusOK {
			b, _ := io.ReadAll(resp.Body)
			t.Fatalf("checkout: %d %s", resp.StatusCode, b)
		}
		calls := e.rec.find(http.MethodPost, "/v1/checkout/sessions")
		last := calls[len(calls)-1]
		if last.Form.Get("customer") != e.account(c.user.ID).CustomerID || last.Form.Get("mode") != "subscription" ||
			last.Form.Get("client_reference_id") != itoa(c.user.ID) {
			t.Errorf("checkout form %v: want the user's customer, subscription mode, the user id as reference", last.Form)
		}
		return last.Form.Get("line_items[0][price]"), last.Form.Get("discounts[0][coupon]")
	}

	e := newEnv(t, mock)
	c := e.newCustomer("regular@example.com", false)
	if price, coupon := checkoutPrice(e, c); price != "price_regular" || coupon != "" {
		t.Errorf("after the launch: price %q coupon %q, want price_regular and no coupon", price, coupon)
	}

	e = newEnv(t, mock, func(c *Config) { c.LaunchUntil = time.Now().Add(time.Hour); c.TrialDays = 14 })
	c = e.newCustomer("early@example.com", false)
	if price, _ := checkoutPrice(e, c); price != "price_launch" {
		t.Errorf("signed up before the launch date: price %q, want price_launch", price)
	}
	calls := e.rec.find(http.MethodPost, "/v1/checkout/sessions")
	if got := calls[0].Form.Get("subscription_data[trial_period_days]"); got != "14" {
		t.Errorf("trial days %q, want 14", got)
	}
	if !e.account(c.user.ID).LaunchPrice {
		t.Error("the account does not record the launch price it was offered")
	}
	st := decode[Status](t, e.do(http.MethodGet, "/billing/api/status", c.user.Email, "", ""))
	if !st.Plan.Launch || st.Plan.Amount != 450 || st.Plan.Display != "$4.50 / month" {
		t.Errorf("plan shown %+v, want the launch price $4.50", st.Plan)
	}

	e = newEnv(t, mock, func(c *Config) { c.Launch.PriceID = ""; c.LaunchCoupon = "LAUNCH" })
	c = e.newCustomer("coupon@example.com", false)
	if price, coupon := checkoutPrice(e, c); price != "price_regular" || coupon != "LAUNCH" {
		t.Errorf("launch coupon valid: price %q coupon %q, want price_regular with coupon LAUNCH", price, coupon)
	}
}

func testSubscribe(t *testing.T, mock string) {
	e := newEnv(t, mock)
	c := e.newCustomer("sub@example.com", false)
	end := e.clock.Now().Add(30 * day)
	e.subscribe(c, "sub_active1", end)

	a := e.account(c.user.ID)
	if a.Status != "active" || a.SubscriptionID != "sub_active1" || !a.CurrentPeriodEnd.Equal(end) {
		t.Fatalf("account %+v: want active sub_active1 ending %v", a, end)
	}
	e.wantState(c.slice.ID, slicehub.StateAssigned) // runs
	e.enforce()
	e.wantState(c.slice.ID, slicehub.StateAssigned)

	st := decode[Status](t, e.do(http.MethodGet, "/billing/api/status", c.user.Email, "", ""))
	if st.Entitlement != "active" || st.Banner != "" || st.NextCharge == nil || st.NextCharge.Amount != 900 ||
		!st.NextCharge.At.Equal(end) || st.CanCheckout || !st.CanPortal || st.SliceState != "assigned" {
		t.Errorf("status %+v: want active, next charge $9 on %v, portal only", st, end)
	}
	// A second checkout while subscribed is refused with a reason.
	resp := e.do(http.MethodPost, "/billing/api/checkout", c.user.Email, "application/json", "{}")
	if b := decode[errorBody](t, resp); resp.StatusCode != http.StatusConflict || b.Code != "already_subscribed" {
		t.Errorf("second checkout: %d %+v, want 409 already_subscribed", resp.StatusCode, b)
	}
	if n := len(e.rec.find(http.MethodPost, "/v1/customers")); n != 1 {
		t.Errorf("customers created: %d, want 1", n)
	}
}

func testPastDue(t *testing.T, mock string) {
	e := newEnv(t, mock)
	c := e.newCustomer("late@example.com", true)
	sub := e.subscribe(c, "sub_late", e.clock.Now().Add(30*day))

	// Day 0: the renewal fails.
	e.clock.Add(30 * day)
	sub.Status = "past_due"
	e.stripe.setSub(sub)
	e.deliver(e.event("evt_fail1", "invoice.payment_failed", invoiceObject("in_1", sub.CustomerID, sub.ID)), http.StatusOK, OutcomeApplied)
	e.wantState(c.slice.ID, slicehub.StateAssigned)
	st := decode[Status](t, e.do(http.MethodGet, "/billing/api/status", c.user.Email, "", ""))
	if st.Entitlement != "grace" || st.Banner != BannerPastDue || !st.GraceEndsAt.Equal(e.clock.Now().Add(3*day)) {
		t.Fatalf("status %+v: want grace with the payment_failed banner until day 3", st)
	}

	// Day 2: still within grace, and a second failure does not restart it.
	e.clock.Add(2 * day)
	e.deliver(e.event("evt_fail2", "invoice.payment_failed", invoiceObject("in_1", sub.CustomerID, sub.ID)), http.StatusOK, OutcomeApplied)
	e.enforce()
	e.wantState(c.slice.ID, slicehub.StateAssigned)

	// Day 3 + 1 minute: the periodic check suspends.
	e.clock.Add(day + time.Minute)
	e.enforce()
	sl := e.wantState(c.slice.ID, slicehub.StateSuspended)
	if sl.UserID != c.user.ID {
		t.Errorf("suspended slice lost its user: %+v", sl)
	}
	evs, _ := e.db.SliceEvents(t.Context(), c.slice.ID)
	last := evs[len(evs)-1]
	if last.Actor != "billing" || last.From != slicehub.StateAssigned || last.To != slicehub.StateSuspended || !strings.Contains(last.Reason, "grace") {
		t.Errorf("last slice event %+v: want billing assigned -> suspended, about grace", last)
	}
	var dbExists bool
	if err := e.db.Pool.QueryRow(t.Context(), `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`,
		slicehub.DatabaseName(c.slice.ID)).Scan(&dbExists); err != nil || !dbExists {
		t.Errorf("the suspended slice's database is gone (%v)", err)
	}
	e.enforce() // again: nothing more
	if evs2, _ := e.db.SliceEvents(t.Context(), c.slice.ID); len(evs2) != len(evs) {
		t.Errorf("a second check added slice events: %d -> %d", len(evs), len(evs2))
	}

	// The customer pays: resumed, same database, a new generation of its job.
	sub.Status = "active"
	sub.CurrentPeriodEnd = e.clock.Now().Add(30 * day)
	e.stripe.setSub(sub)
	e.deliver(e.event("evt_paid", "invoice.paid", invoiceObject("in_1", sub.CustomerID, sub.ID)), http.StatusOK, OutcomeApplied)
	sl = e.wantState(c.slice.ID, slicehub.StateProvisioning)
	if sl.JobID != "" || sl.Restarts != c.slice.Restarts+1 || sl.UserID != c.user.ID {
		t.Errorf("resumed slice %+v: want no job (the leader dispatches), one more generation, same user", sl)
	}
	a := e.account(c.user.ID)
	if !a.SuspendedAt.IsZero() || !a.PastDueSince.IsZero() {
		t.Errorf("account %+v: want the suspension and the past due mark cleared", a)
	}
	wantAudit(t, e, c, "subscription_synced", "slice_suspended", "slice_resumed")
}

func testCancel(t *testing.T, mock string) {
	e := newEnv(t, mock)
	c := e.newCustomer("bye@example.com", true)
	other := e.newCustomer("nosy@example.com", false)
	// Some data of the user's, to find in the export.
	conn, err := pgx.Connect(t.Context(), testsupport.Stack(t).Postgres.DatabaseURL(slicehub.DatabaseName(c.slice.ID)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(t.Context(), `CREATE TABLE crm_contacts (name text); INSERT INTO crm_contacts VALUES ('Grace Hopper')`); err != nil {
		t.Fatal(err)
	}
	conn.Close(t.Context())
	end := e.clock.Now().Add(10 * day)
	sub := e.subscribe(c, "sub_bye", end)

	// Canceled in the portal, at period end: runs until then, with a banner.
	sub.CancelAtPeriodEnd = true
	e.stripe.setSub(sub)
	e.deliver(e.event("evt_upd", "customer.subscription.updated", subObject(sub)), http.StatusOK, OutcomeApplied)
	e.enforce()
	e.wantState(c.slice.ID, slicehub.StateAssigned)
	if st := decode[Status](t, e.do(http.MethodGet, "/billing/api/status", c.user.Email, "", "")); st.Banner != BannerEnding || !st.SuspendAt.Equal(end) || st.NextCharge != nil {
		t.Errorf("status %+v: want the ending banner, suspension on %v, no next charge", st, end)
	}

	// The period ends; Stripe deletes the subscription.
	e.clock.Add(10*day + time.Minute)
	sub.Status, sub.EndedAt = "canceled", end
	e.stripe.setSub(sub)
	e.deliver(e.event("evt_del", "customer.subscription.deleted", subObject(sub)), http.StatusOK, OutcomeApplied)
	e.wantState(c.slice.ID, slicehub.StateSuspended)

	// Retention: kept 30 days.
	e.clock.Add(29 * day)
	e.enforce()
	e.wantState(c.slice.ID, slicehub.StateSuspended)
	if ex, _ := e.db.BillingExports(t.Context(), c.user.ID); len(ex) != 0 {
		t.Fatalf("exported before the retention ended: %+v", ex)
	}
	e.clock.Add(day + time.Minute)
	e.enforce()
	sl := e.wantState(c.slice.ID, slicehub.StateRetired)
	if sl.UserID != c.user.ID {
		t.Errorf("retired slice %+v: want it still bound to its user, so that no login hands them a new one", sl)
	}
	ex, _ := e.db.BillingExports(t.Context(), c.user.ID)
	if len(ex) != 1 {
		t.Fatalf("exports %+v, want 1", ex)
	}
	b, err := os.ReadFile(ex[0].Path)
	if err != nil || !strings.HasPrefix(string(b), "PGDMP") || int64(len(b)) != ex[0].SizeBytes || !strings.Contains(string(b), "crm_contacts") {
		t.Fatalf("export file %s: %v, %d bytes (want a pg_dump archive of %d bytes)", ex[0].Path, err, len(b), ex[0].SizeBytes)
	}
	var needsDump bool
	var dumpPath string
	if err := e.db.Pool.QueryRow(t.Context(), `SELECT needs_dump, coalesce(dump_path, '') FROM slices WHERE id = $1`, c.slice.ID).Scan(&needsDump, &dumpPath); err != nil {
		t.Fatal(err)
	}
	if !needsDump || dumpPath != ex[0].Path {
		t.Errorf("slice needs_dump %t dump_path %q: want the export as the final dump (%s)", needsDump, dumpPath, ex[0].Path)
	}
	e.enforce() // again: no second export, no second retirement
	if ex2, _ := e.db.BillingExports(t.Context(), c.user.ID); len(ex2) != 1 {
		t.Errorf("a second check exported again: %d exports", len(ex2))
	}

	// The owner downloads it; nobody else can, not even by id.
	resp := e.do(http.MethodGet, "/billing/export", c.user.Email, "", "")
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || string(body) != string(b) || !strings.Contains(resp.Header.Get("Content-Disposition"), "attachment") {
		t.Errorf("owner's download: %d, %d bytes, %q", resp.StatusCode, len(body), resp.Header.Get("Content-Disposition"))
	}
	for _, path := range []string{"/billing/export", "/billing/export?id=" + itoa(ex[0].ID)} {
		resp = e.do(http.MethodGet, path, other.user.Email, "", "")
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("another user's GET %s: %d, want 404", path, resp.StatusCode)
		}
	}
	if resp := e.do(http.MethodGet, "/billing/export", "", "", ""); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("anonymous download: %d, want 401", resp.StatusCode)
	}
	if st := decode[Status](t, e.do(http.MethodGet, "/billing/api/status", c.user.Email, "", "")); st.Entitlement != "retired" || !st.CanCheckout {
		t.Errorf("status after retirement %+v: want retired, with checkout offered", st)
	}

	// They come back and subscribe again: the retired slice lets go of
	// them, so that their next claim gets a new one; the export stays.
	e.clock.Add(day)
	again := Subscription{ID: "sub_again", CustomerID: sub.CustomerID, Status: "active", PriceID: "price_regular",
		Created: e.clock.Now(), CurrentPeriodEnd: e.clock.Now().Add(30 * day)}
	e.stripe.setSub(again)
	e.deliver(e.event("evt_again", "customer.subscription.created", subObject(again)), http.StatusOK, OutcomeApplied)
	if sl := e.slice(c.slice.ID); sl.State != slicehub.StateRetired || sl.UserID != 0 {
		t.Errorf("old slice after resubscribing %+v: want retired and released", sl)
	}
	if _, err := os.Stat(ex[0].Path); err != nil {
		t.Errorf("export lost after resubscribing: %v", err)
	}
	if got := e.claims.users; len(got) != 1 || got[0] != c.user.ID {
		t.Errorf("claims after resubscribing: %v, want one for user %d", got, c.user.ID)
	}
	wantAudit(t, e, c, "slice_suspended", "export_written", "slice_retired", "export_downloaded", "retired_slice_released")
}

func testWebhookRefusals(t *testing.T, mock string) {
	e := newEnv(t, mock)
	c := e.newCustomer("safe@example.com", false)
	sub := e.subscribe(c, "sub_safe", e.clock.Now().Add(30*day))
	sub.Status = "unpaid" // what a forged event would like to cause
	e.stripe.setSub(sub)
	payload := e.event("evt_forged", "customer.subscription.updated", subObject(sub))
	before := e.snapshot(c)

	refuse := func(name string, resp *http.Response, wantCode string) {
		t.Helper()
		b := decode[errorBody](t, resp)
		if resp.StatusCode != http.StatusBadRequest || b.Code != wantCode || b.Error == "" {
			t.Errorf("%s: %d %+v, want 400 %s", name, resp.StatusCode, b, wantCode)
		}
		e.wantUnchanged(name, before, c)
	}
	refuse("wrong secret", e.deliverSigned(payload, "whsec_attacker", time.Now()), "bad_signature")
	tampered := []byte(strings.Replace(string(payload), `"livemode":false`, `"livemode":true `, 1))
	refuse("stale timestamp", e.deliverSigned(payload, webhookSecret, time.Now().Add(-10*time.Minute)), "stale_signature")

	req := func(body []byte, sig string) *http.Response {
		r, _ := http.NewRequest(http.MethodPost, "/billing/webhook", strings.NewReader(string(body)))
		if sig != "" {
			r.Header.Set("Stripe-Signature", sig)
		}
		resp, err := e.app.Test(r, 30_000)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	refuse("no signature", req(payload, ""), "missing_signature")
	refuse("garbage signature", req(payload, "t=abc,v1=zz"), "bad_signature")
	// A valid signature of other bytes: the body was altered in transit.
	good := signature(payload, time.Now())
	refuse("tampered body", req(tampered, good), "bad_signature")
	refuse("signed, but not JSON", req([]byte("not json"), signature([]byte("not json"), time.Now())), "bad_payload")
	resp := req(make([]byte, webhookBodyLimit+1), good)
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("oversized body: %d, want 413", resp.StatusCode)
	}
	e.wantUnchanged("oversized body", before, c)
}

// testReplay also covers that the first of the refusals above was not
// about the event: the genuine delivery is applied once, then replays do
// nothing.
func testReplay(t *testing.T, mock string) {
	e := newEnv(t, mock)
	c := e.newCustomer("twice@example.com", false)
	sub := e.subscribe(c, "sub_twice", e.clock.Now().Add(30*day))
	sub.Status = "unpaid"
	e.stripe.setSub(sub)
	payload := e.event("evt_once", "invoice.payment_failed", invoiceObject("in_9", sub.CustomerID, sub.ID))
	e.deliver(payload, http.StatusOK, OutcomeApplied)
	e.wantState(c.slice.ID, slicehub.StateSuspended)
	after := e.snapshot(c)

	// Stripe's truth moves on; a replay of the old event must not be a
	// reason to re-read and act.
	sub.Status = "active"
	e.stripe.setSub(sub)
	e.deliver(payload, http.StatusOK, OutcomeDuplicate)
	e.deliver(payload, http.StatusOK, OutcomeDuplicate)
	e.wantUnchanged("replays", after, c)
	evs, _ := e.db.BillingEvents(t.Context())
	n := 0
	for _, ev := range evs {
		if ev.ID == "evt_once" {
			n++
			if ev.Outcome != OutcomeApplied || ev.UserID != c.user.ID || ev.Type != "invoice.payment_failed" {
				t.Errorf("recorded event %+v", ev)
			}
		}
	}
	if n != 1 {
		t.Errorf("evt_once recorded %d times, want 1", n)
	}

	// An event type billing does not act on, and an event about a
	// customer that is not ours: acknowledged and recorded as ignored.
	e.deliver(e.event("evt_other", "customer.created", map[string]any{"id": "cus_new", "object": "customer"}), http.StatusOK, OutcomeIgnored)
	e.deliver(e.event("evt_foreign", "customer.subscription.updated", subObject(Subscription{ID: "sub_zzz", CustomerID: "cus_not_ours", Status: "active"})),
		http.StatusOK, OutcomeIgnored)
	e.wantUnchanged("ignored events (apart from their records)", func() snapshot { s := after; s.Events += 2; return s }(), c)
}

func testOutOfOrder(t *testing.T, mock string) {
	e := newEnv(t, mock)
	c := e.newCustomer("order@example.com", false)
	sub := e.subscribe(c, "sub_order", e.clock.Now().Add(30*day))

	// Sent in this order by Stripe: updated(past_due), then invoice.paid
	// (active). Delivered the other way round.
	stale := sub
	stale.Status = "past_due"
	e.deliver(e.event("evt_paid_first", "invoice.paid", invoiceObject("in_5", sub.CustomerID, sub.ID)), http.StatusOK, OutcomeApplied)
	e.deliver(e.event("evt_pastdue_late", "customer.subscription.updated", subObject(stale)), http.StatusOK, OutcomeApplied)
	if a := e.account(c.user.ID); a.Status != "active" || !a.PastDueSince.IsZero() {
		t.Errorf("account %+v after a late past_due event: want active, as Stripe says", a)
	}
	e.clock.Add(5 * day)
	e.enforce()
	e.wantState(c.slice.ID, slicehub.StateAssigned)

	// The customer canceled an old subscription and has a new one; the
	// old one's deletion arrives last. It must not take the slice away.
	newer := Subscription{ID: "sub_newer", CustomerID: sub.CustomerID, Status: "active", PriceID: "price_regular",
		Created: e.clock.Now(), CurrentPeriodEnd: e.clock.Now().Add(30 * day)}
	e.stripe.setSub(newer)
	e.deliver(e.event("evt_new_created", "customer.subscription.created", subObject(newer)), http.StatusOK, OutcomeApplied)
	old := sub
	old.Status, old.EndedAt, old.CurrentPeriodEnd = "canceled", e.clock.Now().Add(-time.Hour), e.clock.Now().Add(-time.Hour)
	e.stripe.setSub(old)
	e.deliver(e.event("evt_old_deleted", "customer.subscription.deleted", subObject(old)), http.StatusOK, OutcomeStale)
	if a := e.account(c.user.ID); a.SubscriptionID != "sub_newer" || a.Status != "active" {
		t.Errorf("account %+v: want the newer, active subscription to decide", a)
	}
	e.enforce()
	e.wantState(c.slice.ID, slicehub.StateAssigned)
}

func testAtomic(t *testing.T, mock string) {
	e := newEnv(t, mock)
	c := e.newCustomer("atomic@example.com", true)
	sub := e.subscribe(c, "sub_atomic", e.clock.Now().Add(30*day))
	sub.Status = "unpaid"
	e.stripe.setSub(sub)
	payload := e.event("evt_atomic", "invoice.payment_failed", invoiceObject("in_a", sub.CustomerID, sub.ID))

	for _, point := range []string{"enforce.after_transition", "webhook.before_commit"} {
		before := e.snapshot(c)
		e.svc.failpoint = func(p string) error {
			if p == point {
				return errors.New("injected failure at " + p)
			}
			return nil
		}
		resp := e.deliverSigned(payload, webhookSecret, time.Now())
		if b := decode[errorBody](t, resp); resp.StatusCode != http.StatusInternalServerError || b.Code != "event_not_applied" {
			t.Errorf("failure at %s: %d %+v, want 500 event_not_applied (so that Stripe retries)", point, resp.StatusCode, b)
		}
		e.wantUnchanged("a delivery failing at "+point, before, c)
	}
	// Stripe unreachable while applying: 503, nothing written.
	before := e.snapshot(c)
	e.svc.failpoint = nil
	e.stripe.mu.Lock()
	e.stripe.down = true
	e.stripe.mu.Unlock()
	if resp := e.deliverSigned(payload, webhookSecret, time.Now()); resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("Stripe down: %d, want 503", resp.StatusCode)
	}
	e.wantUnchanged("a delivery while Stripe is down", before, c)
	e.stripe.mu.Lock()
	e.stripe.down = false
	e.stripe.mu.Unlock()

	// Stripe's retry then applies it, once.
	e.deliver(payload, http.StatusOK, OutcomeApplied)
	e.wantState(c.slice.ID, slicehub.StateSuspended)

	// The retirement's transaction failing: the export (committed on its
	// own, on purpose) is kept and reused, the slice stays suspended.
	sub.Status, sub.EndedAt = "canceled", e.clock.Now()
	sub.CurrentPeriodEnd = e.clock.Now()
	e.stripe.setSub(sub)
	e.deliver(e.event("evt_atomic_del", "customer.subscription.deleted", subObject(sub)), http.StatusOK, OutcomeApplied)
	e.clock.Add(31 * day)
	e.svc.failpoint = func(p string) error {
		if p == "retire.after_transition" {
			return errors.New("injected failure at " + p)
		}
		return nil
	}
	if err := e.svc.Enforce(t.Context()); err == nil {
		t.Fatal("Enforce with a failing retirement returned no error")
	}
	e.wantState(c.slice.ID, slicehub.StateSuspended)
	evs, _ := e.db.SliceEvents(t.Context(), c.slice.ID)
	if last := evs[len(evs)-1]; last.To != slicehub.StateSuspended {
		t.Errorf("last slice event %+v: the failed retirement left a trace", last)
	}
	e.svc.failpoint = nil
	e.enforce()
	e.wantState(c.slice.ID, slicehub.StateRetired)
	if ex, _ := e.db.BillingExports(t.Context(), c.user.ID); len(ex) != 1 {
		t.Errorf("exports %d, want 1: the retry must reuse the first", len(ex))
	}
}

func testComplimentary(t *testing.T, mock string) {
	e := newEnv(t, mock)
	c := e.newCustomer("friend@example.com", false)
	sub := e.subscribe(c, "sub_friend", e.clock.Now().Add(30*day))
	sub.Status = "unpaid"
	e.stripe.setSub(sub)
	e.deliver(e.event("evt_f1", "invoice.payment_failed", invoiceObject("in_f", sub.CustomerID, sub.ID)), http.StatusOK, OutcomeApplied)
	e.wantState(c.slice.ID, slicehub.StateSuspended)

	bad := e.do(http.MethodPost, "/admin/api/billing/complimentary", "", "application/json", `{"user_id": 0}`)
	if b := decode[errorBody](t, bad); bad.StatusCode != http.StatusBadRequest || b.Code != "invalid_request" {
		t.Errorf("bad complimentary request: %d %+v", bad.StatusCode, b)
	}
	resp := e.do(http.MethodPost, "/admin/api/billing/complimentary", "", "application/json",
		`{"user_id": `+itoa(c.user.ID)+`, "complimentary": true, "reason": "design partner"}`)
	if st := decode[Status](t, resp); resp.StatusCode != http.StatusOK || st.Entitlement != "complimentary" || st.CanCheckout {
		t.Fatalf("complimentary: %d %+v", resp.StatusCode, st)
	}
	e.wantState(c.slice.ID, slicehub.StateProvisioning) // resumed
	e.clock.Add(60 * day)
	e.enforce()
	e.wantState(c.slice.ID, slicehub.StateProvisioning)

	resp = e.do(http.MethodGet, "/admin/api/billing/users/"+itoa(c.user.ID), "", "", "")
	var got struct {
		Audit []struct{ Actor, Action string } `json:"audit"`
	}
	got = decode[struct {
		Audit []struct{ Actor, Action string } `json:"audit"`
	}](t, resp)
	found := false
	for _, a := range got.Audit {
		found = found || (a.Action == "complimentary_set" && a.Actor == "admin:1")
	}
	if !found {
		t.Errorf("audit %+v lacks complimentary_set by admin:1", got.Audit)
	}

	// Taken back: the subscription (unpaid) decides again.
	e.do(http.MethodPost, "/admin/api/billing/complimentary", "", "application/json",
		`{"user_id": `+itoa(c.user.ID)+`, "complimentary": false, "reason": "partnership over"}`)
	e.wantState(c.slice.ID, slicehub.StateSuspended)
}

func testPages(t *testing.T, mock string) {
	e := newEnv(t, mock)
	c := e.newCustomer("page@example.com", false)

	if resp := e.do(http.MethodGet, "/billing", "", "", ""); resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/login" {
		t.Errorf("anonymous GET /billing: %d to %q, want 303 to /login", resp.StatusCode, resp.Header.Get("Location"))
	}
	if resp := e.do(http.MethodGet, "/billing/api/status", "", "", ""); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("anonymous status: %d, want 401", resp.StatusCode)
	}
	resp := e.do(http.MethodGet, "/billing", c.user.Email, "", "")
	html, _ := io.ReadAll(resp.Body)
	for _, want := range []string{`id="subscribe"`, "$9.00 / month", `name="csrf_token" value="` + testCSRF + `"`, "Not subscribed"} {
		if !strings.Contains(string(html), want) {
			t.Errorf("billing page before subscribing lacks %q", want)
		}
	}
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "form-action 'self' https://checkout.stripe.com") {
		t.Errorf("CSP %q", csp)
	}

	// Forms need the CSRF token.
	form := func(path, token string) *http.Response {
		return e.do(http.MethodPost, path, c.user.Email, "application/x-www-form-urlencoded", url.Values{"csrf_token": {token}}.Encode())
	}
	if resp := form("/billing/checkout", "wrong"); resp.StatusCode != http.StatusForbidden {
		t.Errorf("checkout form with a bad CSRF token: %d, want 403", resp.StatusCode)
	}
	if n := len(e.rec.find(http.MethodPost, "/v1/checkout/sessions")); n != 0 {
		t.Errorf("a refused form reached Stripe (%d checkout sessions)", n)
	}
	resp = form("/billing/checkout", testCSRF)
	if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(loc, "https://checkout.stripe.com/") {
		t.Errorf("checkout form: %d to %q, want 303 to Stripe Checkout", resp.StatusCode, loc)
	}
	calls := e.rec.find(http.MethodPost, "/v1/checkout/sessions")
	if s := calls[0].Form.Get("success_url"); !strings.Contains(s, "/billing?checkout=done&session_id={CHECKOUT_SESSION_ID}") {
		t.Errorf("success_url %q", s)
	}
	// JSON posts need application/json and a same-origin Origin.
	if resp := e.do(http.MethodPost, "/billing/api/portal", c.user.Email, "text/plain", "{}"); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("JSON post as text/plain: %d, want 400", resp.StatusCode)
	}
	r, _ := http.NewRequest(http.MethodPost, "/billing/api/portal", strings.NewReader("{}"))
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("Origin", "https://evil.example")
	r.AddCookie(&http.Cookie{Name: "test_user", Value: c.user.Email})
	if resp, _ := e.app.Test(r, 30_000); resp.StatusCode != http.StatusForbidden {
		t.Errorf("cross-origin JSON post: %d, want 403", resp.StatusCode)
	}

	// Back from Checkout: the page syncs from the session at once.
	a := e.account(c.user.ID)
	sub := Subscription{ID: "sub_page", CustomerID: a.CustomerID, Status: "trialing", PriceID: "price_regular",
		Created: e.clock.Now(), CurrentPeriodEnd: e.clock.Now().Add(14 * day), TrialEnd: e.clock.Now().Add(14 * day)}
	e.stripe.setSub(sub)
	e.stripe.cs["cs_test_page"] = CheckoutSession{ID: "cs_test_page", CustomerID: a.CustomerID, SubscriptionID: "sub_page", Status: "complete"}
	resp = e.do(http.MethodGet, "/billing?checkout=done&session_id=cs_test_page", c.user.Email, "", "")
	html, _ = io.ReadAll(resp.Body)
	for _, want := range []string{"Your subscription is active", `data-entitlement="active"`, `id="portal"`, `id="invoices"`, "Trial ends"} {
		if !strings.Contains(string(html), want) {
			t.Errorf("billing page after checkout lacks %q", want)
		}
	}
	if strings.Contains(string(html), `id="subscribe"`) {
		t.Error("billing page offers to subscribe again")
	}
	// Someone else's session id syncs nothing.
	other := e.newCustomer("other@example.com", false)
	e.do(http.MethodPost, "/billing/api/checkout", other.user.Email, "application/json", "{}")
	e.do(http.MethodGet, "/billing?checkout=done&session_id=cs_test_page", other.user.Email, "", "")
	if oa := e.account(other.user.ID); oa.SubscriptionID != "" {
		t.Errorf("another user's checkout session was applied to %+v", oa)
	}

	inv := decode[struct{ Invoices []Invoice }](t, e.do(http.MethodGet, "/billing/api/invoices", c.user.Email, "", ""))
	if len(inv.Invoices) == 0 || inv.Invoices[0].ID == "" {
		t.Errorf("invoices %+v", inv)
	}
	resp = form("/billing/portal", testCSRF)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") == "" {
		t.Errorf("portal form: %d to %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	if p := e.rec.find(http.MethodPost, "/v1/billing_portal/sessions"); len(p) != 1 || p[0].Form.Get("customer") != a.CustomerID {
		t.Errorf("portal sessions %+v, want one for the user's customer", p)
	}
}

func wantAudit(t *testing.T, e *env, c customer, actions ...string) {
	t.Helper()
	audit, err := e.db.BillingAuditOf(t.Context(), c.user.ID)
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, a := range audit {
		have[a.Action] = true
	}
	for _, a := range actions {
		if !have[a] {
			t.Errorf("audit log lacks %q: %+v", a, audit)
		}
	}
}

func signature(payload []byte, at time.Time) string {
	return webhook.GenerateTestSignedPayload(&webhook.UnsignedPayload{Payload: payload, Secret: webhookSecret, Timestamp: at}).Header
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
