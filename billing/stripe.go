package billing

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/stripe/stripe-go/v82"

	"github.com/slicehub/slicehub"
)

// Stripe is what billing asks of Stripe. StripeClient implements it with
// stripe-go; tests wrap it to play Stripe's side of a story (a
// subscription falling past due) on top of stripe-mock, which is stateless.
type Stripe interface {
	// CreateCustomer creates a customer; the same idempotency key returns
	// the same customer (for 24 hours, on Stripe's side).
	CreateCustomer(ctx context.Context, email string, userID int64, idempotencyKey string) (string, error)
	CreateCheckout(ctx context.Context, req CheckoutRequest) (Checkout, error)
	CreatePortal(ctx context.Context, customerID, returnURL string) (string, error)
	// Subscription re-reads a subscription: the truth, whatever order
	// the events about it arrived in. KindNotFound when Stripe has none.
	Subscription(ctx context.Context, id string) (Subscription, error)
	CheckoutSession(ctx context.Context, id string) (CheckoutSession, error)
	// Invoices returns the customer's newest invoices, at most limit.
	Invoices(ctx context.Context, customerID string, limit int) ([]Invoice, error)
	// CouponValid reports whether the coupon can still be redeemed.
	CouponValid(ctx context.Context, id string) (bool, error)
}

// CheckoutRequest is a Checkout Session for one subscription.
type CheckoutRequest struct {
	CustomerID string
	UserID     int64
	PriceID    string
	Coupon     string // "" for none
	TrialDays  int
	SuccessURL string
	CancelURL  string
}

// Checkout is a created Checkout Session.
type Checkout struct {
	ID  string
	URL string
}

// CheckoutSession is what a completed Checkout Session says.
type CheckoutSession struct {
	ID             string
	CustomerID     string
	SubscriptionID string
	Status         string // open, complete, expired
}

// Subscription is what billing reads of a Stripe subscription.
type Subscription struct {
	ID                string
	CustomerID        string
	Status            string // trialing, active, past_due, unpaid, paused, canceled, incomplete, incomplete_expired
	PriceID           string
	Created           time.Time
	CurrentPeriodEnd  time.Time
	CancelAtPeriodEnd bool
	EndedAt           time.Time
	TrialEnd          time.Time
}

// Invoice is one line of the billing page.
type Invoice struct {
	ID       string    `json:"id"`
	Number   string    `json:"number"`
	Status   string    `json:"status"`
	Amount   int64     `json:"amount"` // minor units: paid when paid, due otherwise
	Currency string    `json:"currency"`
	Created  time.Time `json:"created"`
	URL      string    `json:"url,omitempty"` // Stripe's hosted invoice page
}

// StripeConfig configures StripeClient.
type StripeConfig struct {
	SecretKey string
	// URL is Stripe's API base; empty for Stripe itself. stripe-mock in
	// tests and in development.
	URL string
	// Timeout bounds one HTTP request (default 10 s).
	Timeout time.Duration
	Logger  *slog.Logger
}

// StripeClient is the stripe-go implementation of Stripe.
type StripeClient struct {
	c *stripe.Client
}

// NewStripeClient returns a client for the account of cfg.SecretKey. The
// key goes only into request headers; it is never logged.
func NewStripeClient(cfg StripeConfig, httpClient *http.Client) *StripeClient {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if httpClient == nil {
		httpClient = &http.Client{Timeout: cfg.Timeout}
	}
	bc := &stripe.BackendConfig{
		HTTPClient:    httpClient,
		LeveledLogger: slogStripe{cfg.Logger.With("component", "billing.stripe")},
		// stripe-go retries on network errors and 409/429/5xx, with an
		// idempotency key it adds to every POST, so a retry never charges
		// or creates twice.
		MaxNetworkRetries: stripe.Int64(2),
	}
	if cfg.URL != "" {
		bc.URL = stripe.String(cfg.URL)
	}
	return &StripeClient{c: stripe.NewClient(cfg.SecretKey, stripe.WithBackends(stripe.NewBackendsWithConfig(bc)))}
}

