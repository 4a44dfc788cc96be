package billing

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/stripe/stripe-go/v82"
	"github.com/stripe/stripe-go/v82/webhook"

	"github.com/slicehub/slicehub"
	"github.com/slicehub/slicehub/postgres"
	"github.com/slicehub/slicehub/testsupport"
)

// The billing tests run against real PostgreSQL (testsupport) and
// stripe-mock, Stripe's own stateless API double, for every API call.
// Because stripe-mock remembers nothing, a story (a subscription falling
// past due, then paid) is told by scriptedStripe: each call still goes to
// stripe-mock through the real client, and the test then says what
// Stripe's truth is for the subscriptions it scripts. Webhook deliveries
// are signed locally with the test secret, as Stripe signs them.

func TestMain(m *testing.M) { testsupport.Main(m, testsupport.Options{}) }

// stripeMockVersion is what ops/stripe-mock.sh installs too.
const stripeMockVersion = "v0.203.0"

const webhookSecret = "whsec_test_slicehub"

// startStripeMock starts stripe-mock on free loopback ports for the test
// and stops it when the test ends.
func startStripeMock(t *testing.T) string {
	t.Helper()
	url, stop, err := StartStripeMock(t.Context(), findStripeMock(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	return url
}

// findStripeMock returns the stripe-mock binary, installing it with `go
// install` when neither PATH nor GOPATH/bin has one (ops/stripe-mock.sh
// does the same for `make tools`).
func findStripeMock(t *testing.T) string {
	if p, err := FindStripeMock(); err == nil {
		return p
	}
	p := StripeMockInstallPath()
	if p == "" {
		t.Fatal("go env cannot say where go install puts binaries")
	}
	t.Logf("installing stripe-mock %s", stripeMockVersion)
	cmd := exec.Command("go", "install", "github.com/stripe/stripe-mock@"+stripeMockVersion)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go install stripe-mock: %v\n%s\n(or run: bash ops/stripe-mock.sh)", err, out)
	}
	return p
}

// recorder keeps the requests the Stripe client sent, to check what was
// asked (idempotency keys, prices, coupons).
type recorder struct {
	mu   sync.Mutex
	reqs []recorded
}

type recorded struct {
	Method, Path, IdempotencyKey string
	Form                         url.Values
}

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	rec := recorded{Method: req.Method, Path: req.URL.Path, IdempotencyKey: req.Header.Get("Idempotency-Key")}
	if req.Body != nil {
		b, err := io.ReadAll(req.Body)
		if err != nil {
			return nil, err
		}
		req.Body = io.NopCloser(strings.NewReader(string(b)))
		rec.Form, _ = url.ParseQuery(string(b))
	}
	r.mu.Lock()
	r.reqs = append(r.reqs, rec)
	r.mu.Unlock()
	return http.DefaultTransport.RoundTrip(req)
}

func (r *recorder) find(method, path string) []recorded {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []recorded
	for _, q := range r.reqs {
		if q.Method == method && q.Path == path {
			out = append(out, q)
		}
	}
	return out
}

// scriptedStripe is the real client to stripe-mock, with Stripe's truth
// about the scripted subscriptions laid over what stripe-mock answers.
type scriptedStripe struct {
	Stripe
	mu   sync.Mutex
	subs map[string]Subscription
	cs   map[string]CheckoutSession
	// down makes every call fail as if Stripe were unreachable.
	down bool
}

func (f *scriptedStripe) setSub(s Subscription) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.subs[s.ID] = s
}

