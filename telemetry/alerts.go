package telemetry

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"time"

	"github.com/slicehub/slicehub"
)

// Condition is a rule that holds now for a subject: what the checks found.
type Condition struct {
	Rule, Subject string
	Value         float64
	Message       string
	// For is how long the condition must hold before the alert fires, so
	// that a blip (a warm slice claimed and not yet replaced) stays quiet.
	For time.Duration
}

type alertKey struct{ rule, subject string }

// Alerter turns the conditions found at each evaluation into alerts: it
// fires an alert once when its condition has held for long enough, keeps
// it active (deduplicated by the store) while it holds, and resolves it
// when it no longer does, posting each firing and each resolution to the
// webhook. Only the leader's collector calls Evaluate, so its in-memory
// state needs no lock.
type Alerter struct {
	store   Store
	webhook string
	client  *http.Client
	log     *slog.Logger
	now     func() time.Time
	// pending is when each condition was first seen, for Condition.For.
	pending map[alertKey]time.Time
	// unstored are alerts sent while the store could not record them (the
	// PostgreSQL-unreachable alert, first of all): they are deduplicated
	// and resolved from memory.
	unstored map[alertKey]Alert
}

// NewAlerter returns an Alerter; webhook may be empty (alerts are then only
// stored and logged). now defaults to time.Now.
func NewAlerter(store Store, webhook string, client *http.Client, log *slog.Logger, now func() time.Time) *Alerter {
	if client == nil {
		client = &http.Client{Timeout: 10 * time.Second}
	}
	if log == nil {
		log = slog.Default()
	}
	if now == nil {
		now = time.Now
	}
	return &Alerter{store: store, webhook: webhook, client: client, log: log.With("component", "alerts"), now: now,
		pending: map[alertKey]time.Time{}, unstored: map[alertKey]Alert{}}
}

// Evaluate applies one round of checks. rules names the rules that were
// evaluated this round: an active alert of a rule not in it is left alone,
// since a check that could not run (its dependency down) proves nothing.
func (a *Alerter) Evaluate(ctx context.Context, rules []string, conds []Condition) {
	now := a.now()
	evaluated := map[string]bool{}
	for _, r := range rules {
		evaluated[r] = true
	}
	holding := map[alertKey]Condition{}
	for _, c := range conds {
		evaluated[c.Rule] = true
		holding[alertKey{c.Rule, c.Subject}] = c
	}
	for k := range a.pending {
		if _, ok := holding[k]; !ok && evaluated[k.rule] {
			delete(a.pending, k)
		}
	}
	for k, c := range holding {
		first, seen := a.pending[k]
		if !seen {
			first = now
			a.pending[k] = now
		}
		if now.Sub(first) < c.For {
			continue
		}
		a.fire(ctx, k, Alert{Rule: c.Rule, Subject: c.Subject, Message: c.Message, FiredAt: now, LastValue: c.Value})
	}
	// Resolve what no longer holds: from the store, and from memory.
	if active, err := a.store.ActiveAlerts(ctx); err != nil {
		a.log.Warn("cannot read the active alerts; resolving from memory only", "err", err)
	} else {
		for _, al := range active {
			k := alertKey{al.Rule, al.Subject}
			if _, ok := holding[k]; ok || !evaluated[k.rule] {
				continue
			}
			r, ok, err := a.store.ResolveAlert(ctx, al.Rule, al.Subject, now, al.LastValue)
			if err != nil {
				a.log.Warn("cannot resolve an alert", "rule", al.Rule, "subject", al.Subject, "err", err)
				continue
			}
			delete(a.unstored, k)
			if ok {
				a.log.Info("alert resolved", "rule", r.Rule, "subject", r.Subject)
				a.notify(ctx, resolvedText(r, now))
			}
		}
	}
	for k, al := range a.unstored {
		if _, ok := holding[k]; ok || !evaluated[k.rule] {
			continue
		}
		delete(a.unstored, k)
		a.log.Info("alert resolved", "rule", al.Rule, "subject", al.Subject)
		a.notify(ctx, resolvedText(al, now))
	}
}

// fire records and sends an alert unless it is active already.
func (a *Alerter) fire(ctx context.Context, k alertKey, al Alert) {
	fired, err := a.store.FireAlert(ctx, al)
	if err != nil {
		if _, sent := a.unstored[k]; sent {
			return
		}
		a.log.Warn("cannot record an alert; sending it anyway", "rule", al.Rule, "subject", al.Subject, "err", err)
		a.unstored[k] = al
		a.log.Error("alert fired", "rule", al.Rule, "subject", al.Subject, "value", al.LastValue, "message", al.Message)
		a.notify(ctx, firingText(al))
		return
	}
	if _, sent := a.unstored[k]; sent {
		// Sent while the store was away; now recorded, it is not sent twice.
		delete(a.unstored, k)
		return
	}
	if !fired {
		return
	}
	a.log.Error("alert fired", "rule", al.Rule, "subject", al.Subject, "value", al.LastValue, "message", al.Message)
	a.notify(ctx, firingText(al))
}

func firingText(a Alert) string {
	return fmt.Sprintf(":rotating_light: [FIRING] %s %s: %s", a.Rule, a.Subject, a.Message)
}

func resolvedText(a Alert, at time.Time) string {
	return fmt.Sprintf(":white_check_mark: [RESOLVED] %s %s (after %s): %s", a.Rule, a.Subject,
		at.Sub(a.FiredAt).Round(time.Second), a.Message)
}

// notify posts Slack-compatible JSON ({"text": ...}) to the webhook. A
// failure is logged and not retried: the alert stays in the store and on
// the dashboard's banner either way.
func (a *Alerter) notify(ctx context.Context, text string) {
	if a.webhook == "" {
		return
	}
	const op = "telemetry.notify"
	body, _ := json.Marshal(map[string]string{"text": text})
	err := func() error {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, a.webhook, bytes.NewReader(body))
		if err != nil {
			return slicehub.Wrap(op, slicehub.KindInvalid, err)
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := a.client.Do(req)
		if err != nil {
			// A *url.Error quotes the URL, which may carry a secret
			// (Slack's do): keep only the cause.
			var ue *url.Error
			if errors.As(err, &ue) {
				err = ue.Err
			}
			return slicehub.Wrap(op, slicehub.KindUnavailable, err)
		}
		resp.Body.Close()
		if resp.StatusCode/100 != 2 {
			return slicehub.Errorf(op, slicehub.KindUnavailable, "", "webhook answered %d", resp.StatusCode)
		}
		return nil
	}()
	if err != nil {
		a.log.Warn("alert webhook failed", "err", err)
	}
}