func (s *StripeClient) CreateCustomer(ctx context.Context, email string, userID int64, key string) (string, error) {
	const op = "billing.stripe.create_customer"
	p := &stripe.CustomerCreateParams{Email: stripe.String(email)}
	p.AddMetadata("slicehub_user_id", strconv.FormatInt(userID, 10))
	p.SetIdempotencyKey(key)
	c, err := s.c.V1Customers.Create(ctx, p)
	if err != nil {
		return "", stripeError(op, err)
	}
	return c.ID, nil
}

func (s *StripeClient) CreateCheckout(ctx context.Context, r CheckoutRequest) (Checkout, error) {
	const op = "billing.stripe.create_checkout"
	p := &stripe.CheckoutSessionCreateParams{
		Mode:              stripe.String(string(stripe.CheckoutSessionModeSubscription)),
		Customer:          stripe.String(r.CustomerID),
		ClientReferenceID: stripe.String(strconv.FormatInt(r.UserID, 10)),
		LineItems:         []*stripe.CheckoutSessionCreateLineItemParams{{Price: stripe.String(r.PriceID), Quantity: stripe.Int64(1)}},
		SuccessURL:        stripe.String(r.SuccessURL),
		CancelURL:         stripe.String(r.CancelURL),
		SubscriptionData: &stripe.CheckoutSessionCreateSubscriptionDataParams{
			Metadata: map[string]string{"slicehub_user_id": strconv.FormatInt(r.UserID, 10)},
		},
	}
	if r.TrialDays > 0 {
		p.SubscriptionData.TrialPeriodDays = stripe.Int64(int64(r.TrialDays))
	}
	if r.Coupon != "" {
		p.Discounts = []*stripe.CheckoutSessionCreateDiscountParams{{Coupon: stripe.String(r.Coupon)}}
	}
	cs, err := s.c.V1CheckoutSessions.Create(ctx, p)
	if err != nil {
		return Checkout{}, stripeError(op, err)
	}
	return Checkout{ID: cs.ID, URL: cs.URL}, nil
}

func (s *StripeClient) CreatePortal(ctx context.Context, customerID, returnURL string) (string, error) {
	const op = "billing.stripe.create_portal"
	ps, err := s.c.V1BillingPortalSessions.Create(ctx, &stripe.BillingPortalSessionCreateParams{
		Customer: stripe.String(customerID), ReturnURL: stripe.String(returnURL)})
	if err != nil {
		return "", stripeError(op, err)
	}
	return ps.URL, nil
}

func (s *StripeClient) Subscription(ctx context.Context, id string) (Subscription, error) {
	const op = "billing.stripe.subscription"
	sub, err := s.c.V1Subscriptions.Retrieve(ctx, id, &stripe.SubscriptionRetrieveParams{})
	if err != nil {
		return Subscription{}, stripeError(op, err)
	}
	return subscriptionOf(sub), nil
}

// subscriptionOf keeps what billing decides on. Since API version
// 2025-03-31 the period lives on the items; a subscription of ours has one.
func subscriptionOf(sub *stripe.Subscription) Subscription {
	out := Subscription{
		ID: sub.ID, Status: string(sub.Status), Created: unix(sub.Created),
		CancelAtPeriodEnd: sub.CancelAtPeriodEnd, EndedAt: unix(sub.EndedAt), TrialEnd: unix(sub.TrialEnd),
	}
	if sub.Customer != nil {
		out.CustomerID = sub.Customer.ID
	}
	if sub.Items != nil {
		for _, it := range sub.Items.Data {
			if it == nil {
				continue
			}
			if it.Price != nil && out.PriceID == "" {
				out.PriceID = it.Price.ID
			}
			if end := unix(it.CurrentPeriodEnd); end.After(out.CurrentPeriodEnd) {
				out.CurrentPeriodEnd = end
			}
		}
	}
	return out
}

func (s *StripeClient) CheckoutSession(ctx context.Context, id string) (CheckoutSession, error) {
	const op = "billing.stripe.checkout_session"
	cs, err := s.c.V1CheckoutSessions.Retrieve(ctx, id, &stripe.CheckoutSessionRetrieveParams{})
	if err != nil {
		return CheckoutSession{}, stripeError(op, err)
	}
	return checkoutSessionOf(cs), nil
}

