// Package report writes the dated markdown reports that `make bench`,
// `make chaos`, `make load` and `make scale` leave in docs/reports, with
// their charts as standalone SVG files beside them.
//
// The charts are drawn here, server-side and dependency-free: there is no
// npm on these machines, and an SVG file renders in any markdown viewer
// (GitHub, an editor's preview, a browser) without a script.
package report

import (
	"fmt"
	"html"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Bar is one bar of a bar chart. Mark, when set, draws a thin vertical
// line across the bar's row at that value: a target or a baseline.
type Bar struct {
	Label string
	Value float64
	Note  string // printed after the value, e.g. "84% of nginx"
	Mark  float64
}

// Bars draws a horizontal bar chart: one row per bar, scaled to the
// largest value (or mark), each labelled with its value and unit.
func Bars(title, unit string, bars []Bar) []byte {
	const (
		labelW = 190.0
		plotW  = 360.0
		valueW = 200.0
		rowH   = 26.0
		top    = 34.0
		bottom = 12.0
	)
	width := labelW + plotW + valueW
	height := top + rowH*float64(len(bars)) + bottom
	maxV := 0.0
	for _, b := range bars {
		maxV = math.Max(maxV, math.Max(b.Value, b.Mark))
	}
	if maxV <= 0 {
		maxV = 1
	}
	var sb strings.Builder
	header(&sb, width, height, title)
	for i, b := range bars {
		y := top + rowH*float64(i)
		w := plotW * math.Max(0, b.Value) / maxV
		fmt.Fprintf(&sb, `<text x="%.0f" y="%.1f" text-anchor="end" class="label">%s</text>`+"\n", labelW-8, y+rowH/2+4, esc(b.Label))
		fmt.Fprintf(&sb, `<rect x="%.0f" y="%.1f" width="%.1f" height="%.1f" class="bar bar%d"/>`+"\n", labelW, y+4, w, rowH-8, i%6)
		if b.Mark > 0 {
			x := labelW + plotW*b.Mark/maxV
			fmt.Fprintf(&sb, `<line x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f" class="mark"/>`+"\n", x, x, y+1, y+rowH-1)
		}
		v := Number(b.Value) + " " + unit
		if b.Note != "" {
			v += " · " + b.Note
		}
		fmt.Fprintf(&sb, `<text x="%.1f" y="%.1f" class="value">%s</text>`+"\n", labelW+w+6, y+rowH/2+4, esc(v))
	}
	sb.WriteString("</svg>\n")
	return []byte(sb.String())
}

// Point is one sample of a line chart.
type Point struct{ X, Y float64 }

// Series is one line of a line chart.
type Series struct {
	Name   string
	Points []Point
}

// Lines draws series against shared axes that start at zero, with a
// legend. xUnit and yUnit label the axes.
func Lines(title, xUnit, yUnit string, series []Series) []byte {
	const (
		left, right, top, bottom = 64.0, 150.0, 34.0, 40.0
		plotW, plotH             = 520.0, 220.0
	)
	width, height := left+plotW+right, top+plotH+bottom
	maxX, maxY := 0.0, 0.0
	for _, s := range series {
		for _, p := range s.Points {
			maxX, maxY = math.Max(maxX, p.X), math.Max(maxY, p.Y)
		}
	}
	maxX, maxY = niceCeil(maxX), niceCeil(maxY)
	var sb strings.Builder
	header(&sb, width, height, title)
	// Axes with four ticks each.
	fmt.Fprintf(&sb, `<line x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f" class="axis"/>`+"\n", left, top+plotH, left+plotW, top+plotH)
	fmt.Fprintf(&sb, `<line x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f" class="axis"/>`+"\n", left, top, left, top+plotH)
	for i := 0; i <= 4; i++ {
		fx, fy := float64(i)/4, float64(i)/4
		x, y := left+plotW*fx, top+plotH-plotH*fy
		fmt.Fprintf(&sb, `<text x="%.1f" y="%.1f" text-anchor="middle" class="tick">%s</text>`+"\n", x, top+plotH+16, esc(Number(maxX*fx)))
		fmt.Fprintf(&sb, `<text x="%.1f" y="%.1f" text-anchor="end" class="tick">%s</text>`+"\n", left-6, y+4, esc(Number(maxY*fy)))
		if i > 0 {
			fmt.Fprintf(&sb, `<line x1="%.0f" y1="%.1f" x2="%.0f" y2="%.1f" class="grid"/>`+"\n", left, y, left+plotW, y)
		}
	}
	fmt.Fprintf(&sb, `<text x="%.1f" y="%.1f" text-anchor="middle" class="label">%s</text>`+"\n", left+plotW/2, height-6, esc(xUnit))
	fmt.Fprintf(&sb, `<text x="14" y="%.1f" text-anchor="middle" transform="rotate(-90 14 %.1f)" class="label">%s</text>`+"\n", top+plotH/2, top+plotH/2, esc(yUnit))
	for i, s := range series {
		pts := append([]Point(nil), s.Points...)
		sort.Slice(pts, func(a, b int) bool { return pts[a].X < pts[b].X })
		var ps []string
		for _, p := range pts {
			ps = append(ps, fmt.Sprintf("%.1f,%.1f", left+plotW*p.X/maxX, top+plotH-plotH*p.Y/maxY))
		}
		if len(ps) == 1 {
			ps = append(ps, ps[0])
		}
		fmt.Fprintf(&sb, `<polyline points="%s" class="line line%d"/>`+"\n", strings.Join(ps, " "), i%6)
		ly := top + 14 + 18*float64(i)
		fmt.Fprintf(&sb, `<line x1="%.0f" x2="%.0f" y1="%.1f" y2="%.1f" class="line line%d"/>`+"\n", left+plotW+12, left+plotW+30, ly-4, ly-4, i%6)
		fmt.Fprintf(&sb, `<text x="%.0f" y="%.1f" class="label">%s</text>`+"\n", left+plotW+36, ly, esc(s.Name))
	}
	sb.WriteString("</svg>\n")
	return []byte(sb.String())
}

func header(sb *strings.Builder, w, h float64, title string) {
	fmt.Fprintf(sb, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" viewBox="0 0 %.0f %.0f" role="img" aria-label="%s">`+"\n", w, h, w, h, esc(title))
	sb.WriteString(`<style>
text{font:12px system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;fill:#222}
.title{font-size:14px;font-weight:600}.tick{fill:#666;font-size:11px}.value{fill:#333}
.axis{stroke:#888}.grid{stroke:#e4e4e4}.mark{stroke:#c00;stroke-width:2}
.line{fill:none;stroke-width:2}
.bar0{fill:#3b6ea8}.bar1{fill:#e08a2c}.bar2{fill:#4a9a5b}.bar3{fill:#b5484d}.bar4{fill:#7b5ea7}.bar5{fill:#5aa5b5}
.line0{stroke:#3b6ea8}.line1{stroke:#e08a2c}.line2{stroke:#4a9a5b}.line3{stroke:#b5484d}.line4{stroke:#7b5ea7}.line5{stroke:#5aa5b5}
</style>
<rect width="100%" height="100%" fill="#fff"/>
`)
	fmt.Fprintf(sb, `<text x="10" y="20" class="title">%s</text>`+"\n", esc(title))
}

// niceCeil rounds v up to 1, 2, 2.5 or 5 times a power of ten, so that
// axis ticks at quarters are round numbers.
func niceCeil(v float64) float64 {
	if v <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 2.5, 4, 5, 10} {
		if m*p >= v {
			return m * p
		}
	}
	return 10 * p
}

// Number prints v compactly: 35.9k, 1.2, 0.057, 1.4M.
func Number(v float64) string {
	a := math.Abs(v)
	switch {
	case a >= 1e6:
		return strconv.FormatFloat(v/1e6, 'f', 1, 64) + "M"
	case a >= 1e4:
		return strconv.FormatFloat(v/1e3, 'f', 1, 64) + "k"
	case a >= 100 || a == math.Trunc(a):
		return strconv.FormatFloat(v, 'f', 0, 64)
	case a >= 1:
		return strconv.FormatFloat(v, 'f', 2, 64)
	}
	return strconv.FormatFloat(v, 'g', 2, 64)
}

func esc(s string) string { return html.EscapeString(s) }

// Report is one dated report: markdown with charts beside it.
type Report struct {
	Kind   string // "bench", "chaos", "load", "scale": the file name's prefix
	Date   time.Time
	body   strings.Builder
	charts []chart
}

type chart struct {
	name string
	svg  []byte
}

// New starts a report of kind dated at (UTC).
func New(kind string, at time.Time) *Report {
	return &Report{Kind: kind, Date: at.UTC()}
}

// Printf appends markdown.
func (r *Report) Printf(format string, args ...any) { fmt.Fprintf(&r.body, format, args...) }

// Chart appends a chart: the SVG is written beside the report as
// <kind>-<date>-<name>.svg and linked from here as an image.
func (r *Report) Chart(name, alt string, svg []byte) {
	file := r.base() + "-" + name + ".svg"
	r.charts = append(r.charts, chart{file, svg})
	fmt.Fprintf(&r.body, "\n![%s](%s)\n\n", alt, file)
}

func (r *Report) base() string { return r.Kind + "-" + r.Date.Format("2006-01-02") }

// Markdown is the report's text so far.
func (r *Report) Markdown() string { return r.body.String() }

// Write puts the report and its charts in dir (created when missing) and
// returns the markdown file's path. A report of the same kind from the
// same day is replaced: the newest run of a day is the one that counts.
func (r *Report) Write(dir string) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	for _, c := range r.charts {
		if err := writeFile(filepath.Join(dir, c.name), c.svg); err != nil {
			return "", err
		}
	}
	path := filepath.Join(dir, r.base()+".md")
	return path, writeFile(path, []byte(r.body.String()))
}

// writeFile replaces path atomically, so a reader never sees half a report.
func writeFile(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".report-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// Dir is where reports live in the repository: docs/reports under root.
func Dir(root string) string { return filepath.Join(root, "docs", "reports") }