func (f *scriptedStripe) Subscription(ctx context.Context, id string) (Subscription, error) {
	f.mu.Lock()
	down := f.down
	f.mu.Unlock()
	if down {
		return Subscription{}, &slicehub.Error{Op: "test", Kind: slicehub.KindUnavailable, Code: "stripe_unavailable", Err: errors.New("stripe is down")}
	}
	real, err := f.Stripe.Subscription(ctx, id)
	if err != nil {
		return real, err
	}
	if real.ID != id || real.Status == "" {
		return real, fmt.Errorf("stripe-mock answered %+v for %s", real, id)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if s, ok := f.subs[id]; ok {
		return s, nil
	}
	return Subscription{}, &slicehub.Error{Op: "test", Kind: slicehub.KindNotFound, Code: "stripe_not_found"}
}

func (f *scriptedStripe) CheckoutSession(ctx context.Context, id string) (CheckoutSession, error) {
	real, err := f.Stripe.CheckoutSession(ctx, id)
	if err != nil {
		return real, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if s, ok := f.cs[id]; ok {
		return s, nil
	}
	return real, nil
}

// clock is the injected clock: grace and retention pass without sleeping.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// fakeWeb stands in for the gateway: the cookie "test_user" names the
// signed-in user, and the CSRF token is a fixed value.
type fakeWeb struct {
	mu    sync.Mutex
	users map[string]slicehub.User
}

const testCSRF = "csrf-token-for-tests"

func (w *fakeWeb) User(c *fiber.Ctx) (slicehub.User, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if u, ok := w.users[c.Cookies("test_user")]; ok {
		return u, nil
	}
	return slicehub.User{}, slicehub.Errorf("test.session", slicehub.KindUnauthorized, "no_session", "sign in first")
}

func (w *fakeWeb) CSRFToken(*fiber.Ctx) string { return testCSRF }

func (w *fakeWeb) VerifyCSRF(c *fiber.Ctx) error {
	if c.FormValue("csrf_token") != testCSRF {
		return slicehub.Errorf("test.csrf", slicehub.KindForbidden, "csrf", "the form has expired; reload the page")
	}
	return nil
}

// writeTestError mirrors the gateway's error writer: kind -> status,
// body {"error","code"}.
func writeTestError(c *fiber.Ctx, err error) error {
	status := map[slicehub.Kind]int{
		slicehub.KindInvalid: 400, slicehub.KindUnauthorized: 401, slicehub.KindPaymentRequired: 402,
		slicehub.KindForbidden: 403, slicehub.KindNotFound: 404, slicehub.KindConflict: 409,
		slicehub.KindTooLarge: 413, slicehub.KindRateLimited: 429, slicehub.KindUnavailable: 503,
	}[slicehub.KindOf(err)]
	var fe *fiber.Error
	if errors.As(err, &fe) {
		status = fe.Code
	}
	if status == 0 {
		status = 500
	}
	return c.Status(status).JSON(fiber.Map{"error": slicehub.MessageOf(err), "code": slicehub.CodeOf(err)})
}

// env is one test's world: its own gateway database, Stripe (mock plus
// script), clock, billing service and HTTP app.
type env struct {
	t      *testing.T
	db     *postgres.DB
	stripe *scriptedStripe
	rec    *recorder
	clock  *clock
	svc    *Service
	app    *fiber.App
	web    *fakeWeb
	cfg    Config
	claims *claims
}

// claims records Claim calls in place of the scheduler.
type claims struct {
	mu    sync.Mutex
	users []int64
}

func (c *claims) Claim(_ context.Context, userID int64) (slicehub.Slice, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.users = append(c.users, userID)
	return slicehub.Slice{ID: 1, UserID: userID, State: slicehub.StateProvisioning}, nil
}

func newEnv(t *testing.T, stripeURL string, tweak ...func(*Config)) *env {
	t.Helper()
	ctx := t.Context()
	db, err := postgres.Open(ctx, testsupport.NewDatabase(t), testsupport.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	if err := db.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	// Slice databases (wa_slice_<id>) live on the shared server: start
	// ids somewhere no other test of the run does.
	if _, err := db.Pool.Exec(ctx, fmt.Sprintf(`ALTER SEQUENCE slices_id_seq RESTART WITH %d`, 1_000_000+rand.IntN(1_000_000_000))); err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	log := testsupport.Logger(t)
	client := NewStripeClient(StripeConfig{SecretKey: "sk_test_123", URL: stripeURL, Logger: log}, &http.Client{Transport: rec, Timeout: 10 * time.Second})
	st := &scriptedStripe{Stripe: client, subs: map[string]Subscription{}, cs: map[string]CheckoutSession{}}
	clk := &clock{t: time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)}
	cl := &claims{}
	cfg := Config{
		Regular:       Plan{PriceID: "price_regular", Amount: 900, Currency: "usd"},
		Launch:        Plan{PriceID: "price_launch", Amount: 450, Currency: "usd"},
		LaunchUntil:   time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC), // past: users of these tests pay the regular price
		WebhookSecret: webhookSecret,
		ExportDir:     t.TempDir(),
		Logger:        log,
		Now:           clk.Now,
		Claimer:       cl,
	}
	for _, f := range tweak {
		f(&cfg)
	}
	svc, err := New(cfg, db, st)
	if err != nil {
		t.Fatal(err)
	}
	web := &fakeWeb{users: map[string]slicehub.User{}}
	app := fiber.New(fiber.Config{ErrorHandler: writeTestError})
	admin := app.Group("/admin", func(c *fiber.Ctx) error {
		c.Locals("test.admin_id", int64(1))
		return c.Next()
	})
	Register(app, svc, web)
	RegisterAdmin(admin, svc, "test.admin_id")
	return &env{t: t, db: db, stripe: st, rec: rec, clock: clk, svc: svc, app: app, web: web, cfg: svc.cfg, claims: cl}
}

// customerOf is a user with an assigned slice (its database created when
// withDB), signed in as cookie value email.
type customer struct {
	user  slicehub.User
	slice slicehub.Slice
}

func (e *env) newCustomer(email string, withDB bool) customer {
	e.t.Helper()
	ctx := e.t.Context()
	u, err := e.db.CreateUser(ctx, email, "$argon2id$not-a-real-hash")
	if err != nil {
		e.t.Fatal(err)
	}
	sl, err := e.db.CreateSlice(ctx, u.ID, "test", "test slice")
	if err != nil {
		e.t.Fatal(err)
	}
	job := "slice/dispatch-test-" + sl.IDString()
	sl, err = e.db.Transition(ctx, sl.ID, slicehub.Change{From: []slicehub.SliceState{slicehub.StateProvisioning},
		To: slicehub.StateAssigned, SetJob: &job, Actor: "scheduler", Reason: "healthy (test)"})
	if err != nil {
		e.t.Fatal(err)
	}
	if withDB {
		if err := e.db.ProvisionDatabase(ctx, sl.ID); err != nil {
			e.t.Fatal(err)
		}
		e.t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			_ = e.db.DropDatabase(ctx, sl.ID)
		})
	}
	e.web.mu.Lock()
	e.web.users[email] = u
	e.web.mu.Unlock()
	return customer{user: u, slice: sl}
}

