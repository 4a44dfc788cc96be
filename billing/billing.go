// Package billing owns what a customer pays and what that entitles their
// slice to: the plans (from configuration), the Stripe customer of each
// user, Checkout and the Customer Portal, the webhook that learns what
// happened at Stripe, the entitlement policy (see decide) that turns a
// subscription's status into running, grace, suspended or retired, the
// periodic check that applies it as time passes, the data export offered
// before a slice is retired, and the billing pages under /billing.
//
// Three rules keep it from losing money or customers:
//   - Stripe is re-read, never believed from an event: an event only says
//     which customer and subscription to look at again, so events that
//     arrive late, twice or out of order all converge on Stripe's current
//     truth.
//   - Each event id is applied once: it is recorded in the transaction
//     that applies it, with the billing rows, the slice's transition and
//     the audit lines, so a crash or an error anywhere leaves nothing
//     half-done and Stripe's retry starts again from scratch.
//   - Billing only moves slices through the state machine
//     (postgres.BillingTx.Transition); the scheduler makes Nomad follow.
//
// Unlike the other technology packages, billing uses package postgres
// directly rather than through an interface: its writes must share one
// transaction with the slice's transition. It never holds that
// transaction, though: postgres runs it (DB.InBillingTx) and hands billing
// a BillingTx whose methods are the only writes billing can make in it,
// and the policy that runs inside (enforceTx, syncTx) sees only the narrow
// billingTx it declares. That was chosen over moving the transactional
// steps into postgres: which transition follows which entitlement, and
// what the audit says, is billing's policy and stays readable here in one
// place, while begin, commit and rollback stay postgres's. Stripe, which
// tests must be able to script, is behind the narrow Stripe interface.
package billing

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/slicehub/slicehub"
	"github.com/slicehub/slicehub/postgres"
)

// Plan is a price a customer can subscribe at.
type Plan struct {
	PriceID  string // Stripe price id (price_...)
	Amount   int64  // per month, in minor units (900 = $9.00)
	Currency string // ISO 4217, lower case ("usd")
}

// Config is billing's configuration. Zero fields take the defaults listed.
type Config struct {
	// Regular is the plan everyone gets ($9/month).
	Regular Plan
	// Launch is the launch plan ($4.50/month). It applies to users who
	// signed up before LaunchUntil when Launch.PriceID is set, or, for
	// anyone, while LaunchCoupon is valid at Stripe (the coupon then
	// discounts Regular.PriceID down to Launch.Amount).
	Launch       Plan
	LaunchUntil  time.Time
	LaunchCoupon string
	// TrialDays of a new subscription (0: none).
	TrialDays int
	// Grace is how long a past-due subscription keeps its slice running (3 days).
	Grace time.Duration
	// Retention is how long a canceled account's suspended slice is kept
	// before it is exported and retired (30 days).
	Retention time.Duration
	// ExportDir receives the users' data exports (pg_dump of the slice
	// database), one directory per user. Required.
	ExportDir string
	// PgDump is the pg_dump program; empty finds the newest installed.
	PgDump string
	// WebhookSecret is the endpoint's signing secret (whsec_...). Required.
	WebhookSecret string
	// WebhookTolerance is how old a signature may be (5 min, as Stripe's
	// libraries). It is measured on the wall clock, not on Now: it is about
	// when Stripe signed, not about billing's deadlines.
	WebhookTolerance time.Duration
	// PublicURL is the site as users reach it, for Stripe's return links;
	// empty: the request's own base URL.
	PublicURL string
	// StripeTimeout bounds one Stripe call made while a webhook holds its
	// transaction (10 s).
	StripeTimeout time.Duration
	// CouponCacheTTL is how long the coupon's validity is trusted (10 min).
	CouponCacheTTL time.Duration
	// Claimer, when set, gets a returning customer a new slice as soon as
	// they pay again after their old one was retired (*scheduler.Scheduler).
	Claimer Claimer
	Logger  *slog.Logger
	// Now is billing's clock: grace, period ends and retention are measured on it.
	Now func() time.Time
}

