package billing

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/stripe/stripe-go/v82"
	"github.com/stripe/stripe-go/v82/webhook"

	"github.com/slicehub/slicehub"
	"github.com/slicehub/slicehub/postgres"
)

// Outcomes of an event, as recorded in billing_events.
const (
	OutcomeApplied   = "applied"   // Stripe re-read; the account follows it
	OutcomeStale     = "stale"     // about a subscription that no longer decides
	OutcomeIgnored   = "ignored"   // a type we do not act on, or not our customer
	OutcomeDuplicate = "duplicate" // processed before: nothing done (never stored)
)

// WebhookResult says what one delivery did.
type WebhookResult struct {
	EventID string `json:"event_id"`
	Type    string `json:"type"`
	Outcome string `json:"outcome"`
}

// handled lists the event types billing acts on. Every other verified
// event is recorded as ignored and acknowledged, so Stripe stops sending it.
var handled = map[string]bool{
	"checkout.session.completed":    true,
	"customer.subscription.created": true,
	"customer.subscription.updated": true,
	"customer.subscription.deleted": true,
	"invoice.paid":                  true,
	"invoice.payment_failed":        true,
}

// The webhook's refusals, each a 400 written before anything is stored.
// Stripe retries any non-2xx for a few days; none of these would succeed
// on a retry, and a forged delivery must not look accepted.
var (
	errNoSignature = slicehub.Errorf("billing.webhook", slicehub.KindInvalid, "missing_signature", "the Stripe-Signature header is missing")
	errBadSig      = slicehub.Errorf("billing.webhook", slicehub.KindInvalid, "bad_signature", "the signature does not match")
	errStaleSig    = slicehub.Errorf("billing.webhook", slicehub.KindInvalid, "stale_signature", "the signature is too old")
	errBadPayload  = slicehub.Errorf("billing.webhook", slicehub.KindInvalid, "bad_payload", "the event is not a valid Stripe event")
)

// HandleWebhook verifies one delivery of the webhook and applies it once.
// The signature is checked against the raw body before anything is read
// or written. A replay is a no-op. A retryable failure (Stripe or the
// database down) returns an error of kind unavailable or internal, so the
// endpoint answers 5xx and Stripe delivers again; nothing of the failed
// attempt remains.
func (s *Service) HandleWebhook(ctx context.Context, payload []byte, signature string) (WebhookResult, error) {
	const op = "billing.webhook"
	// The event's API version is not checked: only its id, type and the
	// ids of the objects it names are used, and those objects are then
	// read from Stripe at the version this client is pinned to.
	ev, err := webhook.ConstructEventWithOptions(payload, signature, s.cfg.WebhookSecret,
		webhook.ConstructEventOptions{Tolerance: s.cfg.WebhookTolerance, IgnoreAPIVersionMismatch: true})
	if err != nil {
		switch {
		case errors.Is(err, webhook.ErrNotSigned):
			return WebhookResult{}, errNoSignature
		case errors.Is(err, webhook.ErrTooOld):
			return WebhookResult{}, errStaleSig
		case errors.Is(err, webhook.ErrInvalidHeader), errors.Is(err, webhook.ErrNoValidSignature):
			return WebhookResult{}, errBadSig
		}
		return WebhookResult{}, errBadPayload // signed, but not JSON
	}
	if ev.ID == "" || ev.Type == "" || ev.Data == nil || len(ev.Data.Raw) == 0 {
		return WebhookResult{}, errBadPayload
	}
	res := WebhookResult{EventID: ev.ID, Type: string(ev.Type)}
	log := s.log.With("event_id", ev.ID, "type", ev.Type)

	seen, err := s.db.BillingEventSeen(ctx, ev.ID)
	if err != nil {
		return res, slicehub.Wrap(op, slicehub.KindInternal, err)
	}
	if seen {
		res.Outcome = OutcomeDuplicate
		log.Info("event replayed; nothing to do")
		return res, nil
	}

	rec := postgres.BillingEvent{ID: ev.ID, Type: string(ev.Type), Livemode: ev.Livemode, CreatedAt: unix(ev.Created), Outcome: OutcomeIgnored}
	if rec.CreatedAt.IsZero() {
		rec.CreatedAt = s.now()
	}
	ref, ok, err := refOf(ev)
	if err != nil {
		return res, errBadPayload
	}
	var userID int64
	var did effect
	err = s.db.InBillingTx(ctx, func(tx postgres.BillingTx) error {
		fresh, err := tx.RecordBillingEvent(ctx, rec)
		if err != nil {
			return err
		}
		if !fresh {
			res.Outcome = OutcomeDuplicate // a concurrent delivery won
			return nil
		}
		res.Outcome = OutcomeIgnored
		if !ok {
			return nil
		}
		a, err := tx.LockBillingAccountByCustomer(ctx, ref.customer)
		if slicehub.KindOf(err) == slicehub.KindNotFound {
			// Another application's customer on the same Stripe account,
			// or a test event: acknowledged, recorded, ignored.
			return nil
		}
		if err != nil {
			return err
		}
		userID = a.UserID
		subID := ref.subscription
		if subID == "" {
			subID = a.SubscriptionID // an invoice without a subscription: look at the current one
		}
		if subID == "" {
			return tx.SetBillingEventOutcome(ctx, ev.ID, userID, OutcomeIgnored)
		}
		res.Outcome, err = s.syncTx(ctx, tx, &a, subID, ev.ID)
		if err != nil {
			return err
		}
		if did, err = s.enforceTx(ctx, tx, &a, ev.ID, Actor); err != nil {
			return err
		}
		if err := tx.SaveBillingAccount(ctx, a); err != nil {
			return err
		}
		if err := s.fail("webhook.before_commit"); err != nil {
			return err
		}
		return tx.SetBillingEventOutcome(ctx, ev.ID, userID, res.Outcome)
	})
	if err != nil {
		if slicehub.KindOf(err) == slicehub.KindInternal {
			log.Error("event not applied; Stripe will deliver it again", "err", err)
		} else {
			log.Warn("event not applied; Stripe will deliver it again", "err", err)
		}
		kind := slicehub.KindOf(err)
		if kind != slicehub.KindUnavailable {
			kind = slicehub.KindInternal // never a 4xx: Stripe must retry
		}
		return res, &slicehub.Error{Op: op, Kind: kind, Code: "event_not_applied", Message: "the event could not be applied; deliver it again", Err: err}
	}
	log.Info("event processed", "outcome", res.Outcome, "user_id", userID)
	s.afterCommit(ctx, userID, did)
	return res, nil
}

