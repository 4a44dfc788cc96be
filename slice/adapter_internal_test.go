package slice

import (
	"log/slog"
	"testing"
	"time"

	"github.com/slicehub/slicehub"
)

// TestAdapterAdjust: a connected page whose adapter is not ready becomes
// "degraded" when the adapter says what is missing, or after the grace
// period without a word; other states pass through.
func TestAdapterAdjust(t *testing.T) {
	now := time.Unix(1000, 0)
	a := NewAdapter("", slog.New(slog.DiscardHandler))
	a.now = func() time.Time { return now }
	steps := []struct {
		name    string
		advance time.Duration
		setup   func()
		in      string
		want    string
	}{
		{"qr passes", 0, nil, slicehub.WAQR, slicehub.WAQR},
		{"connected within the grace", 0, nil, slicehub.WAConnected, slicehub.WAConnected},
		{"still within", adapterGrace - time.Second, nil, slicehub.WAConnected, slicehub.WAConnected},
		{"grace over, no word", 2 * time.Second, nil, slicehub.WAConnected, slicehub.WADegraded},
		{"adapter ready", 0, func() { a.mu.Lock(); a.ready = true; a.mu.Unlock() }, slicehub.WAConnected, slicehub.WAConnected},
		{"modules missing, just connected", 0, func() { a.mu.Lock(); a.ready, a.missing = false, []string{"WAWebCollections"}; a.mu.Unlock() }, slicehub.WAConnected, slicehub.WAConnected},
		{"modules still missing", missingGrace + time.Second, nil, slicehub.WAConnected, slicehub.WADegraded},
		{"disconnected passes", 0, nil, slicehub.WADisconnected, slicehub.WADisconnected},
	}
	for _, s := range steps {
		now = now.Add(s.advance)
		if s.setup != nil {
			s.setup()
		}
		if got := a.Adjust(s.in); got != s.want {
			t.Fatalf("%s: Adjust(%s) = %s, want %s", s.name, s.in, got, s.want)
		}
	}
	if st := a.Status(); st.Degraded {
		t.Fatalf("status %+v after a disconnected page, want not degraded", st)
	}
}

func TestStatusFromAckAndPhone(t *testing.T) {
	for ack, want := range map[int]string{-1: StatusFailed, 0: StatusPending, 1: StatusSent, 2: StatusDelivered, 3: StatusRead, 4: StatusRead} {
		if got := statusFromAck(ack); got != want {
			t.Errorf("statusFromAck(%d) = %s, want %s", ack, got, want)
		}
	}
	for in, want := range map[string]string{
		"15550001@c.us": "+15550001", "120363041234567890@g.us": "", "status@broadcast": "", "12@c.us": "", "": "",
	} {
		if got := phoneOfWA(in); got != want {
			t.Errorf("phoneOfWA(%q) = %q, want %q", in, got, want)
		}
	}
	if got := searchTerms("Hello, +1 (555) wörld!"); len(got) != 4 || got[0] != "hello" || got[3] != "wörld" {
		t.Errorf("searchTerms = %q", got)
	}
}
