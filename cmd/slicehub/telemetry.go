package main

import (
	"context"
	"fmt"
	"sort"
	"time"

	consulapi "github.com/hashicorp/consul/api"
	"github.com/slicehub/slicehub"
	"github.com/slicehub/slicehub/admin"
	"github.com/slicehub/slicehub/consul"
	"github.com/slicehub/slicehub/postgres"
	"github.com/slicehub/slicehub/telemetry"
)

// TelemetrySettings are the collector's and the alerts' settings.
type TelemetrySettings struct {
	Interval, Retention time.Duration
	AlertWebhookURL     string
	CapacityPercent     int
	MemoryPercent       int
	WhatsAppDown        time.Duration
	WarmEmpty           time.Duration
	GovernorRestarts    int
	GovernorWindow      time.Duration
}

// parseTelemetry reads the telemetry settings with parseConfig's helpers.
func parseTelemetry(get func(string) string, atoi func(string) int, dur func(string) time.Duration, errs *[]string) TelemetrySettings {
	t := TelemetrySettings{
		Interval: dur("telemetry-interval"), Retention: dur("telemetry-retention"),
		AlertWebhookURL: get("alert-webhook-url"),
		CapacityPercent: atoi("alert-capacity-percent"), MemoryPercent: atoi("alert-memory-percent"),
		WhatsAppDown: dur("alert-whatsapp-down"), WarmEmpty: dur("alert-warm-empty"),
		GovernorRestarts: atoi("alert-governor-restarts"), GovernorWindow: dur("alert-governor-window"),
	}
	for _, f := range []string{"alert-capacity-percent", "alert-memory-percent"} {
		if n := atoi(f); n > 100 {
			*errs = append(*errs, fmt.Sprintf("-%s: want a percentage from 0 (off) to 100, got %d", f, n))
		}
	}
	return t
}

// startTelemetry starts the telemetry collector and its alerts under a
// leader lock of their own: one replica collects, whichever it is, and a
// slow collection never delays the scheduler's reconcile. It needs the
// scheduler (capacity, the warm target), the route table and the database.
func (m *Main) startTelemetry(ctx context.Context, consulClient *consulapi.Client) {
	t := m.Config.Telemetry
	alerter := telemetry.NewAlerter(m.DB, t.AlertWebhookURL, nil, m.Log, nil)
	collector := telemetry.New(telemetry.Config{
		Interval:       t.Interval,
		Retention:      t.Retention,
		MemoryMaxBytes: int64(m.Config.SliceMemoryMaxMB) << 20,
		MinWarm:        m.Scheduler.MinWarm,
		Capacity:       m.Scheduler.Capacity,
		Checks: map[string]func(context.Context) error{
			"postgres": func(ctx context.Context) error { return m.DB.Pool.Ping(ctx) },
			"consul": func(ctx context.Context) error {
				_, err := consulClient.Status().LeaderWithQueryOptions((&consulapi.QueryOptions{}).WithContext(ctx))
				return err
			},
			// Nomad's status call takes no context, and its client retries:
			// bound the wait here so a dead Nomad cannot stall a collection.
			"nomad": func(ctx context.Context) error {
				return withContext(ctx, func() error { _, err := m.Nomad.API.Status().Leader(); return err })
			},
		},
		Rules: telemetry.Rules{
			CapacityPercent:   float64(t.CapacityPercent),
			MemoryPercent:     float64(t.MemoryPercent),
			WADisconnectedFor: t.WhatsAppDown,
			WarmEmptyFor:      t.WarmEmpty,
			GovernorRestarts:  t.GovernorRestarts,
			GovernorWindow:    t.GovernorWindow,
		},
		Logger:   m.Log,
		Registry: m.Registry,
	}, m.DB, m.Nomad, m.Routes, m.DB, alerter)
	m.goRun(func() { consul.Lead(ctx, consulClient, "slicehub/telemetry/leader", m.Log, collector.Run) })
	m.Log.Info("telemetry on", "interval", t.Interval, "retention", t.Retention, "alert_webhook", t.AlertWebhookURL != "")
}

