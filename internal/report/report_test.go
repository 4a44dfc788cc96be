package report

import (
	"encoding/xml"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// wellFormed parses svg as XML to the end: a chart a viewer cannot parse
// shows as a broken image in the report.
func wellFormed(t *testing.T, svg []byte) {
	t.Helper()
	d := xml.NewDecoder(strings.NewReader(string(svg)))
	for {
		_, err := d.Token()
		if err == io.EOF {
			return
		}
		if err != nil {
			t.Fatalf("svg is not well-formed XML: %v\n%s", err, svg)
		}
	}
}

func TestBarsScaleToTheLargestValueAndEscapeLabels(t *testing.T) {
	svg := Bars("req/s <small>", "req/s", []Bar{
		{Label: "direct", Value: 200},
		{Label: "nginx & co", Value: 100, Mark: 150},
	})
	wellFormed(t, svg)
	s := string(svg)
	if !strings.Contains(s, `width="360.0"`) || !strings.Contains(s, `width="180.0"`) {
		t.Fatalf("bars are not scaled to the largest value (200 -> full 360 px, 100 -> 180 px):\n%s", s)
	}
	if !strings.Contains(s, "nginx &amp; co") || strings.Contains(s, "<small>") {
		t.Fatalf("labels are not escaped:\n%s", s)
	}
	if !strings.Contains(s, `class="mark"`) {
		t.Fatalf("the mark is missing:\n%s", s)
	}
}

func TestLinesDrawEverySeriesWithALegend(t *testing.T) {
	svg := Lines("fill", "s", "slices", []Series{
		{Name: "ready", Points: []Point{{0, 0}, {10, 500}, {20, 1000}}},
		{Name: "single", Points: []Point{{5, 5}}},
	})
	wellFormed(t, svg)
	s := string(svg)
	if strings.Count(s, "<polyline") != 2 || !strings.Contains(s, ">ready<") || !strings.Contains(s, ">single<") {
		t.Fatalf("want two lines with their names:\n%s", s)
	}
}

func TestNumber(t *testing.T) {
	for v, want := range map[float64]string{35912: "35.9k", 1.234: "1.23", 0.057: "0.057", 1.4e6: "1.4M", 300: "300", 7: "7"} {
		if got := Number(v); got != want {
			t.Errorf("Number(%v) = %q, want %q", v, got, want)
		}
	}
}

func TestWritePutsChartsBesideTheDatedReport(t *testing.T) {
	dir := t.TempDir()
	r := New("bench", time.Date(2026, 11, 25, 23, 0, 0, 0, time.UTC))
	r.Printf("# Bench\n")
	r.Chart("proxy", "proxy throughput", Bars("t", "u", []Bar{{Label: "a", Value: 1}}))
	path, err := r.Write(dir)
	if err != nil {
		t.Fatal(err)
	}
	if path != filepath.Join(dir, "bench-2026-11-25.md") {
		t.Fatalf("path = %s", path)
	}
	md, _ := os.ReadFile(path)
	if !strings.Contains(string(md), "](bench-2026-11-25-proxy.svg)") {
		t.Fatalf("the chart is not linked:\n%s", md)
	}
	svg, err := os.ReadFile(filepath.Join(dir, "bench-2026-11-25-proxy.svg"))
	if err != nil {
		t.Fatal(err)
	}
	wellFormed(t, svg)
}

func TestEnvironmentSaysWhatRan(t *testing.T) {
	m := ReadMachine()
	if m.CPUs < 1 || m.MemoryGiB <= 0 || m.Kernel == "unknown" {
		t.Errorf("ReadMachine: %+v; want CPUs, memory and kernel read from /proc", m)
	}
	for _, c := range []struct {
		pg   map[string]string
		err  error
		want string
	}{
		{map[string]string{"server_version": "15.9", "fsync": "on", "synchronous_commit": "on", "full_page_writes": "on"}, nil, "fsync=on, synchronous_commit=on, full_page_writes=on (production settings"},
		{map[string]string{"server_version": "15.9", "fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}, nil, "**not production settings**"},
		{map[string]string{"server_version": "15.9", "fsync": "on", "synchronous_commit": "off", "full_page_writes": "on"}, nil, "**not production settings**"},
		{nil, errors.New("refused"), "could not be read (refused)"},
	} {
		r := New("test", time.Now())
		r.Environment(m, c.pg, c.err)
		if !strings.Contains(r.Markdown(), c.want) {
			t.Errorf("Environment(%v, %v):\n%s\nwant it to contain %q", c.pg, c.err, r.Markdown(), c.want)
		}
	}
}
