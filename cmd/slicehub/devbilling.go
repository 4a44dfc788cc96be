package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"

	"github.com/slicehub/slicehub/billing"
)

// Billing on the development platform (`slicehub dev` with no Stripe key):
// billing runs against stripe-mock, started here, with the simulated
// payment side of billing.DevStripe (billing/devpayments.go) at
// /billing/dev.

const (
	devStripeKey   = "sk_test_slicehubdev" // stripe-mock wants sk_test_ and letters or digits
	devStripeState = "stripe-dev.json"     // in the state directory
)

// devSecret is a random webhook signing secret for one run.
func devSecret() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return "whsec_dev_" + hex.EncodeToString(b[:])
}

// startStripeMock starts stripe-mock for the development platform.
func startStripeMock(ctx context.Context) (string, func(), error) {
	bin, err := billing.FindStripeMock()
	if err != nil {
		return "", nil, err
	}
	return billing.StartStripeMock(ctx, bin)
}
