package billing

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/stripe/stripe-go/v82/webhook"

	"github.com/slicehub/slicehub"
)

// webhookOnlyService can verify deliveries and nothing more: it has no
// database, so a delivery that got past verification would panic on it,
// which the fuzzer would report as loudly as an acceptance.
func webhookOnlyService() *Service {
	return &Service{
		cfg: Config{WebhookSecret: webhookSecret, WebhookTolerance: 5 * time.Minute},
		log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		now: time.Now,
	}
}

func signedHeader(payload []byte, secret string, at time.Time) string {
	return webhook.GenerateTestSignedPayload(&webhook.UnsignedPayload{Payload: payload, Secret: secret, Timestamp: at}).Header
}

// FuzzWebhookForged sends the webhook arbitrary bodies with arbitrary
// Stripe-Signature headers, and with headers that are valid for another
// secret, for another body, or too old. Anyone on the internet can post to
// /billing/webhook; none of these may be accepted, and all must be refused
// with a 400 before anything is read from or written to the database.
func FuzzWebhookForged(f *testing.F) {
	ev := []byte(`{"id":"evt_1","object":"event","type":"customer.subscription.deleted","created":1,` +
		`"data":{"object":{"id":"sub_1","object":"subscription","customer":"cus_1"}}}`)
	now := time.Now()
	for _, s := range []struct {
		payload []byte
		sig     string
	}{
		{ev, ""},
		{ev, "t=1,v1=00"},
		{ev, signedHeader(ev, "whsec_other", now)},
		{ev, signedHeader(append([]byte(" "), ev...), webhookSecret, now)},
		{ev, signedHeader(ev, webhookSecret, now.Add(-time.Hour))},
		{ev, "t=" + "99999999999999999999" + ",v1=" + "ab"},
		{ev, "v1=,t=,v0=,,,="},
		{[]byte{}, "t=1"},
		{[]byte("null"), signedHeader([]byte("nul"), webhookSecret, now)},
	} {
		f.Add(s.payload, s.sig)
	}
	s := webhookOnlyService()
	f.Fuzz(func(t *testing.T, payload []byte, sig string) {
		res, err := s.HandleWebhook(context.Background(), payload, sig)
		if err == nil {
			t.Fatalf("accepted an unsigned or forged delivery: %+v (signature %q)", res, sig)
		}
		if k := slicehub.KindOf(err); k != slicehub.KindInvalid {
			t.Fatalf("refusal of kind %v (%v), want invalid: a forged delivery must be a 400", k, err)
		}
		for _, want := range []error{errNoSignature, errBadSig, errStaleSig, errBadPayload} {
			if errors.Is(err, want) {
				return
			}
		}
		t.Fatalf("refused with %v, not one of the webhook's refusals", err)
	})
}

// FuzzWebhookSigned signs arbitrary bodies with the real secret, so the
// fuzzer reaches the event parser behind the signature check: Stripe is
// trusted to sign, not to send only shapes we expect. Parsing must never
// panic, and a signed body changed by one byte must be refused.
func FuzzWebhookSigned(f *testing.F) {
	for _, p := range []string{
		`{"id":"evt_1","object":"event","type":"invoice.paid","data":{"object":{"customer":"cus_1"}}}`,
		`{"id":"evt_1","type":"invoice.paid","data":{"object":{"customer":{"id":"cus_1"},"parent":{"subscription_details":{"subscription":"sub_1"}}}}}`,
		`{"id":"evt_1","type":"invoice.payment_failed","data":{"object":{"customer":null}}}`,
		`{"id":"evt_1","type":"checkout.session.completed","data":{"object":{"mode":"subscription","customer":"cus_1","subscription":{"id":"sub_1"}}}}`,
		`{"id":"evt_1","type":"checkout.session.completed","data":{"object":{"mode":"payment"}}}`,
		`{"id":"evt_1","type":"customer.subscription.updated","data":{"object":{"id":"sub_1","customer":{"id":"cus_1","deleted":true}}}}`,
		`{"id":"evt_1","type":"customer.subscription.created","data":{"object":[]}}`,
		`{"id":"evt_1","type":"customer.subscription.created","data":{"object":{"items":{"data":[null]}}}}`,
		`{"id":"evt_1","type":"customer.created","data":{"object":{}}}`,
		`{"id":"","type":"","data":null}`,
		`{"data":{"object":1}}`,
		`[]`, `"x"`, ``, `{`,
	} {
		f.Add([]byte(p), uint16(0))
	}
	s := webhookOnlyService()
	f.Fuzz(func(t *testing.T, payload []byte, flip uint16) {
		sig := signedHeader(payload, webhookSecret, time.Now())
		// The same checks as HandleWebhook up to its first database read.
		ev, err := webhook.ConstructEventWithOptions(payload, sig, s.cfg.WebhookSecret,
			webhook.ConstructEventOptions{Tolerance: s.cfg.WebhookTolerance, IgnoreAPIVersionMismatch: true})
		if err == nil && ev.ID != "" && ev.Type != "" && ev.Data != nil && len(ev.Data.Raw) > 0 {
			_, _, _ = refOf(ev) // must not panic, whatever the object's shape
		}
		if len(payload) == 0 {
			return
		}
		// One byte changed under the same signature: refused as forged.
		tampered := append([]byte(nil), payload...)
		i := int(flip) % len(tampered)
		tampered[i] ^= 1 + byte(flip>>8)%255
		if _, err := s.HandleWebhook(context.Background(), tampered, sig); !errors.Is(err, errBadSig) {
			t.Fatalf("a signed body changed at byte %d was not refused as badly signed: %v", i, err)
		}
	})
}
