package main

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestBillingSettings(t *testing.T) {
	env := map[string]string{
		"STRIPE_SECRET_KEY": "sk_test_do_not_print", "STRIPE_WEBHOOK_SECRET": "whsec_do_not_print",
		"SLICEHUB_BILLING_PRICE": "price_9", "SLICEHUB_BILLING_LAUNCH_UNTIL": "2027-01-31",
	}
	c, fs, err := parseConfig("t", []string{"-billing-grace", "48h"}, func(k string) string { return env[k] })
	if err != nil {
		t.Fatalf("parseConfig: %v", err)
	}
	b := c.Billing
	if b.StripeSecretKey != "sk_test_do_not_print" || b.StripeWebhookSecret != "whsec_do_not_print" || b.Price != "price_9" ||
		b.Amount != 900 || b.LaunchAmount != 450 || b.Currency != "usd" || b.Grace != 48*time.Hour ||
		b.Retention != 720*time.Hour || b.CheckInterval != time.Minute || !b.LaunchUntil.Equal(time.Date(2027, 1, 31, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("billing settings %+v", b)
	}
	var help bytes.Buffer
	fs.SetOutput(&help)
	fs.PrintDefaults()
	if strings.Contains(help.String(), "do_not_print") {
		t.Errorf("-h prints a secret from the environment:\n%s", help.String())
	}
	// A flag still wins over the environment, secrets included.
	c, _, err = parseConfig("t", []string{"-stripe-secret-key", "sk_flag"}, func(k string) string { return env[k] })
	if err != nil || c.Billing.StripeSecretKey != "sk_flag" {
		t.Errorf("flag over env: %q, %v", c.Billing.StripeSecretKey, err)
	}
	if _, _, err := parseConfig("t", []string{"-billing-launch-until", "next week"}, func(string) string { return "" }); err == nil {
		t.Error("a bad launch date was accepted")
	}
}