// do sends a request to the app as the cookie user ("" for none).
func (e *env) do(method, path, user, contentType, body string) *http.Response {
	e.t.Helper()
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if user != "" {
		req.AddCookie(&http.Cookie{Name: "test_user", Value: user})
	}
	resp, err := e.app.Test(req, 30_000)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	return resp
}

func decode[T any](t *testing.T, resp *http.Response) T {
	t.Helper()
	var v T
	b, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("decoding %s: %v", b, err)
	}
	return v
}

type errorBody struct {
	Error string `json:"error"`
	Code  string `json:"code"`
}

// event builds a Stripe event about object, as Stripe sends it.
func (e *env) event(id, typ string, object map[string]any) []byte {
	b, err := json.Marshal(map[string]any{
		"id": id, "object": "event", "api_version": stripe.APIVersion, "created": e.clock.Now().Unix(),
		"type": typ, "livemode": false, "pending_webhooks": 1, "data": map[string]any{"object": object},
	})
	if err != nil {
		e.t.Fatal(err)
	}
	return b
}

// deliver posts payload to the webhook signed with secret at signedAt.
func (e *env) deliverSigned(payload []byte, secret string, signedAt time.Time) *http.Response {
	e.t.Helper()
	sp := webhook.GenerateTestSignedPayload(&webhook.UnsignedPayload{Payload: payload, Secret: secret, Timestamp: signedAt})
	req := httptest.NewRequest(http.MethodPost, "/billing/webhook", strings.NewReader(string(payload)))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Stripe-Signature", sp.Header)
	resp, err := e.app.Test(req, 30_000)
	if err != nil {
		e.t.Fatal(err)
	}
	return resp
}

// deliver posts payload signed as Stripe would, now, and wants want.
func (e *env) deliver(payload []byte, wantStatus int, wantOutcome string) WebhookResult {
	e.t.Helper()
	resp := e.deliverSigned(payload, webhookSecret, time.Now())
	if resp.StatusCode != wantStatus {
		b, _ := io.ReadAll(resp.Body)
		e.t.Fatalf("webhook: status %d %s, want %d", resp.StatusCode, b, wantStatus)
	}
	if wantStatus != http.StatusOK {
		return WebhookResult{}
	}
	res := decode[WebhookResult](e.t, resp)
	if res.Outcome != wantOutcome {
		e.t.Fatalf("webhook outcome %q, want %q", res.Outcome, wantOutcome)
	}
	return res
}

