package standin

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func call(t *testing.T, h http.Handler, method, path string, out any) int {
	t.Helper()
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest(method, path, nil))
	if out != nil && w.Code == 200 {
		if err := json.Unmarshal(w.Body.Bytes(), out); err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
	}
	return w.Code
}

// TestPairingByHTTP plays the page's and the phone's side of a pairing.
func TestPairingByHTTP(t *testing.T) {
	s := New(Options{Codes: 2, Refresh: time.Second, Logger: slog.New(slog.DiscardHandler)})
	if code := call(t, s, "GET", "/", nil); code != 200 {
		t.Fatalf("GET / = %d", code)
	}
	var p struct {
		Session string
		Codes   int
	}
	if call(t, s, "POST", "/pair", &p); p.Session == "" || p.Codes != 2 {
		t.Fatalf("POST /pair = %+v", p)
	}
	var c1, c2 struct{ Payload string }
	call(t, s, "GET", "/pair/code?session="+p.Session+"&n=1", &c1)
	call(t, s, "GET", "/pair/code?session="+p.Session+"&n=2", &c2)
	if c1.Payload == c2.Payload || !strings.HasPrefix(c1.Payload, PayloadPrefix) {
		t.Fatalf("codes %q and %q: want two different stand-in payloads", c1.Payload, c2.Payload)
	}
	if id, ok := SessionFromPayload(c2.Payload); !ok || id != p.Session {
		t.Fatalf("SessionFromPayload(%q) = %q, %v", c2.Payload, id, ok)
	}
	if code := call(t, s, "GET", "/qr.png?data="+c1.Payload, nil); code != 200 {
		t.Fatalf("GET /qr.png = %d", code)
	}
	var st struct{ Linked bool }
	if call(t, s, "GET", "/pair/status?session="+p.Session, &st); st.Linked {
		t.Fatal("linked before the scan")
	}
	if code := call(t, s, "POST", "/scan?payload="+c2.Payload, nil); code != http.StatusNoContent {
		t.Fatalf("POST /scan = %d", code)
	}
	if call(t, s, "GET", "/pair/status?session="+p.Session, &st); !st.Linked {
		t.Fatal("not linked after the scan")
	}
	if code := call(t, s, "POST", "/scan?session=unknown", nil); code != http.StatusNotFound {
		t.Fatalf("scan of an unknown session = %d, want 404", code)
	}
	var hb struct{ Status string }
	call(t, s, "GET", "/session?session="+p.Session, &hb)
	if hb.Status != "ok" {
		t.Fatalf("heartbeat %q", hb.Status)
	}
	call(t, s, "POST", "/phone?session="+p.Session+"&online=false", nil)
	if call(t, s, "GET", "/session?session="+p.Session, &hb); hb.Status != "offline" {
		t.Fatalf("heartbeat %q after the phone went offline", hb.Status)
	}
	_ = s.Unlink(p.Session)
	if call(t, s, "GET", "/session?session="+p.Session, &hb); hb.Status != "unlinked" {
		t.Fatalf("heartbeat %q after unlink", hb.Status)
	}
	// A session the server never saw (it restarted) is accepted: the proof
	// is in the browser.
	if call(t, s, "GET", "/session?session=from-before-a-restart", &hb); hb.Status != "ok" {
		t.Fatalf("heartbeat of an unknown session %q, want ok", hb.Status)
	}
	if got := s.Stats(); got.Pairings != 1 || got.Codes != 2 || got.Scans != 1 {
		t.Fatalf("stats %+v", got)
	}
}