func (c *Config) defaults() {
	if c.Grace <= 0 {
		c.Grace = 72 * time.Hour
	}
	if c.Retention <= 0 {
		c.Retention = 30 * 24 * time.Hour
	}
	if c.WebhookTolerance <= 0 {
		c.WebhookTolerance = 5 * time.Minute
	}
	if c.StripeTimeout <= 0 {
		c.StripeTimeout = 10 * time.Second
	}
	if c.CouponCacheTTL <= 0 {
		c.CouponCacheTTL = 10 * time.Minute
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	c.Regular.Currency = strings.ToLower(c.Regular.Currency)
	c.Launch.Currency = strings.ToLower(c.Launch.Currency)
	if c.Launch.Currency == "" {
		c.Launch.Currency = c.Regular.Currency
	}
}

// Validate reports configuration billing cannot work with.
func (c Config) Validate() error {
	var errs []error
	if c.Regular.PriceID == "" || c.Regular.Amount <= 0 || len(c.Regular.Currency) != 3 {
		errs = append(errs, errors.New("billing: the regular plan needs a price id, an amount and a 3-letter currency"))
	}
	if (c.Launch.PriceID != "" || c.LaunchCoupon != "") && c.Launch.Amount <= 0 {
		errs = append(errs, errors.New("billing: a launch price or coupon needs the launch amount"))
	}
	if c.Launch.PriceID != "" && c.LaunchUntil.IsZero() {
		errs = append(errs, errors.New("billing: a launch price needs the date sign-ups qualify until"))
	}
	if c.WebhookSecret == "" {
		errs = append(errs, errors.New("billing: the webhook signing secret is required"))
	}
	if c.ExportDir == "" {
		errs = append(errs, errors.New("billing: an export directory is required"))
	}
	if c.Grace < 0 || c.Retention < 0 || c.TrialDays < 0 {
		errs = append(errs, errors.New("billing: grace, retention and trial days must not be negative"))
	}
	return errors.Join(errs...)
}

// Claimer binds a user to a slice (scheduler.Scheduler.Claim).
type Claimer interface {
	Claim(ctx context.Context, userID int64) (slicehub.Slice, error)
}

// Actor is how billing signs slice events and audit lines.
const Actor = "billing"

// Service is billing. Create it with New.
type Service struct {
	cfg    Config
	db     *postgres.DB
	stripe Stripe
	log    *slog.Logger
	now    func() time.Time

	couponMu    sync.Mutex
	couponOK    bool
	couponUntil time.Time

	// failpoint, when set (tests), runs at named points inside
	// transactions; an error it returns aborts the transaction there.
	failpoint func(point string) error
}

// New returns the billing service.
func New(cfg Config, db *postgres.DB, st Stripe) (*Service, error) {
	cfg.defaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if db == nil || st == nil {
		return nil, errors.New("billing: a database and a Stripe client are required")
	}
	return &Service{cfg: cfg, db: db, stripe: st, log: cfg.Logger.With("component", "billing"), now: cfg.Now}, nil
}

func (s *Service) fail(point string) error {
	if s.failpoint == nil {
		return nil
	}
	return s.failpoint(point)
}

// customer returns user's account with a Stripe customer, creating the
// customer the first time. The idempotency key is the user id plus the
// account row's nonce, so retries and racing requests converge on one
// customer at Stripe, and the first id stored wins here.
func (s *Service) customer(ctx context.Context, user slicehub.User) (postgres.BillingAccount, error) {
	const op = "billing.customer"
	a, err := s.db.EnsureBillingAccount(ctx, user.ID)
	if err != nil {
		return a, slicehub.Wrap(op, slicehub.KindInternal, err)
	}
	if a.CustomerID != "" {
		return a, nil
	}
	key := fmt.Sprintf("slicehub-customer-%d-%s", user.ID, a.CustomerNonce)
	id, err := s.stripe.CreateCustomer(ctx, user.Email, user.ID, key)
	if err != nil {
		return a, slicehub.Wrap(op, slicehub.KindInternal, err)
	}
	a, err = s.db.SetBillingCustomer(ctx, user.ID, id)
	if err != nil {
		return a, slicehub.Wrap(op, slicehub.KindInternal, err)
	}
	if a.CustomerID == id {
		s.log.Info("stripe customer created", "user_id", user.ID, "customer", id)
		s.audit(ctx, postgres.BillingAudit{UserID: user.ID, Actor: userActor(user.ID), Action: "customer_created", Detail: id})
	}
	return a, nil
}

// offer is the plan user would subscribe at now.
type offer struct {
	plan   Plan   // what they pay
	price  string // the Stripe price to check out
	coupon string
	launch bool
}

func (s *Service) offerFor(ctx context.Context, user slicehub.User) offer {
	c := s.cfg
	if c.Launch.PriceID != "" && !user.CreatedAt.IsZero() && user.CreatedAt.Before(c.LaunchUntil) {
		return offer{plan: c.Launch, price: c.Launch.PriceID, launch: true}
	}
	if c.LaunchCoupon != "" && s.couponValid(ctx) {
		p := c.Launch
		p.PriceID = c.Regular.PriceID
		return offer{plan: p, price: c.Regular.PriceID, coupon: c.LaunchCoupon, launch: true}
	}
	return offer{plan: c.Regular, price: c.Regular.PriceID}
}

// couponValid asks Stripe whether the launch coupon can still be redeemed,
// at most once per CouponCacheTTL. When Stripe cannot be asked, the last
// answer stands (false at first): the regular price is the safe offer.
func (s *Service) couponValid(ctx context.Context) bool {
	s.couponMu.Lock()
	defer s.couponMu.Unlock()
	now := time.Now()
	if now.Before(s.couponUntil) {
		return s.couponOK
	}
	ok, err := s.stripe.CouponValid(ctx, s.cfg.LaunchCoupon)
	if err != nil {
		s.log.Warn("could not check the launch coupon", "err", err)
		s.couponUntil = now.Add(time.Minute)
		return s.couponOK
	}
	s.couponOK, s.couponUntil = ok, now.Add(s.cfg.CouponCacheTTL)
	return ok
}

// Checkout starts a Checkout Session for user and returns its URL.
// baseURL is where Stripe sends the browser back (PublicURL wins).
func (s *Service) Checkout(ctx context.Context, user slicehub.User, baseURL string) (string, error) {
	const op = "billing.checkout"
	a, err := s.customer(ctx, user)
	if err != nil {
		return "", slicehub.Wrap(op, slicehub.KindInternal, err)
	}
	if a.Complimentary {
		return "", slicehub.Errorf(op, slicehub.KindConflict, "complimentary", "this account is complimentary: there is nothing to pay")
	}
	if live(a.Status) {
		return "", slicehub.Errorf(op, slicehub.KindConflict, "already_subscribed", "you already have a subscription; manage it in the billing portal")
	}
	o := s.offerFor(ctx, user)
	base := s.base(baseURL)
	co, err := s.stripe.CreateCheckout(ctx, CheckoutRequest{
		CustomerID: a.CustomerID, UserID: user.ID, PriceID: o.price, Coupon: o.coupon, TrialDays: s.cfg.TrialDays,
		// {CHECKOUT_SESSION_ID} is filled in by Stripe: the page syncs
		// from it at once instead of waiting for the webhook.
		SuccessURL: base + "/billing?checkout=done&session_id={CHECKOUT_SESSION_ID}",
		CancelURL:  base + "/billing?checkout=canceled",
	})
	if err != nil {
		return "", slicehub.Wrap(op, slicehub.KindInternal, err)
	}
	if o.launch != a.LaunchPrice {
		if err := s.inAccount(ctx, user.ID, func(tx billingTx, a *postgres.BillingAccount) error {
			a.LaunchPrice = o.launch
			return nil
		}); err != nil {
			return "", slicehub.Wrap(op, slicehub.KindInternal, err)
		}
	}
	s.audit(ctx, postgres.BillingAudit{UserID: user.ID, Actor: userActor(user.ID), Action: "checkout_started",
		Detail: fmt.Sprintf("session %s, price %s, coupon %q, launch %t", co.ID, o.price, o.coupon, o.launch)})
	return co.URL, nil
}

// Portal opens a Customer Portal session for user and returns its URL.
func (s *Service) Portal(ctx context.Context, user slicehub.User, baseURL string) (string, error) {
	const op = "billing.portal"
	a, err := s.customer(ctx, user)
	if err != nil {
		return "", slicehub.Wrap(op, slicehub.KindInternal, err)
	}
	url, err := s.stripe.CreatePortal(ctx, a.CustomerID, s.base(baseURL)+"/billing")
	if err != nil {
		return "", slicehub.Wrap(op, slicehub.KindInternal, err)
	}
	s.audit(ctx, postgres.BillingAudit{UserID: user.ID, Actor: userActor(user.ID), Action: "portal_opened"})
	return url, nil
}

func (s *Service) base(requestBase string) string {
	if s.cfg.PublicURL != "" {
		return strings.TrimSuffix(s.cfg.PublicURL, "/")
	}
	return strings.TrimSuffix(requestBase, "/")
}

// Status is what the billing page and /billing/api/status show.
type Status struct {
	// Entitlement: none (not subscribed), active, grace, ending,
	// suspended, retired or complimentary.
	Entitlement   string    `json:"entitlement"`
	Banner        string    `json:"banner,omitempty"`
	Subscription  string    `json:"subscription_status,omitempty"`
	Plan          PlanView  `json:"plan"`
	NextCharge    *Charge   `json:"next_charge,omitempty"`
	GraceEndsAt   time.Time `json:"grace_ends_at,omitzero"`
	SuspendAt     time.Time `json:"suspend_at,omitzero"`
	RetireAt      time.Time `json:"retire_at,omitzero"`
	TrialEnd      time.Time `json:"trial_end,omitzero"`
	Complimentary bool      `json:"complimentary"`
	SliceState    string    `json:"slice_state,omitempty"`
	CanCheckout   bool      `json:"can_checkout"`
	CanPortal     bool      `json:"can_portal"`
}

// PlanView is a plan as shown.
type PlanView struct {
	Name     string `json:"name"`
	Amount   int64  `json:"amount"`
	Currency string `json:"currency"`
	Display  string `json:"display"`
	Launch   bool   `json:"launch"`
}

// Charge is the next payment.
type Charge struct {
	Amount   int64     `json:"amount"`
	Currency string    `json:"currency"`
	At       time.Time `json:"at"`
	Display  string    `json:"display"`
}

// Status returns user's billing status.
func (s *Service) Status(ctx context.Context, user slicehub.User) (Status, error) {
	const op = "billing.status"
	a, err := s.db.BillingAccount(ctx, user.ID)
	if err != nil && slicehub.KindOf(err) != slicehub.KindNotFound {
		return Status{}, slicehub.Wrap(op, slicehub.KindInternal, err)
	}
	var st Status
	sl, err := s.db.SliceForUser(ctx, user.ID)
	switch {
	case err == nil:
		st.SliceState = string(sl.State)
	case slicehub.KindOf(err) != slicehub.KindNotFound:
		return Status{}, slicehub.Wrap(op, slicehub.KindInternal, err)
	}
	now := s.now()
	d := decide(a, now, s.cfg.Grace, s.cfg.Retention)
	st.Banner, st.GraceEndsAt, st.SuspendAt, st.RetireAt = d.banner, d.graceEnds, d.suspendAt, d.retireAt
	st.Subscription, st.Complimentary, st.TrialEnd = a.Status, a.Complimentary, a.TrialEnd
	if a.Status != "trialing" {
		st.TrialEnd = time.Time{}
	}

	// The plan: the one subscribed to, or the one on offer.
	var o offer
	switch {
	case live(a.Status) && a.PriceID == s.cfg.Launch.PriceID && a.PriceID != "":
		o = offer{plan: s.cfg.Launch, launch: true}
	case live(a.Status) && a.LaunchPrice:
		o = offer{plan: s.cfg.Launch, launch: true}
	case live(a.Status):
		o = offer{plan: s.cfg.Regular}
	default:
		o = s.offerFor(ctx, user)
	}
	st.Plan = PlanView{Name: "Slicehub workspace", Amount: o.plan.Amount, Currency: o.plan.Currency,
		Display: money(o.plan.Amount, o.plan.Currency) + " / month", Launch: o.launch}
	if o.launch {
		st.Plan.Name = "Slicehub workspace (launch price)"
	}

	switch {
	case a.Complimentary:
		st.Entitlement = "complimentary"
	case st.SliceState == string(slicehub.StateRetired) && !a.SuspendedAt.IsZero():
		st.Entitlement = "retired"
	case d.want == wantSuspend || d.want == wantRetire:
		st.Entitlement = "suspended"
	case d.banner == BannerPastDue:
		st.Entitlement = "grace"
	case d.banner == BannerEnding:
		st.Entitlement = "ending"
	case d.want == wantRun:
		st.Entitlement = "active"
	default:
		st.Entitlement = "none"
	}
	if (a.Status == "active" || a.Status == "trialing" || a.Status == "past_due") && !a.CancelAtPeriodEnd && !a.CurrentPeriodEnd.IsZero() {
		st.NextCharge = &Charge{Amount: o.plan.Amount, Currency: o.plan.Currency, At: a.CurrentPeriodEnd,
			Display: money(o.plan.Amount, o.plan.Currency)}
	}
	st.CanCheckout = !a.Complimentary && !live(a.Status)
	st.CanPortal = a.CustomerID != ""
	return st, nil
}

// Invoices lists user's newest invoices from Stripe (none before the
// customer exists).
func (s *Service) Invoices(ctx context.Context, user slicehub.User) ([]Invoice, error) {
	const op = "billing.invoices"
	a, err := s.db.BillingAccount(ctx, user.ID)
	if slicehub.KindOf(err) == slicehub.KindNotFound || (err == nil && a.CustomerID == "") {
		return []Invoice{}, nil
	}
	if err != nil {
		return nil, slicehub.Wrap(op, slicehub.KindInternal, err)
	}
	inv, err := s.stripe.Invoices(ctx, a.CustomerID, 12)
	if err != nil {
		return nil, slicehub.Wrap(op, slicehub.KindInternal, err)
	}
	if inv == nil {
		inv = []Invoice{}
	}
	return inv, nil
}

// SetComplimentary marks user userID's account complimentary (or not),
// and applies what that entitles at once: a slice billing suspended
// resumes; unmarking lets the subscription decide again.
func (s *Service) SetComplimentary(ctx context.Context, userID int64, on bool, reason, actor string) (Status, error) {
	const op = "billing.set_complimentary"
	if _, err := s.db.EnsureBillingAccount(ctx, userID); err != nil {
		return Status{}, slicehub.Wrap(op, slicehub.KindInternal, err)
	}
	var did effect
	err := s.inAccount(ctx, userID, func(tx billingTx, a *postgres.BillingAccount) error {
		before := a.Complimentary
		a.Complimentary, a.ComplimentaryReason = on, reason
		if err := tx.AuditBilling(ctx, postgres.BillingAudit{UserID: userID, Actor: actor, Action: "complimentary_set",
			Detail: fmt.Sprintf("%t -> %t: %s", before, on, reason)}); err != nil {
			return err
		}
		var err error
		did, err = s.enforceTx(ctx, tx, a, "", actor)
		return err
	})
	if err != nil {
		return Status{}, slicehub.Wrap(op, slicehub.KindInternal, err)
	}
	s.afterCommit(ctx, userID, did)
	s.log.Info("complimentary changed", "user_id", userID, "complimentary", on, "actor", actor)
	u := slicehub.User{ID: userID}
	return s.Status(ctx, u)
}

// billingTx is what the policy does to the slice and the audit log inside
// a billing transaction (postgres.BillingTx): the account's own row is
// read and written around it (inAccount, the webhook).
type billingTx interface {
	AuditBilling(ctx context.Context, a postgres.BillingAudit) error
	UserSlice(ctx context.Context, userID int64) (slicehub.Slice, bool, error)
	Transition(ctx context.Context, id int64, c slicehub.Change) (slicehub.Slice, error)
	ReleaseRetiredSlice(ctx context.Context, id int64, actor, reason string) error
	RetireSuspendedSlice(ctx context.Context, id int64, actor, reason, dumpPath string) (slicehub.Slice, error)
}

// inAccount runs fn on userID's account, locked, in one transaction, and
// saves the account afterwards.
func (s *Service) inAccount(ctx context.Context, userID int64, fn func(tx billingTx, a *postgres.BillingAccount) error) error {
	return s.db.InBillingTx(ctx, func(tx postgres.BillingTx) error {
		a, err := tx.LockBillingAccount(ctx, userID)
		if err != nil {
			return err
		}
		if err := fn(tx, &a); err != nil {
			return err
		}
		return tx.SaveBillingAccount(ctx, a)
	})
}

// audit writes an audit line on its own; a failure is logged, since the
// action it records has happened.
func (s *Service) audit(ctx context.Context, a postgres.BillingAudit) {
	if err := s.db.AuditBilling(ctx, a); err != nil {
		s.log.Error("audit line lost", "action", a.Action, "user_id", a.UserID, "err", err)
	}
}

func userActor(id int64) string { return fmt.Sprintf("user:%d", id) }

// money formats minor units: 450 usd -> "$4.50".
func money(amount int64, currency string) string {
	sym := map[string]string{"usd": "$", "eur": "€", "gbp": "£"}[currency]
	neg := ""
	if amount < 0 {
		neg, amount = "-", -amount
	}
	s := fmt.Sprintf("%d.%02d", amount/100, amount%100)
	if sym == "" {
		return neg + s + " " + strings.ToUpper(currency)
	}
	return neg + sym + s
}

func auditLine(userID int64, action, detail string) postgres.BillingAudit {
	return postgres.BillingAudit{UserID: userID, Actor: userActor(userID), Action: action, Detail: detail}
}
