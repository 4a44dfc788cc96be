package main

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/slicehub/slicehub/billing"
)

// BillingSettings are the billing-* and stripe-* settings.
type BillingSettings struct {
	StripeSecretKey     string // empty: billing is off
	StripeWebhookSecret string
	StripeAPIURL        string
	// DevPayments: the development platform's simulated payment side on
	// top of stripe-mock (devbilling.go). Set by `slicehub dev` only.
	DevPayments   bool
	Price         string
	Amount        int
	Currency      string
	LaunchPrice   string
	LaunchAmount  int
	LaunchUntil   time.Time
	LaunchCoupon  string
	TrialDays     int
	Grace         time.Duration
	Retention     time.Duration
	ExportDir     string
	CheckInterval time.Duration
}

// secretSetting reports whether the setting of environment variable env
// holds a secret, which -h must never print.
func secretSetting(env string) bool {
	return env == "STRIPE_SECRET_KEY" || env == "STRIPE_WEBHOOK_SECRET" || env == "SLICEHUB_SMTP_PASSWORD"
}

// parseBilling reads the billing settings with parseConfig's helpers.
func parseBilling(get func(string) string, atoi func(string) int, dur func(string) time.Duration, errs *[]string) BillingSettings {
	b := BillingSettings{
		StripeSecretKey: get("stripe-secret-key"), StripeWebhookSecret: get("stripe-webhook-secret"), StripeAPIURL: get("stripe-api-url"),
		Price: get("billing-price"), Amount: atoi("billing-amount"), Currency: strings.ToLower(get("billing-currency")),
		LaunchPrice: get("billing-launch-price"), LaunchAmount: atoi("billing-launch-amount"), LaunchCoupon: get("billing-launch-coupon"),
		TrialDays: atoi("billing-trial-days"), Grace: dur("billing-grace"), Retention: dur("billing-retention"),
		ExportDir: get("billing-export-dir"), CheckInterval: dur("billing-check-interval"),
	}
	if v := get("billing-launch-until"); v != "" {
		t, err := time.Parse("2006-01-02", v)
		if err != nil {
			*errs = append(*errs, fmt.Sprintf("-billing-launch-until: want a date such as 2027-01-31, got %q", v))
		}
		b.LaunchUntil = t
	}
	return b
}

// startBilling builds billing when a Stripe key is configured, adds its
// routes to the gateway (public: the root router; web: the gateway's
// sessions and CSRF; admin: its /admin router) and starts its periodic
// check. It returns nil when billing is off.
func (m *Main) startBilling(ctx context.Context, public, admin fiber.Router, web billing.Web, adminUserKey string) (*billing.Service, error) {
	b := m.Config.Billing
	if b.StripeSecretKey == "" {
		m.Log.Info("billing is off: no Stripe secret key")
		return nil, nil
	}
	exportDir := b.ExportDir
	if exportDir == "" {
		exportDir = filepath.Join(m.Config.StateDir, "billing-exports")
	}
	log := m.Log
	var stripeAPI billing.Stripe = billing.NewStripeClient(billing.StripeConfig{SecretKey: b.StripeSecretKey, URL: b.StripeAPIURL, Logger: log}, nil)
	var dev *billing.DevStripe
	if b.DevPayments {
		dev = billing.NewDevStripe(stripeAPI, filepath.Join(m.Config.StateDir, devStripeState))
		stripeAPI = dev
	}
	svc, err := billing.New(billing.Config{
		Regular:       billing.Plan{PriceID: b.Price, Amount: int64(b.Amount), Currency: b.Currency},
		Launch:        billing.Plan{PriceID: b.LaunchPrice, Amount: int64(b.LaunchAmount), Currency: b.Currency},
		LaunchUntil:   b.LaunchUntil,
		LaunchCoupon:  b.LaunchCoupon,
		TrialDays:     b.TrialDays,
		Grace:         b.Grace,
		Retention:     b.Retention,
		ExportDir:     exportDir,
		WebhookSecret: b.StripeWebhookSecret,
		Claimer:       m.Scheduler,
		Logger:        log,
	}, m.DB, stripeAPI)
	if err != nil {
		return nil, err
	}
	if dev != nil {
		billing.RegisterDev(public, dev, web, m.DB, b.StripeWebhookSecret, "http://"+m.PublicAddr+"/billing/webhook")
	}
	billing.Register(public, svc, web)
	billing.RegisterAdmin(admin, svc, adminUserKey)
	m.goRun(func() { svc.Run(ctx, b.CheckInterval) })
	m.Log.Info("billing is on", "stripe_api", orStripe(b.StripeAPIURL), "price", b.Price, "export_dir", exportDir)
	return svc, nil
}

func orStripe(u string) string {
	if u == "" {
		return "https://api.stripe.com"
	}
	return u
}
