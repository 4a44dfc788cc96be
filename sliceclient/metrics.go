package sliceclient

import (
	"bytes"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Metrics is what a slice's GET /api/metrics (Prometheus text) says of its
// memory governor: its cgroup's memory by kind, in bytes, and its restart
// counts by result (restarted, deferred_busy, suppressed_loop).
type Metrics struct {
	Anon, Shmem, File float64
	Restarts          map[string]int64
}

// ParseMetrics reads a slice's /api/metrics body. The slice is not trusted:
// an unparsable body is an error, and names or labels other than these are
// ignored.
func ParseMetrics(body []byte) (Metrics, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		return Metrics{}, err
	}
	m := Metrics{Restarts: map[string]int64{}}
	for _, x := range fams["slicehub_slice_cgroup_memory_bytes"].GetMetric() {
		v := x.GetGauge().GetValue()
		switch label(x.GetLabel(), "kind") {
		case "anon":
			m.Anon += v
		case "shmem":
			m.Shmem += v
		case "file":
			m.File += v
		}
	}
	for _, x := range fams["slicehub_slice_governor_restarts_total"].GetMetric() {
		if r := label(x.GetLabel(), "result"); r != "" {
			m.Restarts[r] += int64(x.GetCounter().GetValue())
		}
	}
	return m, nil
}

func label(ls []*dto.LabelPair, name string) string {
	for _, l := range ls {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}
