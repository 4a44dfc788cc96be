package slice_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/slicehub/slicehub/slice"
	"github.com/slicehub/slicehub/slice/standin"
	"github.com/slicehub/slicehub/testsupport"
)

// The figures of issue 14, measured on the real parts: a slice with real
// Chromium, the real adapter and real PostgreSQL, the stand-in playing
// WhatsApp. Each benchmark runs its measurement once (b.N is ignored past
// the first iteration: the setup is a linked WhatsApp account) and reports
// its figures as metrics. Run with
//
//	heavy go test -run '^$' -bench 'WhatsApp' -benchtime 1x ./slice/

// linkedSlice starts a slice on a stand-in with history h and links it; it
// returns when the history import is complete, with how long that took
// from the scan.
func linkedSlice(b *testing.B, h standin.History) (*runningSlice, *standin.Server, string, time.Duration) {
	sv := standin.New(standin.Options{Codes: 3, Refresh: 5 * time.Second, Logger: quietLogger(), History: h})
	ts := httptest.NewServer(sv)
	b.Cleanup(ts.Close)
	dbURL := testsupport.NewDatabase(b)
	cfg := waConfig(dbURL, filepath.Join(b.TempDir(), "42"), ts.URL+"/")
	rs := startSlice(b, cfg)
	testsupport.Eventually(b, time.Minute, "a QR code", func() (bool, error) {
		return sv.Scan("") == nil, nil
	})
	t0 := time.Now()
	conn, err := pgx.Connect(context.Background(), dbURL)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close(context.Background())
	testsupport.Eventually(b, 10*time.Minute, "the history imported", func() (bool, error) {
		var done bool
		err := conn.QueryRow(context.Background(), `SELECT history_done FROM sync_state`).Scan(&done)
		return err == nil && done, err
	})
	return rs, sv, dbURL, time.Since(t0)
}

// percentile of sorted durations.
func percentile(d []time.Duration, p float64) time.Duration {
	slices.Sort(d)
	i := int(float64(len(d)-1) * p)
	return d[i]
}

// rssKB is a process's resident set (VmRSS) in kB, 0 if unknown.
func rssKB(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n
		}
	}
	return 0
}

// chromiumRSSKB sums the RSS of the processes running Chromium on dir.
func chromiumRSSKB(dir string) int64 {
	want := "--user-data-dir=" + dir + " "
	entries, _ := os.ReadDir("/proc")
	var sum int64
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && strings.Contains(strings.ReplaceAll(string(b), "\x00", " ")+" ", want) {
			sum += rssKB(pid)
		}
	}
	return sum
}

// BenchmarkWhatsAppHistoryImport: 1,000 chats and 50,000 messages, from
// the scan to the last message stored, with the memory of the slice's
// process (here the test process, which hosts it) and of its Chromium.
func BenchmarkWhatsAppHistoryImport(b *testing.B) {
	rs, _, _, took := linkedSlice(b, standin.History{Chats: 1000, Messages: 50000})
	var cr chatsResp
	if rs.call(b, "GET", "/api/chats?limit=200", "", &cr); len(cr.Chats) != 200 {
		b.Fatalf("%d chats in the first page, want 200", len(cr.Chats))
	}
	b.ReportMetric(took.Seconds(), "import_s")
	b.ReportMetric(50000/took.Seconds(), "msgs/s")
	b.ReportMetric(float64(rssKB(os.Getpid()))/1024, "go_rss_MB")
	b.ReportMetric(float64(chromiumRSSKB(rs.profileDir))/1024, "chromium_rss_MB")
}

// BenchmarkWhatsAppLatency: an incoming message until it is on the socket
// (stored first, so GET /api/chats shows it), and a send (POST) until the
// phone has it; 200 of each, one at a time.
func BenchmarkWhatsAppLatency(b *testing.B) {
	rs, sv, _, _ := linkedSlice(b, standin.History{Chats: 10, Messages: 100})
	next := wsEvents(b, rs)
	const n = 200
	in := make([]time.Duration, 0, n)
	for i := 0; i < n; i++ {
		body := fmt.Sprintf("incoming %d", i)
		t0 := time.Now()
		if _, err := sv.Deliver("+15550001", "Ana", body); err != nil {
			b.Fatal(err)
		}
		next("message", `"`+body+`"`)
		in = append(in, time.Since(t0))
	}
	ana, ok := rs.chatByPhone(b, "+15550001")
	if !ok || ana.LastMessage == nil || ana.LastMessage.Body != fmt.Sprintf("incoming %d", n-1) {
		b.Fatalf("GET /api/chats after the socket event: %+v", ana)
	}
	out := make([]time.Duration, 0, n)
	for i := 0; i < n; i++ {
		t0 := time.Now()
		body := fmt.Sprintf(`{"body":"reply %d","idempotency_key":"bench-%d"}`, i, i)
		if st := rs.call(b, "POST", fmt.Sprintf("/api/chats/%d/messages", ana.ID), body, nil); st != 202 {
			b.Fatalf("POST = %d", st)
		}
		deadline := time.Now().Add(10 * time.Second)
		for len(sv.Sent()) < i+1 {
			if time.Now().After(deadline) {
				b.Fatalf("reply %d never reached the phone", i)
			}
			time.Sleep(time.Millisecond) // polling an in-process counter, not synchronising
		}
		out = append(out, time.Since(t0))
	}
	b.ReportMetric(float64(percentile(in, 0.5).Microseconds())/1000, "in_p50_ms")
	b.ReportMetric(float64(percentile(in, 0.99).Microseconds())/1000, "in_p99_ms")
	b.ReportMetric(float64(percentile(out, 0.5).Microseconds())/1000, "send_p50_ms")
	b.ReportMetric(float64(percentile(out, 0.99).Microseconds())/1000, "send_p99_ms")
}

// BenchmarkWhatsAppSearch: 100,000 messages in 1,000 chats (imported
// through the adapter), single words, word prefixes and phone prefixes,
// limit 50, through GET /api/search.
func BenchmarkWhatsAppSearch(b *testing.B) {
	rs, _, _, took := linkedSlice(b, standin.History{Chats: 1000, Messages: 100000})
	b.ReportMetric(took.Seconds(), "import_100k_s")
	queries := []string{"invoice", "delivery", "thanks", "paym", "meet", "tomorrow", "1999000", "+1999000042", "1999000004", "History 77", "istory 4", "12345"}
	// Round 0 warms the caches and is not counted; rounds 1..25 are.
	var lat []time.Duration
	for round := 0; round <= 25; round++ {
		for _, q := range queries {
			var res slice.SearchResult
			t0 := time.Now()
			if st := rs.call(b, "GET", "/api/search?limit=50&q="+strings.ReplaceAll(strings.ReplaceAll(q, "+", "%2B"), " ", "%20"), "", &res); st != 200 {
				b.Fatalf("search %q = %d", q, st)
			}
			if round > 0 {
				lat = append(lat, time.Since(t0))
			}
			if round == 0 && len(res.Messages)+len(res.Contacts) == 0 {
				b.Fatalf("search %q found nothing", q)
			}
		}
	}
	b.ReportMetric(float64(len(lat)), "queries")
	b.ReportMetric(float64(percentile(lat, 0.5).Microseconds())/1000, "p50_ms")
	b.ReportMetric(float64(percentile(lat, 0.99).Microseconds())/1000, "p99_ms")
}