func checkoutSessionOf(cs *stripe.CheckoutSession) CheckoutSession {
	out := CheckoutSession{ID: cs.ID, Status: string(cs.Status)}
	if cs.Customer != nil {
		out.CustomerID = cs.Customer.ID
	}
	if cs.Subscription != nil {
		out.SubscriptionID = cs.Subscription.ID
	}
	return out
}

func (s *StripeClient) Invoices(ctx context.Context, customerID string, limit int) ([]Invoice, error) {
	const op = "billing.stripe.invoices"
	p := &stripe.InvoiceListParams{Customer: stripe.String(customerID)}
	p.Limit = stripe.Int64(int64(limit))
	var out []Invoice
	// The iterator pages on by itself: stop at limit, or it would read the
	// customer's whole history.
	for inv, err := range s.c.V1Invoices.List(ctx, p) {
		if err != nil {
			return nil, stripeError(op, err)
		}
		amount := inv.AmountDue
		if inv.Status == stripe.InvoiceStatusPaid {
			amount = inv.AmountPaid
		}
		out = append(out, Invoice{ID: inv.ID, Number: inv.Number, Status: string(inv.Status), Amount: amount,
			Currency: string(inv.Currency), Created: unix(inv.Created), URL: inv.HostedInvoiceURL})
		if len(out) >= limit {
			break
		}
	}
	return out, nil
}

func (s *StripeClient) CouponValid(ctx context.Context, id string) (bool, error) {
	const op = "billing.stripe.coupon"
	c, err := s.c.V1Coupons.Retrieve(ctx, id, &stripe.CouponRetrieveParams{})
	if err != nil {
		err = stripeError(op, err)
		if slicehub.KindOf(err) == slicehub.KindNotFound {
			return false, nil // deleted: no longer redeemable
		}
		return false, err
	}
	return c.Valid, nil
}

func unix(sec int64) time.Time {
	if sec == 0 {
		return time.Time{}
	}
	return time.Unix(sec, 0).UTC()
}

// stripeError gives a Stripe failure its kind: a missing object is
// not_found, Stripe being down or throttling is unavailable (a webhook
// answers 503 and Stripe retries), anything else is our bug (a bad price
// id, a bad key) and internal. The client sees none of Stripe's text.
func stripeError(op string, err error) error {
	if err == nil {
		return nil
	}
	var se *stripe.Error
	if errors.As(err, &se) {
		cause := fmt.Errorf("stripe %d %s %s (request %s)", se.HTTPStatusCode, se.Type, se.Code, se.RequestID)
		switch {
		case se.HTTPStatusCode == http.StatusNotFound || se.Code == stripe.ErrorCodeResourceMissing:
			return &slicehub.Error{Op: op, Kind: slicehub.KindNotFound, Code: "stripe_not_found", Message: "not found at the payment provider", Err: cause}
		case se.HTTPStatusCode == http.StatusTooManyRequests || se.HTTPStatusCode >= 500:
			return &slicehub.Error{Op: op, Kind: slicehub.KindUnavailable, Code: "stripe_unavailable", Message: "the payment provider is unavailable; try again shortly", Err: cause}
		}
		return slicehub.Wrap(op, slicehub.KindInternal, cause)
	}
	var ne net.Error
	if errors.As(err, &ne) || errors.Is(err, context.DeadlineExceeded) {
		return &slicehub.Error{Op: op, Kind: slicehub.KindUnavailable, Code: "stripe_unavailable", Message: "the payment provider is unavailable; try again shortly", Err: err}
	}
	return slicehub.Wrap(op, slicehub.KindInternal, err)
}

// slogStripe sends stripe-go's own log lines to slog. stripe-go logs
// requests and errors, never the key.
type slogStripe struct{ log *slog.Logger }

func (l slogStripe) Debugf(format string, v ...any) { l.log.Debug(fmt.Sprintf(format, v...)) }
func (l slogStripe) Infof(format string, v ...any)  { l.log.Debug(fmt.Sprintf(format, v...)) }
func (l slogStripe) Warnf(format string, v ...any)  { l.log.Warn(fmt.Sprintf(format, v...)) }
func (l slogStripe) Errorf(format string, v ...any) { l.log.Warn(fmt.Sprintf(format, v...)) }
