package gateway

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/gofiber/fiber/v2"

	"github.com/slicehub/slicehub"
	"github.com/slicehub/slicehub/gateway/accounts"
)

func bearer(key string) map[string]string { return map[string]string{"Authorization": "Bearer " + key} }

// An admin makes a key with their session; the key then works on
// /admin/api/* only, for as long as it is not revoked and its owner stays
// an enabled admin.
func TestAdminKeys(t *testing.T) {
	e := newEnvSetup(t, func(s *Server) {
		s.Admin().Get("/api/whoami", func(c *fiber.Ctx) error {
			return c.JSON(fiber.Map{"admin": c.Locals(LocalsUserID), "key": c.Locals(LocalsAdminKeyID)})
		})
		s.Admin().Get("/dashboard", func(c *fiber.Ctx) error { return c.SendString("dashboard") })
	})
	boss := e.signup("boss@example.com")
	e.accounts.setAdmin("boss@example.com", true)
	e.srv.Invalidate(boss.id)
	plain := e.signup("plain@example.com")

	// Making a key needs an admin session, JSON and our own origin.
	if r := e.do(nil, "POST", "/admin/api/keys", `{"name":"ci"}`, jsonHeader); r.status != http.StatusUnauthorized {
		t.Fatalf("anonymous key creation: %d", r.status)
	}
	if r := e.do(plain.client, "POST", "/admin/api/keys", `{"name":"ci"}`, jsonHeader); r.status != http.StatusForbidden {
		t.Fatalf("non-admin key creation: %d", r.status)
	}
	cross := map[string]string{"Content-Type": "application/json", "Origin": "https://evil.example"}
	if r := e.do(boss.client, "POST", "/admin/api/keys", `{"name":"ci"}`, cross); r.status != http.StatusForbidden {
		t.Fatalf("cross-origin key creation: %d", r.status)
	}
	if r := e.do(boss.client, "POST", "/admin/api/keys", `{"name":""}`, jsonHeader); r.status != http.StatusBadRequest {
		t.Fatalf("empty name: %d", r.status)
	}
	r := e.do(boss.client, "POST", "/admin/api/keys", `{"name":"ops laptop"}`, jsonHeader)
	if r.status != http.StatusCreated || r.header.Get("Cache-Control") != "no-store" {
		t.Fatalf("create key: %d %s", r.status, r.body)
	}
	var made accounts.NewKey
	r.decode(t, &made)
	if !strings.HasPrefix(made.Key, slicehub.AdminKeyPrefix) || made.Name != "ops laptop" || made.CreatedBy != boss.id {
		t.Fatalf("made %+v", made)
	}

	// The key, with no cookie at all.
	r = e.do(nil, "GET", "/admin/api/whoami", "", bearer(made.Key))
	if r.status != http.StatusOK || !strings.Contains(string(r.body), `"admin":`+strconv.FormatInt(boss.id, 10)) ||
		!strings.Contains(string(r.body), `"key":`+strconv.FormatInt(made.ID, 10)) {
		t.Fatalf("key on /admin/api/whoami: %d %s", r.status, r.body)
	}
	// Listing never shows a key again.
	r = e.do(nil, "GET", "/admin/api/keys", "", bearer(made.Key))
	if r.status != http.StatusOK || strings.Contains(string(r.body), made.Key) || strings.Contains(string(r.body), `"key"`) {
		t.Fatalf("list: %d %s", r.status, r.body)
	}
	var list struct {
		Keys []json.RawMessage `json:"keys"`
	}
	r.decode(t, &list)
	if len(list.Keys) != 1 {
		t.Fatalf("list has %d keys", len(list.Keys))
	}

	// Outside /admin/api/ a key is nobody: not the admin pages, not the proxy.
	if r := e.do(nil, "GET", "/admin/dashboard", "", bearer(made.Key)); r.status != http.StatusUnauthorized {
		t.Errorf("key on /admin/dashboard: %d; want 401", r.status)
	}
	if r := e.do(nil, "GET", "/api/whoami", "", bearer(made.Key)); r.status != http.StatusUnauthorized {
		t.Errorf("key on /api/whoami: %d; want 401", r.status)
	}
	mid := len(made.Key) / 2
	other := "A"
	if made.Key[mid] == 'A' {
		other = "B"
	}
	forged := made.Key[:mid] + other + made.Key[mid+1:]
	for _, bad := range []string{"Bearer shk_nonsense", "Bearer " + forged, "Basic " + made.Key,
		"Bearer " + strings.TrimPrefix(made.Key, slicehub.AdminKeyPrefix)} {
		if r := e.do(nil, "GET", "/admin/api/whoami", "", map[string]string{"Authorization": bad}); r.status != http.StatusUnauthorized ||
			r.errorCode(t) != "invalid_key" {
			t.Errorf("Authorization %q: %d %s; want 401 invalid_key", bad, r.status, r.body)
		}
	}

	// An owner who is no longer an admin takes their keys down with them.
	e.accounts.setAdmin("boss@example.com", false)
	if r := e.do(nil, "GET", "/admin/api/whoami", "", bearer(made.Key)); r.status != http.StatusForbidden {
		t.Errorf("key of a demoted admin: %d; want 403", r.status)
	}
	e.accounts.setAdmin("boss@example.com", true)

	// Revoked: dead at once.
	if r := e.do(nil, "DELETE", "/admin/api/keys/"+strconv.FormatInt(made.ID, 10), "", bearer(made.Key)); r.status != http.StatusNoContent {
		t.Fatalf("revoke: %d %s", r.status, r.body)
	}
	if r := e.do(nil, "GET", "/admin/api/whoami", "", bearer(made.Key)); r.status != http.StatusUnauthorized {
		t.Errorf("revoked key: %d; want 401", r.status)
	}
	e.srv.Invalidate(boss.id)
	if r := e.do(boss.client, "DELETE", "/admin/api/keys/999", "", nil); r.status != http.StatusNotFound {
		t.Errorf("revoking an unknown key: %d; want 404", r.status)
	}
}

func TestNewAdminKeyShape(t *testing.T) {
	k, h := NewAdminKey()
	got, ok := accounts.ParseAdminKey(k)
	if !ok || string(got[:]) != string(h) || len(k) != len(slicehub.AdminKeyPrefix)+43 {
		t.Fatalf("key %q does not parse back to its hash", k)
	}
	if _, err := HashPassword("short", "a@example.com"); err == nil {
		t.Error("HashPassword accepted a weak password")
	}
	if hash, err := HashPassword("correct horse battery", "a@example.com"); err != nil || !strings.HasPrefix(hash, "$argon2id$") {
		t.Errorf("HashPassword: %q %v", hash, err)
	}
}
