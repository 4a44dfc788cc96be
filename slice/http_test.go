package slice_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/slicehub/slicehub"
	"github.com/slicehub/slicehub/slice"
)

const testToken = "0123456789abcdef0123456789abcdef"

// pingStore answers Ping with err and nothing else. It stands in for the
// database where a test is about routing and the token, not the CRM; the
// CRM itself is tested against PostgreSQL in integration_test.go.
type pingStore struct {
	slice.Store
	err error
}

func (p pingStore) Ping(context.Context) error { return p.err }

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// newHandler returns a ready handler for slice 42 backed by store.
func newHandler(t *testing.T, store slice.Store) *slice.Handler {
	t.Helper()
	state := slice.NewStateHolder()
	h := slice.NewHandler("42", state, quietLogger())
	sockets := slice.NewSockets("42", state, quietLogger())
	t.Cleanup(sockets.Close)
	h.SetSockets(sockets.Handler())
	if store != nil {
		h.SetReady(testToken, store)
	}
	return h
}

type answer struct {
	status int
	body   map[string]any
	header http.Header
	raw    string
}

func do(t *testing.T, h http.Handler, method, target string, header map[string]string, body string) answer {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req := httptest.NewRequest(method, target, rd)
	for k, v := range header {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	a := answer{status: rec.Code, header: rec.Header(), raw: rec.Body.String()}
	if strings.HasPrefix(rec.Header().Get("Content-Type"), "application/json") {
		if err := json.Unmarshal(rec.Body.Bytes(), &a.body); err != nil {
			t.Fatalf("%s %s: answer is not a JSON object: %v: %q", method, target, err, a.raw)
		}
	}
	return a
}

func TestGatewayToken(t *testing.T) {
	h := newHandler(t, pingStore{})
	paths := []string{"/api/whoami", "/api/status/state", "/api/contacts", "/api/contacts/1/notes", "/api/nope", "/socket.io/?EIO=4&transport=polling"}
	tokens := []struct {
		name    string
		header  map[string]string
		wantErr string
	}{
		{"missing", nil, "missing gateway token"},
		{"empty", map[string]string{slicehub.HeaderGatewayToken: ""}, "missing gateway token"},
		{"wrong same length", map[string]string{slicehub.HeaderGatewayToken: strings.Repeat("x", len(testToken))}, "invalid gateway token"},
		{"wrong prefix", map[string]string{slicehub.HeaderGatewayToken: testToken[:10]}, "invalid gateway token"},
		{"right plus suffix", map[string]string{slicehub.HeaderGatewayToken: testToken + "0"}, "invalid gateway token"},
	}
	for _, p := range paths {
		for _, tk := range tokens {
			t.Run(tk.name+" "+p, func(t *testing.T) {
				got := do(t, h, http.MethodGet, p, tk.header, "")
				if got.status != http.StatusUnauthorized || got.body["code"] != "unauthorized" || got.body["error"] != tk.wantErr {
					t.Fatalf("GET %s with %s token = %d %q, want 401 unauthorized %q", p, tk.name, got.status, got.raw, tk.wantErr)
				}
			})
		}
	}

	right := map[string]string{slicehub.HeaderGatewayToken: testToken}
	for _, c := range []struct {
		path string
		want int
	}{
		{"/api/whoami", 200},
		{"/api/status/state", 200},
		{"/api/nope", 404},
		{"/socket.io/?EIO=4&transport=polling", 200},
	} {
		t.Run("right "+c.path, func(t *testing.T) {
			got := do(t, h, http.MethodGet, c.path, right, "")
			if got.status != c.want {
				t.Fatalf("GET %s with the right token = %d %q, want %d", c.path, got.status, got.raw, c.want)
			}
		})
	}
	// The socket.io handshake answers an Engine.IO open packet.
	if got := do(t, h, http.MethodGet, "/socket.io/?EIO=4&transport=polling", right, ""); !strings.HasPrefix(got.raw, `0{"`) {
		t.Fatalf("socket.io handshake = %q, want an open packet 0{...}", got.raw)
	}
}

func TestHealthIsExempt(t *testing.T) {
	cases := []struct {
		name       string
		h          *slice.Handler
		header     map[string]string
		wantStatus int
		wantBody   string
	}{
		{"starting", newHandler(t, nil), nil, 503, "starting"},
		{"ok without token", newHandler(t, pingStore{}), nil, 200, "ok"},
		{"ok with a wrong token", newHandler(t, pingStore{}), map[string]string{slicehub.HeaderGatewayToken: "nope"}, 200, "ok"},
		{"database down", newHandler(t, pingStore{err: errors.New("connection refused")}), nil, 503, "unavailable"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := do(t, c.h, http.MethodGet, "/api/health", c.header, "")
			if got.status != c.wantStatus || got.body["status"] != c.wantBody || len(got.body) != 1 {
				t.Fatalf("GET /api/health = %d %q, want %d {\"status\":%q} and nothing else", got.status, got.raw, c.wantStatus, c.wantBody)
			}
		})
	}
	t.Run("other methods", func(t *testing.T) {
		got := do(t, newHandler(t, pingStore{}), http.MethodPost, "/api/health", nil, "")
		if got.status != http.StatusMethodNotAllowed {
			t.Fatalf("POST /api/health = %d, want 405", got.status)
		}
	})
}

func TestStartingRefusesEverythingElse(t *testing.T) {
	h := newHandler(t, nil)
	got := do(t, h, http.MethodGet, "/api/whoami", map[string]string{slicehub.HeaderGatewayToken: testToken}, "")
	if got.status != http.StatusServiceUnavailable || got.body["code"] != "starting" {
		t.Fatalf("GET /api/whoami before ready = %d %q, want 503 starting", got.status, got.raw)
	}
}

func TestNotFoundOutsideTheAPI(t *testing.T) {
	h := newHandler(t, pingStore{})
	for _, p := range []string{"/", "/index.html", "/apix", "/socket.iox", "/internal/v1/bootstrap"} {
		got := do(t, h, http.MethodGet, p, nil, "")
		if got.status != http.StatusNotFound || got.body["code"] != "not_found" {
			t.Errorf("GET %s = %d %q, want 404 not_found", p, got.status, got.raw)
		}
	}
}

func TestWhoami(t *testing.T) {
	h := newHandler(t, pingStore{})
	for _, user := range []string{"17", ""} {
		got := do(t, h, http.MethodGet, "/api/whoami", map[string]string{
			slicehub.HeaderGatewayToken: testToken, slicehub.HeaderUserID: user,
		}, "")
		if got.status != 200 || got.body["slice_id"] != "42" || got.body["user_id"] != user {
			t.Fatalf("GET /api/whoami as user %q = %d %q, want slice 42 user %q", user, got.status, got.raw, user)
		}
	}
	got := do(t, h, http.MethodPost, "/api/whoami", map[string]string{slicehub.HeaderGatewayToken: testToken}, "")
	if got.status != http.StatusMethodNotAllowed || got.header.Get("Allow") != "GET" {
		t.Fatalf("POST /api/whoami = %d Allow %q, want 405 Allow GET", got.status, got.header.Get("Allow"))
	}
}

func TestWAState(t *testing.T) {
	state := slice.NewStateHolder()
	h := slice.NewHandler("42", state, quietLogger())
	h.SetReady(testToken, pingStore{})
	auth := map[string]string{slicehub.HeaderGatewayToken: testToken}
	if got := do(t, h, http.MethodGet, "/api/status/state", auth, ""); got.body["state"] != slicehub.WAStarting {
		t.Fatalf("initial state = %q, want starting", got.raw)
	}
	if err := state.Set(slicehub.WAQR); err != nil {
		t.Fatal(err)
	}
	if got := do(t, h, http.MethodGet, "/api/status/state", auth, ""); got.body["state"] != slicehub.WAQR {
		t.Fatalf("state after Set(qr) = %q, want qr", got.raw)
	}
}

// TestCRMValidation covers every input the CRM refuses before it touches
// the database: the store has no pool, so a request that got past
// validation would panic.
func TestCRMValidation(t *testing.T) {
	h := newHandler(t, &slice.CRM{})
	jsonCT := map[string]string{slicehub.HeaderGatewayToken: testToken, "Content-Type": "application/json"}
	cases := []struct {
		name     string
		method   string
		path     string
		header   map[string]string
		body     string
		wantCode string
		want     int
	}{
		{"no content type", "POST", "/api/contacts", map[string]string{slicehub.HeaderGatewayToken: testToken}, `{"name":"a","phone":"12345"}`, "not_json", 400},
		{"form content type", "POST", "/api/contacts", map[string]string{slicehub.HeaderGatewayToken: testToken, "Content-Type": "application/x-www-form-urlencoded"}, `name=a`, "not_json", 400},
		{"empty body", "POST", "/api/contacts", jsonCT, ``, "empty_body", 400},
		{"malformed", "POST", "/api/contacts", jsonCT, `{"name":`, "malformed_json", 400},
		{"not an object", "POST", "/api/contacts", jsonCT, `[1,2]`, "invalid_field", 400},
		{"unknown field", "POST", "/api/contacts", jsonCT, `{"name":"a","phone":"12345","admin":true}`, "unknown_field", 400},
		{"wrong type", "POST", "/api/contacts", jsonCT, `{"name":1,"phone":"12345"}`, "invalid_field", 400},
		{"two objects", "POST", "/api/contacts", jsonCT, `{"name":"a","phone":"12345"}{}`, "malformed_json", 400},
		{"too large", "POST", "/api/contacts", jsonCT, `{"name":"` + strings.Repeat("a", 70<<10) + `"}`, "too_large", 413},
		{"missing name", "POST", "/api/contacts", jsonCT, `{"phone":"12345"}`, "invalid_name", 400},
		{"blank name", "POST", "/api/contacts", jsonCT, `{"name":"   ","phone":"12345"}`, "invalid_name", 400},
		{"long name", "POST", "/api/contacts", jsonCT, `{"name":"` + strings.Repeat("é", 201) + `","phone":"12345"}`, "invalid_name", 400},
		{"control char in name", "POST", "/api/contacts", jsonCT, `{"name":"a\u0007b","phone":"12345"}`, "invalid_name", 400},
		{"missing phone", "POST", "/api/contacts", jsonCT, `{"name":"Ana"}`, "invalid_phone", 400},
		{"letters in phone", "POST", "/api/contacts", jsonCT, `{"name":"Ana","phone":"555-CALL-NOW"}`, "invalid_phone", 400},
		{"plus inside phone", "POST", "/api/contacts", jsonCT, `{"name":"Ana","phone":"12+345678"}`, "invalid_phone", 400},
		{"short phone", "POST", "/api/contacts", jsonCT, `{"name":"Ana","phone":"+1 23"}`, "invalid_phone", 400},
		{"long phone", "POST", "/api/contacts", jsonCT, `{"name":"Ana","phone":"1234567890123456"}`, "invalid_phone", 400},
		{"empty note", "POST", "/api/contacts/1/notes", jsonCT, `{"body":" \n "}`, "invalid_body", 400},
		{"long note", "POST", "/api/contacts/1/notes", jsonCT, `{"body":"` + strings.Repeat("n", 10001) + `"}`, "invalid_body", 400},
		{"note unknown field", "POST", "/api/contacts/1/notes", jsonCT, `{"text":"hi"}`, "unknown_field", 400},
		{"id not a number", "GET", "/api/contacts/abc", jsonCT, ``, "invalid_id", 400},
		{"id zero", "GET", "/api/contacts/0", jsonCT, ``, "invalid_id", 400},
		{"id negative", "POST", "/api/contacts/-1/notes", jsonCT, `{"body":"hi"}`, "invalid_id", 400},
		{"id overflow", "GET", "/api/contacts/99999999999999999999/notes", jsonCT, ``, "invalid_id", 400},
		{"limit zero", "GET", "/api/contacts?limit=0", jsonCT, ``, "invalid_limit", 400},
		{"limit too big", "GET", "/api/contacts?limit=201", jsonCT, ``, "invalid_limit", 400},
		{"after negative", "GET", "/api/contacts?after=-5", jsonCT, ``, "invalid_after", 400},
		{"method", "DELETE", "/api/contacts/1", jsonCT, ``, "method_not_allowed", 405},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := do(t, h, c.method, c.path, c.header, c.body)
			if got.status != c.want || got.body["code"] != c.wantCode {
				t.Fatalf("%s %s %.60q = %d %q, want %d %s", c.method, c.path, c.body, got.status, got.raw, c.want, c.wantCode)
			}
			if msg, _ := got.body["error"].(string); msg == "" {
				t.Fatalf("%s %s: no error message in %q", c.method, c.path, got.raw)
			}
		})
	}
}