// withContext runs fn and returns its error, or ctx's when ctx ends first.
func withContext(ctx context.Context, fn func() error) error {
	done := make(chan error, 1)
	go func() { done <- fn() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return slicehub.Wrap("telemetry.check", slicehub.KindUnavailable, ctx.Err())
	}
}

// secretOrWebhook is secretSetting plus the alert webhook, whose URL is its
// credential (Slack's carry the token in the path): -h must not print it.
func secretOrWebhook(env string) bool {
	return secretSetting(env) || env == "SLICEHUB_ALERT_WEBHOOK_URL"
}

// adminTelemetry is the dashboard's view of the telemetry tables (the
// admin.Telemetry interface): it answers from PostgreSQL only, never from
// Nomad, since the dashboard asks on every render.
type adminTelemetry struct {
	db *postgres.DB
	// fresh bounds LatestSlices: a slice not sampled for this long (stopped,
	// retired) has no current sample.
	fresh time.Duration
}

// AdminTelemetry returns the dashboard's telemetry source, for
// admin.Deps.Telemetry. It returns the concrete type so that a change of
// the dashboard's interface breaks the one line that plugs it in, not
// this file.
func (m *Main) AdminTelemetry() adminTelemetry {
	return adminTelemetry{db: m.DB, fresh: max(3*m.Config.Telemetry.Interval, 5*time.Minute)}
}

func (a adminTelemetry) LatestSlices(ctx context.Context) (map[int64]admin.SliceSample, error) {
	latest, err := a.db.LatestSlices(ctx, time.Now().Add(-a.fresh))
	if err != nil {
		return nil, err
	}
	out := make(map[int64]admin.SliceSample, len(latest))
	for _, s := range latest {
		out[s.SliceID] = admin.SliceSample{At: s.At, MemoryMB: mib(s.MemoryBytes), MemoryMaxMB: mib(s.MemoryMaxBytes),
			CPUPercent: s.CPUPercent, WhatsApp: s.WAState, Contacts: s.Contacts, Notes: s.Notes}
	}
	return out, nil
}

func (a adminTelemetry) SliceSeries(ctx context.Context, sliceID int64, since time.Time) (admin.Series, error) {
	series, err := a.db.SliceSeries(ctx, sliceID, since)
	if err != nil {
		return admin.Series{}, err
	}
	var out admin.Series
	for _, s := range series {
		out.MemoryMB = append(out.MemoryMB, admin.Point{At: s.At, Value: mib(s.MemoryBytes)})
		out.CPUPercent = append(out.CPUPercent, admin.Point{At: s.At, Value: s.CPUPercent})
	}
	return out, nil
}

func (a adminTelemetry) NodeSeries(ctx context.Context, since time.Time) (map[string]admin.Series, error) {
	series, err := a.db.NodeSeries(ctx, since)
	if err != nil {
		return nil, err
	}
	out := map[string]admin.Series{}
	for _, s := range series {
		ns := out[s.NodeID]
		ns.MemoryMB = append(ns.MemoryMB, admin.Point{At: s.At, Value: mib(s.MemoryUsed)})
		ns.CPUPercent = append(ns.CPUPercent, admin.Point{At: s.At, Value: s.CPUPercent})
		out[s.NodeID] = ns
	}
	return out, nil
}

func (a adminTelemetry) ActiveAlerts(ctx context.Context) ([]admin.Alert, error) {
	active, err := a.db.ActiveAlerts(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]admin.Alert, 0, len(active))
	for _, al := range active {
		out = append(out, admin.Alert{Rule: al.Rule, Severity: severity(al.Rule), Subject: al.Subject, Message: al.Message, Since: al.FiredAt})
	}
	// Most severe first, then oldest first (ActiveAlerts' order).
	sort.SliceStable(out, func(i, j int) bool { return out[i].Severity == "critical" && out[j].Severity != "critical" })
	return out, nil
}

// severity: critical when users are or will be refused service now.
func severity(rule string) string {
	switch rule {
	case telemetry.RuleUnreachable, telemetry.RuleSliceFailed, telemetry.RuleWarmPoolEmpty:
		return "critical"
	}
	return "warning"
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }
