package slice

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/slicehub/slicehub"
)

type okStore struct{ Store }

func (okStore) Ping(context.Context) error { return nil }

// scrape reads the slice's /api/metrics and returns the value of the
// governor's restarts{result}.
func scrape(t *testing.T, h http.Handler, token string) (status int, restarted float64) {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, "/api/metrics", nil)
	if token != "" {
		req.Header.Set(slicehub.HeaderGatewayToken, token)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		return rec.Code, 0
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(rec.Body.String()))
	if err != nil {
		t.Fatalf("/api/metrics is not Prometheus text: %v", err)
	}
	for _, m := range fams["slicehub_slice_governor_restarts_total"].GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == "result" && l.GetValue() == string(DecideRestart) {
				restarted = m.GetCounter().GetValue()
			}
		}
	}
	if _, ok := fams["slicehub_slice_memory_soft_bytes"]; !ok {
		t.Fatalf("no soft threshold gauge in /api/metrics:\n%s", rec.Body.String())
	}
	return rec.Code, restarted
}

// The slice's own /api/metrics: behind the gateway token, and a governor
// restart shows in its counter.
func TestMetricsEndpointCountsGovernorRestarts(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	h := NewHandler("42", NewStateHolder(), log)
	const token = "0123456789abcdef0123456789abcdef"
	h.SetReady(token, okStore{})
	if status, _ := scrape(t, h, ""); status != http.StatusUnauthorized {
		t.Fatalf("/api/metrics without the token: %d, want 401", status)
	}
	status, before := scrape(t, h, token)
	if status != http.StatusOK {
		t.Fatalf("/api/metrics with the token: %d", status)
	}
	v := NewGovernor(GovernorConfig{Soft: 1000}, func() (MemoryUsage, error) { return MemoryUsage{Anon: 2000}, nil },
		func() bool { return false }, func() error { return nil }, log)
	v.now = func() time.Time { return time.Date(2026, 12, 8, 0, 0, 0, 0, time.UTC) }
	if d := v.Tick(context.Background()); d != DecideRestart {
		t.Fatalf("Tick over the threshold = %q, want a restart", d)
	}
	if _, after := scrape(t, h, token); after != before+1 {
		t.Fatalf("restarts{restarted} %v -> %v after one restart; want +1", before, after)
	}
}