// eventRef is what an event points at.
type eventRef struct {
	customer     string
	subscription string // "" when the event names none
}

// refOf extracts the customer and subscription an event is about. ok is
// false for types billing does not act on, and for a Checkout Session
// that is not a subscription's.
func refOf(ev stripe.Event) (eventRef, bool, error) {
	if !handled[string(ev.Type)] {
		return eventRef{}, false, nil
	}
	raw := ev.Data.Raw
	switch ev.Type {
	case "checkout.session.completed":
		var cs stripe.CheckoutSession
		if err := json.Unmarshal(raw, &cs); err != nil {
			return eventRef{}, false, err
		}
		c := checkoutSessionOf(&cs)
		if cs.Mode != stripe.CheckoutSessionModeSubscription || c.CustomerID == "" {
			return eventRef{}, false, nil
		}
		return eventRef{customer: c.CustomerID, subscription: c.SubscriptionID}, true, nil
	case "customer.subscription.created", "customer.subscription.updated", "customer.subscription.deleted":
		var sub stripe.Subscription
		if err := json.Unmarshal(raw, &sub); err != nil {
			return eventRef{}, false, err
		}
		if sub.ID == "" || sub.Customer == nil || sub.Customer.ID == "" {
			return eventRef{}, false, fmt.Errorf("subscription event without ids")
		}
		return eventRef{customer: sub.Customer.ID, subscription: sub.ID}, true, nil
	case "invoice.paid", "invoice.payment_failed":
		var inv stripe.Invoice
		if err := json.Unmarshal(raw, &inv); err != nil {
			return eventRef{}, false, err
		}
		if inv.Customer == nil || inv.Customer.ID == "" {
			return eventRef{}, false, fmt.Errorf("invoice event without a customer")
		}
		r := eventRef{customer: inv.Customer.ID}
		if p := inv.Parent; p != nil && p.SubscriptionDetails != nil && p.SubscriptionDetails.Subscription != nil {
			r.subscription = p.SubscriptionDetails.Subscription.ID
		}
		return r, true, nil
	}
	return eventRef{}, false, nil
}

