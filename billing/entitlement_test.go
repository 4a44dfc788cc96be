package billing

import (
	"testing"
	"time"

	"github.com/slicehub/slicehub/postgres"
)

func TestDecide(t *testing.T) {
	now := time.Date(2026, 12, 10, 12, 0, 0, 0, time.UTC)
	day := 24 * time.Hour
	grace, retention := 3*day, 30*day
	tests := []struct {
		name      string
		a         postgres.BillingAccount
		want      want
		banner    string
		graceEnds time.Time
		suspendAt time.Time
		retireAt  time.Time
	}{
		{name: "never subscribed", a: postgres.BillingAccount{}, want: wantNothing},
		{name: "incomplete first payment", a: postgres.BillingAccount{Status: "incomplete"}, want: wantNothing},
		{name: "incomplete_expired", a: postgres.BillingAccount{Status: "incomplete_expired"}, want: wantNothing},
		{name: "trialing", a: postgres.BillingAccount{Status: "trialing"}, want: wantRun},
		{name: "active", a: postgres.BillingAccount{Status: "active", CurrentPeriodEnd: now.Add(10 * day)}, want: wantRun},
		{name: "active, canceled at period end", a: postgres.BillingAccount{Status: "active", CancelAtPeriodEnd: true, CurrentPeriodEnd: now.Add(10 * day)},
			want: wantRun, banner: BannerEnding, suspendAt: now.Add(10 * day)},
		{name: "past due, day 1", a: postgres.BillingAccount{Status: "past_due", PastDueSince: now.Add(-day)},
			want: wantRun, banner: BannerPastDue, graceEnds: now.Add(2 * day)},
		{name: "past due, just before the end of grace", a: postgres.BillingAccount{Status: "past_due", PastDueSince: now.Add(-grace + time.Second)},
			want: wantRun, banner: BannerPastDue, graceEnds: now.Add(time.Second)},
		{name: "past due, grace over", a: postgres.BillingAccount{Status: "past_due", PastDueSince: now.Add(-grace)},
			want: wantSuspend, banner: BannerSuspended, graceEnds: now},
		{name: "past due, first seen now", a: postgres.BillingAccount{Status: "past_due"},
			want: wantRun, banner: BannerPastDue, graceEnds: now.Add(grace)},
		{name: "unpaid", a: postgres.BillingAccount{Status: "unpaid"}, want: wantSuspend, banner: BannerSuspended},
		{name: "paused", a: postgres.BillingAccount{Status: "paused"}, want: wantSuspend, banner: BannerSuspended},
		{name: "canceled, period paid for not over", a: postgres.BillingAccount{Status: "canceled", EndedAt: now.Add(-day), CurrentPeriodEnd: now.Add(5 * day)},
			want: wantRun, banner: BannerEnding, suspendAt: now.Add(5 * day)},
		{name: "canceled, period over", a: postgres.BillingAccount{Status: "canceled", EndedAt: now.Add(-day), CurrentPeriodEnd: now.Add(-day)},
			want: wantSuspend, banner: BannerSuspended, retireAt: now.Add(29 * day)},
		{name: "canceled, suspended late: retention counts from the suspension", a: postgres.BillingAccount{Status: "canceled",
			EndedAt: now.Add(-40 * day), SuspendedAt: now.Add(-20 * day)},
			want: wantSuspend, banner: BannerSuspended, retireAt: now.Add(10 * day)},
		{name: "canceled, retention over", a: postgres.BillingAccount{Status: "canceled", EndedAt: now.Add(-retention)},
			want: wantRetire, banner: BannerSuspended, retireAt: now},
		{name: "complimentary beats unpaid", a: postgres.BillingAccount{Status: "unpaid", Complimentary: true}, want: wantRun},
		{name: "complimentary beats canceled long ago", a: postgres.BillingAccount{Status: "canceled", EndedAt: now.Add(-90 * day), Complimentary: true}, want: wantRun},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := decide(tt.a, now, grace, retention)
			if d.want != tt.want || d.banner != tt.banner || !d.graceEnds.Equal(tt.graceEnds) || !d.suspendAt.Equal(tt.suspendAt) || !d.retireAt.Equal(tt.retireAt) {
				t.Errorf("decide(%+v) = want %v banner %q grace %v suspend %v retire %v;\nwant want %v banner %q grace %v suspend %v retire %v",
					tt.a, d.want, d.banner, d.graceEnds, d.suspendAt, d.retireAt, tt.want, tt.banner, tt.graceEnds, tt.suspendAt, tt.retireAt)
			}
		})
	}
}

func TestPrefer(t *testing.T) {
	old := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	young := old.Add(time.Hour)
	tests := []struct {
		name string
		a, b Subscription
		want bool
	}{
		{"live beats canceled, even older", Subscription{ID: "a", Status: "active", Created: old}, Subscription{ID: "b", Status: "canceled", Created: young}, true},
		{"canceled loses to live", Subscription{ID: "a", Status: "canceled", Created: young}, Subscription{ID: "b", Status: "past_due", Created: old}, false},
		{"both live: newer wins", Subscription{ID: "a", Status: "active", Created: young}, Subscription{ID: "b", Status: "active", Created: old}, true},
		{"both over: newer wins", Subscription{ID: "a", Status: "canceled", Created: old}, Subscription{ID: "b", Status: "incomplete_expired", Created: young}, false},
	}
	for _, tt := range tests {
		if got := prefer(tt.a, tt.b); got != tt.want {
			t.Errorf("%s: prefer(%s %s, %s %s) = %t, want %t", tt.name, tt.a.ID, tt.a.Status, tt.b.ID, tt.b.Status, got, tt.want)
		}
	}
}

func TestMoney(t *testing.T) {
	for _, tt := range []struct {
		amount   int64
		currency string
		want     string
	}{{900, "usd", "$9.00"}, {450, "usd", "$4.50"}, {1999, "eur", "€19.99"}, {5, "chf", "0.05 CHF"}} {
		if got := money(tt.amount, tt.currency); got != tt.want {
			t.Errorf("money(%d, %q) = %q, want %q", tt.amount, tt.currency, got, tt.want)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	good := Config{Regular: Plan{PriceID: "price_r", Amount: 900, Currency: "usd"}, WebhookSecret: "whsec_x", ExportDir: "/tmp/x"}
	if err := good.Validate(); err != nil {
		t.Fatalf("Validate(good) = %v", err)
	}
	for name, bad := range map[string]func(*Config){
		"no price":                  func(c *Config) { c.Regular.PriceID = "" },
		"no secret":                 func(c *Config) { c.WebhookSecret = "" },
		"no export dir":             func(c *Config) { c.ExportDir = "" },
		"launch price without date": func(c *Config) { c.Launch = Plan{PriceID: "price_l", Amount: 450} },
		"launch coupon, no amount":  func(c *Config) { c.LaunchCoupon = "LAUNCH" },
		"negative trial":            func(c *Config) { c.TrialDays = -1 },
	} {
		c := good
		bad(&c)
		if c.Validate() == nil {
			t.Errorf("Validate accepted a config with %s", name)
		}
	}
}
