package admin

import (
	"fmt"
	"html/template"
	"strconv"
	"strings"
	"time"
)

// Template funcs: numbers and inline SVG.

// spark draws a series as an SVG polyline scaled to its own range. It
// returns nothing for fewer than two points: a line needs two.
func spark(points []Point, label string) template.HTML {
	const w, h = 120.0, 28.0
	if len(points) < 2 {
		return ""
	}
	points = downsample(points, int(w))
	lo, hi := points[0].Value, points[0].Value
	t0, t1 := points[0].At, points[len(points)-1].At
	for _, p := range points {
		lo, hi = min(lo, p.Value), max(hi, p.Value)
	}
	span := t1.Sub(t0).Seconds()
	var b strings.Builder
	for i, p := range points {
		x := w * float64(i) / float64(len(points)-1)
		if span > 0 {
			x = w * p.At.Sub(t0).Seconds() / span
		}
		y := h / 2
		if hi > lo {
			y = h - 2 - (h-4)*(p.Value-lo)/(hi-lo)
		}
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%.1f,%.1f", x, y)
	}
	last := points[len(points)-1].Value
	return template.HTML(fmt.Sprintf(`<svg class="spark" viewBox="0 0 %.0f %.0f" width="%.0f" height="%.0f" role="img" aria-label="%s">`+
		`<title>%s: %.1f (min %.1f, max %.1f)</title>`+
		`<polyline fill="none" stroke="currentColor" stroke-width="1.5" points="%s"/></svg>`,
		w, h, w, h, template.HTMLEscapeString(label), template.HTMLEscapeString(label), last, lo, hi, b.String()))
}

// downsample averages a long series into n buckets: a sparkline has no
// more pixels than that, and a day of minutely samples is 1440 points.
func downsample(points []Point, n int) []Point {
	if len(points) <= n {
		return points
	}
	out := make([]Point, 0, n)
	for i := range n {
		lo, hi := i*len(points)/n, (i+1)*len(points)/n
		sum := 0.0
		for _, p := range points[lo:hi] {
			sum += p.Value
		}
		out = append(out, Point{At: points[hi-1].At, Value: sum / float64(hi-lo)})
	}
	return out
}

// bar draws used out of total as an SVG bar; over 90% it turns red.
func bar(used, total int64) template.HTML {
	const w, h = 240.0, 14.0
	frac := 0.0
	if total > 0 {
		frac = min(1, max(0, float64(used)/float64(total)))
	}
	class := "ok"
	switch {
	case frac >= 0.9:
		class = "crit"
	case frac >= 0.75:
		class = "warn"
	}
	return template.HTML(fmt.Sprintf(`<svg class="bar %s" viewBox="0 0 %.0f %.0f" width="%.0f" height="%.0f" role="img" aria-label="%.0f%%">`+
		`<rect class="track" width="%.0f" height="%.0f" rx="3"/><rect class="fill" width="%.1f" height="%.0f" rx="3"/></svg>`,
		class, w, h, w, h, frac*100, w, h, frac*w, h))
}

// last is a series' newest value, what a chart's label shows.
func last(points []Point) float64 {
	if len(points) == 0 {
		return 0
	}
	return points[len(points)-1].Value
}

func pct(used, total int64) string {
	if total <= 0 {
		return "–"
	}
	return strconv.FormatFloat(100*float64(used)/float64(total), 'f', 0, 64) + "%"
}

func mb(v float64) string {
	if v >= 1024 {
		return strconv.FormatFloat(v/1024, 'f', 1, 64) + " GiB"
	}
	return strconv.FormatFloat(v, 'f', 0, 64) + " MiB"
}

// ago is a time as "3m ago"; the exact time is in the element's title.
func ago(t time.Time) string {
	if t.IsZero() {
		return "–"
	}
	d := time.Since(t)
	switch {
	case d < time.Minute:
		return "just now"
	case d < time.Hour:
		return strconv.Itoa(int(d/time.Minute)) + "m ago"
	case d < 48*time.Hour:
		return strconv.Itoa(int(d/time.Hour)) + "h ago"
	}
	return strconv.Itoa(int(d/(24*time.Hour))) + "d ago"
}