func TestStateHolder(t *testing.T) {
	h := slice.NewStateHolder()
	if err := h.Set("sleeping"); err == nil {
		t.Fatal(`Set("sleeping") = nil, want an error for an unknown state`)
	}
	var seen []string
	cancel := h.Subscribe(func(s string) { seen = append(seen, s) })
	for _, s := range []string{slicehub.WAQR, slicehub.WAQR, slicehub.WAConnected} {
		if err := h.Set(s); err != nil {
			t.Fatal(err)
		}
	}
	cancel()
	if err := h.Set(slicehub.WADisconnected); err != nil {
		t.Fatal(err)
	}
	if strings.Join(seen, ",") != "qr,connected" {
		t.Fatalf("subscriber saw %v, want [qr connected] (repeats dropped, nothing after cancel)", seen)
	}
	if h.State() != slicehub.WADisconnected {
		t.Fatalf("State() = %q, want disconnected", h.State())
	}
}

// TestConversationEndpointsWithoutStore: a store without conversations
// (and a slice without the stand-in) answers in JSON, never half: 503 for
// the data, 404 for the development phone, 405 for a wrong method.
func TestConversationEndpointsWithoutStore(t *testing.T) {
	h := newHandler(t, pingStore{})
	auth := map[string]string{slicehub.HeaderGatewayToken: testToken, "Content-Type": "application/json"}
	for _, c := range []struct {
		method, path, body string
		status             int
		code               string
	}{
		{"GET", "/api/chats", "", 503, "no_conversations"},
		{"GET", "/api/chats/1/messages", "", 503, "no_conversations"},
		{"POST", "/api/chats/1/messages", `{"body":"x","idempotency_key":"k"}`, 503, "no_conversations"},
		{"GET", "/api/search?q=x", "", 503, "no_conversations"},
		{"PATCH", "/api/contacts/1", `{"stage":"won"}`, 503, "no_conversations"},
		{"DELETE", "/api/chats/1", "", 405, "method_not_allowed"},
		{"GET", "/api/dev/phone/messages", "", 404, "not_found"},
		{"POST", "/api/dev/phone/messages", `{"from":"+15550001","body":"hi"}`, 404, "not_found"},
		{"GET", "/api/status/adapter", "", 404, "not_found"},
	} {
		a := do(t, h, c.method, c.path, auth, c.body)
		if a.status != c.status || a.body["code"] != c.code {
			t.Errorf("%s %s = %d %v, want %d %s", c.method, c.path, a.status, a.body, c.status, c.code)
		}
	}
	a := do(t, h, "GET", "/api/stages", auth, "")
	if stages, _ := a.body["stages"].([]any); a.status != 200 || len(stages) != 5 {
		t.Fatalf("GET /api/stages = %d %v, want the five stages", a.status, a.body)
	}
}