func subObject(s Subscription) map[string]any {
	return map[string]any{"id": s.ID, "object": "subscription", "customer": s.CustomerID, "status": s.Status}
}

func invoiceObject(id, customerID, subID string) map[string]any {
	return map[string]any{"id": id, "object": "invoice", "customer": customerID,
		"parent": map[string]any{"type": "subscription_details", "subscription_details": map[string]any{"subscription": subID}}}
}

func (e *env) account(userID int64) postgres.BillingAccount {
	e.t.Helper()
	a, err := e.db.BillingAccount(e.t.Context(), userID)
	if err != nil {
		e.t.Fatal(err)
	}
	return a
}

func (e *env) slice(id int64) slicehub.Slice {
	e.t.Helper()
	s, err := e.db.Slice(e.t.Context(), id)
	if err != nil {
		e.t.Fatal(err)
	}
	return s
}

func (e *env) wantState(id int64, want slicehub.SliceState) slicehub.Slice {
	e.t.Helper()
	s := e.slice(id)
	if s.State != want {
		e.t.Fatalf("slice %d is %s, want %s", id, s.State, want)
	}
	return s
}

func (e *env) enforce() {
	e.t.Helper()
	if err := e.svc.Enforce(e.t.Context()); err != nil {
		e.t.Fatalf("Enforce: %v", err)
	}
}

// snapshot is everything billing may write, to prove that a refused or
// failed delivery wrote nothing.
type snapshot struct {
	Account     postgres.BillingAccount
	Slice       slicehub.Slice
	SliceEvents int
	Audit       int
	Events      int
	Exports     int
}

func (e *env) snapshot(c customer) snapshot {
	e.t.Helper()
	ctx := e.t.Context()
	var s snapshot
	s.Account, _ = e.db.BillingAccount(ctx, c.user.ID)
	s.Slice = e.slice(c.slice.ID)
	evs, err := e.db.SliceEvents(ctx, c.slice.ID)
	if err != nil {
		e.t.Fatal(err)
	}
	s.SliceEvents = len(evs)
	audit, err := e.db.BillingAuditOf(ctx, c.user.ID)
	if err != nil {
		e.t.Fatal(err)
	}
	s.Audit = len(audit)
	all, err := e.db.BillingEvents(ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	s.Events = len(all)
	ex, err := e.db.BillingExports(ctx, c.user.ID)
	if err != nil {
		e.t.Fatal(err)
	}
	s.Exports = len(ex)
	return s
}

func (e *env) wantUnchanged(what string, before snapshot, c customer) {
	e.t.Helper()
	after := e.snapshot(c)
	if fmt.Sprintf("%+v", before) != fmt.Sprintf("%+v", after) {
		e.t.Fatalf("%s changed something:\nbefore %+v\nafter  %+v", what, before, after)
	}
}

// subscribe takes c through Checkout to an active subscription and
// returns it (Stripe's truth is scripted; the calls reach stripe-mock).
func (e *env) subscribe(c customer, subID string, periodEnd time.Time) Subscription {
	e.t.Helper()
	resp := e.do(http.MethodPost, "/billing/api/checkout", c.user.Email, "application/json", "{}")
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		e.t.Fatalf("checkout: %d %s", resp.StatusCode, b)
	}
	a := e.account(c.user.ID)
	sub := Subscription{ID: subID, CustomerID: a.CustomerID, Status: "active", PriceID: "price_regular",
		Created: e.clock.Now(), CurrentPeriodEnd: periodEnd}
	e.stripe.setSub(sub)
	e.deliver(e.event("evt_checkout_"+subID, "checkout.session.completed", map[string]any{
		"id": "cs_test_" + subID, "object": "checkout.session", "mode": "subscription",
		"customer": a.CustomerID, "subscription": subID, "client_reference_id": strconv.FormatInt(c.user.ID, 10),
	}), http.StatusOK, OutcomeApplied)
	return sub
}