// syncTx re-reads subscription subID from Stripe and makes the locked
// account follow whichever subscription should decide: the one the event
// named, or the account's current one if that one is to be preferred (see
// prefer). The account row stays locked during the call, so two events of
// one customer are applied one after the other, each from a fresh read.
func (s *Service) syncTx(ctx context.Context, tx billingTx, a *postgres.BillingAccount, subID, eventID string) (string, error) {
	got, err := s.readSubscription(ctx, subID)
	if slicehub.KindOf(err) == slicehub.KindNotFound {
		return OutcomeIgnored, nil
	}
	if err != nil {
		return "", err
	}
	if got.CustomerID != a.CustomerID {
		// Signed by Stripe, so not forged, but not this account's: never
		// let one customer's subscription decide another's slice.
		return OutcomeIgnored, tx.AuditBilling(ctx, postgres.BillingAudit{UserID: a.UserID, Actor: Actor,
			Action: "foreign_subscription", EventID: eventID, Detail: fmt.Sprintf("%s belongs to another customer", subID)})
	}
	outcome := OutcomeApplied
	if a.SubscriptionID != "" && a.SubscriptionID != got.ID {
		cur, err := s.readSubscription(ctx, a.SubscriptionID)
		switch {
		case err == nil && prefer(cur, got):
			got, outcome = cur, OutcomeStale
		case err != nil && slicehub.KindOf(err) != slicehub.KindNotFound:
			return "", err
		}
	}
	before := *a
	s.follow(a, got)
	if before.Status != a.Status || before.SubscriptionID != a.SubscriptionID || before.CancelAtPeriodEnd != a.CancelAtPeriodEnd ||
		!before.CurrentPeriodEnd.Equal(a.CurrentPeriodEnd) {
		if err := tx.AuditBilling(ctx, postgres.BillingAudit{UserID: a.UserID, Actor: Actor, Action: "subscription_synced",
			EventID: eventID, Detail: fmt.Sprintf("%s: %s -> %s (period end %s, cancel at period end %t)",
				a.SubscriptionID, orNone(before.Status), a.Status, a.CurrentPeriodEnd.Format(time.RFC3339), a.CancelAtPeriodEnd)}); err != nil {
			return "", err
		}
	}
	return outcome, nil
}

func (s *Service) readSubscription(ctx context.Context, id string) (Subscription, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.StripeTimeout)
	defer cancel()
	return s.stripe.Subscription(ctx, id)
}

// follow copies what billing decides on from Stripe's subscription.
func (s *Service) follow(a *postgres.BillingAccount, sub Subscription) {
	a.SubscriptionID, a.Status, a.PriceID = sub.ID, sub.Status, sub.PriceID
	a.CurrentPeriodEnd, a.CancelAtPeriodEnd, a.EndedAt, a.TrialEnd = sub.CurrentPeriodEnd, sub.CancelAtPeriodEnd, sub.EndedAt, sub.TrialEnd
	if sub.PriceID != "" && sub.PriceID == s.cfg.Launch.PriceID {
		a.LaunchPrice = true
	}
	// The grace period runs from when billing first saw the subscription
	// past due, and starts over after it was paid.
	if sub.Status == "past_due" {
		if a.PastDueSince.IsZero() {
			a.PastDueSince = s.now()
		}
	} else if sub.Status != "unpaid" {
		a.PastDueSince = time.Time{}
	}
	a.SyncedAt = s.now()
}

// SyncCheckout applies a Checkout Session that user just completed,
// without waiting for its webhook (the page Stripe returns to calls it).
// The session must belong to user's customer.
func (s *Service) SyncCheckout(ctx context.Context, user slicehub.User, sessionID string) error {
	const op = "billing.sync_checkout"
	a, err := s.db.BillingAccount(ctx, user.ID)
	if err != nil {
		return slicehub.Wrap(op, slicehub.KindInternal, err)
	}
	cs, err := s.stripe.CheckoutSession(ctx, sessionID)
	if slicehub.KindOf(err) == slicehub.KindNotFound {
		return slicehub.Errorf(op, slicehub.KindNotFound, "no_checkout", "no such checkout")
	}
	if err != nil {
		return slicehub.Wrap(op, slicehub.KindInternal, err)
	}
	if cs.CustomerID == "" || cs.CustomerID != a.CustomerID {
		return slicehub.Errorf(op, slicehub.KindNotFound, "no_checkout", "no such checkout")
	}
	if cs.SubscriptionID == "" {
		return nil // not completed yet: the webhook will tell
	}
	var did effect
	err = s.inAccount(ctx, user.ID, func(tx billingTx, a *postgres.BillingAccount) error {
		if _, err := s.syncTx(ctx, tx, a, cs.SubscriptionID, ""); err != nil {
			return err
		}
		did, err = s.enforceTx(ctx, tx, a, "", Actor)
		return err
	})
	if err == nil {
		s.afterCommit(ctx, user.ID, did)
	}
	return slicehub.Wrap(op, slicehub.KindInternal, err)
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}
