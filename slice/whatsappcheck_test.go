package slice_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/slicehub/slicehub"
	"github.com/slicehub/slicehub/slice"
)

// The WhatsApp check answers Consul without a token, before bootstrap too,
// in Consul's terms (2xx passing, 429 warning, else critical) with the
// state in words as the output.
func TestWhatsAppCheckSaysTheStateInConsulsTerms(t *testing.T) {
	state := slice.NewStateHolder()
	h := slice.NewHandler("42", state, quietLogger()) // not ready: no token known
	path := slicehub.WhatsAppCheckPath
	cases := []struct {
		state, query string
		status       int
		words        string
	}{
		{slicehub.WAStarting, "", http.StatusTooManyRequests, "WhatsApp is starting"},
		{slicehub.WAQR, "", http.StatusTooManyRequests, "waits for a QR scan"},
		{slicehub.WAConnected, "", http.StatusOK, "WhatsApp connected"},
		{slicehub.WADisconnected, "?down_after=10m", http.StatusTooManyRequests, "critical after 10m0s"},
		{slicehub.WADisconnected, "", http.StatusTooManyRequests, "critical after 10m0s"}, // the default
		{slicehub.WADisconnected, "?down_after=0s", http.StatusServiceUnavailable, "over the 0s alert threshold"},
		{slicehub.WAFailed, "", http.StatusServiceUnavailable, "WhatsApp failed"},
	}
	for _, c := range cases {
		if err := state.Set(c.state); err != nil {
			t.Fatal(err)
		}
		got := do(t, h, http.MethodGet, path+c.query, nil, "")
		if got.status != c.status || !strings.Contains(got.raw, c.words) {
			t.Errorf("state %s, GET %s%s = %d %q; want %d with %q", c.state, path, c.query, got.status, got.raw, c.status, c.words)
		}
		if ct := got.header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
			t.Errorf("state %s: Content-Type %q, want text/plain (Consul shows the body as the output)", c.state, ct)
		}
	}
	if got := do(t, h, http.MethodHead, path, nil, ""); got.status != http.StatusServiceUnavailable {
		t.Errorf("HEAD while failed = %d, want 503", got.status)
	}
}

func TestWhatsAppCheckRefusesABadThreshold(t *testing.T) {
	h := slice.NewHandler("42", slice.NewStateHolder(), quietLogger())
	for _, q := range []string{"?down_after=soon", "?down_after=-1m", "?down_after=10"} {
		got := do(t, h, http.MethodGet, slicehub.WhatsAppCheckPath+q, nil, "")
		if got.status != http.StatusBadRequest || got.body["code"] != "invalid_down_after" {
			t.Errorf("GET %s = %d %v; want 400 invalid_down_after", q, got.status, got.body)
		}
	}
	got := do(t, h, http.MethodPost, slicehub.WhatsAppCheckPath, nil, "")
	if got.status != http.StatusMethodNotAllowed || got.body["code"] != "method_not_allowed" {
		t.Errorf("POST = %d %v; want 405 method_not_allowed", got.status, got.body)
	}
}
