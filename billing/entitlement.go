package billing

import (
	"time"

	"github.com/slicehub/slicehub/postgres"
)

// want is what an account's billing asks of its slice.
type want int

const (
	// wantNothing: billing has no say (no subscription yet, or one whose
	// first payment never went through). The slice is left as it is.
	wantNothing want = iota
	// wantRun: the slice may run; a slice billing suspended resumes.
	wantRun
	// wantSuspend: stop the slice and keep its data.
	wantSuspend
	// wantRetire: the retention after the end of a canceled subscription
	// is over: export the data for the user, then retire the slice.
	wantRetire
)

func (w want) String() string {
	switch w {
	case wantRun:
		return "run"
	case wantSuspend:
		return "suspend"
	case wantRetire:
		return "retire"
	}
	return "nothing"
}

// Banners the pages show; "" for none.
const (
	// BannerPastDue: a payment failed; the slice runs until GraceEndsAt.
	BannerPastDue = "payment_failed"
	// BannerEnding: the subscription ends at SuspendAt (canceled at period end).
	BannerEnding = "subscription_ending"
	// BannerSuspended: the slice is suspended for billing; data is kept
	// until RetireAt when that is set.
	BannerSuspended = "suspended"
)

// decision is the entitlement of one account at one instant.
type decision struct {
	want   want
	banner string
	reason string
	// graceEnds: the end of a past-due grace period; suspendAt: when a
	// subscription that ends will stop the slice; retireAt: when a
	// suspended, canceled account's slice will be retired.
	graceEnds, suspendAt, retireAt time.Time
}

// live reports whether a subscription status still entitles, or may
// again: these are the statuses Stripe moves out of by payment or by time.
func live(status string) bool {
	switch status {
	case "trialing", "active", "past_due", "unpaid", "paused":
		return true
	}
	return false
}

// decide is the whole entitlement policy, a pure function of the account
// and the time so that every rule is tested without a clock or a database:
//   - complimentary: runs, whatever Stripe says;
//   - trialing, active: runs (with a banner when it ends at period end);
//   - past_due: runs for the grace period from when it was first seen past
//     due, then is suspended;
//   - unpaid, paused: Stripe gave up collecting, or the trial ended
//     without a payment method: suspended;
//   - canceled: runs until the end of the period paid for, then is
//     suspended, then retired once the retention has passed since the
//     later of that end and the suspension.
func decide(a postgres.BillingAccount, now time.Time, grace, retention time.Duration) decision {
	if a.Complimentary {
		return decision{want: wantRun, reason: "complimentary account"}
	}
	switch a.Status {
	case "trialing", "active":
		d := decision{want: wantRun, reason: "subscription " + a.Status}
		if a.CancelAtPeriodEnd && !a.CurrentPeriodEnd.IsZero() {
			d.banner, d.suspendAt = BannerEnding, a.CurrentPeriodEnd
		}
		return d
	case "past_due":
		since := a.PastDueSince
		if since.IsZero() {
			since = now
		}
		end := since.Add(grace)
		if now.Before(end) {
			return decision{want: wantRun, banner: BannerPastDue, graceEnds: end, reason: "payment failed; within the grace period"}
		}
		return decision{want: wantSuspend, banner: BannerSuspended, graceEnds: end, reason: "payment failed; the grace period is over"}
	case "unpaid", "paused":
		return decision{want: wantSuspend, banner: BannerSuspended, reason: "subscription " + a.Status}
	case "canceled":
		end := later(a.EndedAt, a.CurrentPeriodEnd)
		if end.IsZero() {
			end = now
		}
		if now.Before(end) {
			return decision{want: wantRun, banner: BannerEnding, suspendAt: end, reason: "subscription canceled; the period paid for is not over"}
		}
		retireAt := later(end, a.SuspendedAt).Add(retention)
		if now.Before(retireAt) {
			return decision{want: wantSuspend, banner: BannerSuspended, retireAt: retireAt, reason: "subscription canceled; the period is over"}
		}
		return decision{want: wantRetire, banner: BannerSuspended, retireAt: retireAt, reason: "subscription canceled; the retention period is over"}
	}
	return decision{want: wantNothing}
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// prefer reports whether subscription a, rather than b, should decide a
// customer's entitlement: one that is live beats one that is over, and
// between two of a kind the newer wins. This, not the order events
// arrive in, settles which subscription counts when a customer has had
// several (canceled, then subscribed again).
func prefer(a, b Subscription) bool {
	if la, lb := live(a.Status), live(b.Status); la != lb {
		return la
	}
	if !a.Created.Equal(b.Created) {
		return a.Created.After(b.Created)
	}
	return a.ID > b.ID
}
