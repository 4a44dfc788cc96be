package accounts

import (
	"net/http"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/gofiber/fiber/v2"

	"github.com/slicehub/slicehub"
	"github.com/slicehub/slicehub/gateway/wire"
)

// Admin API keys let the ops CLI call /admin/api/* without a browser
// session. A key is "shk_" and 256 random bits (base64url); the database
// keeps its SHA-256 only, and the key is shown once, when it is made. Keys
// are looked up on every request, not cached: the admin API is low traffic,
// and a revoked key must stop at once on every replica.

const adminKeyPrefix = slicehub.AdminKeyPrefix

var errBadAdminKey = slicehub.Errorf("gateway.admin_key", slicehub.KindUnauthorized, "invalid_key",
	"the API key is not valid")

// ParseAdminKey checks a key's shape before anything touches the database.
func ParseAdminKey(key string) (TokenHash, bool) {
	tok, ok := strings.CutPrefix(key, adminKeyPrefix)
	if !ok {
		return TokenHash{}, false
	}
	return ParseToken(tok)
}

func isAdminAPIPath(p string) bool { return p == "/admin/api" || strings.HasPrefix(p, "/admin/api/") }

// requireAdminKey authenticates a request by its admin API key. A key
// acts for the admin who made it, and only while that account is an
// enabled admin.
func (s *Service) requireAdminKey(c *fiber.Ctx, auth string) error {
	const op = "gateway.admin_key"
	scheme, key, _ := strings.Cut(auth, " ")
	ip, _ := s.trusted.ClientAddr(c.Context())
	ipk := IPKey(ip)
	// Unknown keys cost a query each, so they spend the same per-address
	// budget as unknown session cookies.
	if d := s.BadSession.Wait(ipk); d > 0 {
		return RateLimited(op, d)
	}
	h, ok := ParseAdminKey(strings.TrimSpace(key))
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		s.BadSession.Take(ipk)
		return errBadAdminKey
	}
	ctx, cancel := s.BackendContext(c)
	defer cancel()
	u, k, err := s.store.AdminKeyUser(ctx, h[:])
	switch {
	case err == nil:
	case slicehub.KindOf(err) == slicehub.KindUnauthorized || slicehub.KindOf(err) == slicehub.KindNotFound:
		s.BadSession.Take(ipk)
		return errBadAdminKey
	default:
		return slicehub.Wrap(op, slicehub.KindInternal, err)
	}
	if !u.IsAdmin || u.DisabledAt != nil {
		return slicehub.Errorf(op, slicehub.KindForbidden, "forbidden", "the key's owner is no longer an admin")
	}
	c.Locals(LocalsUserID, u.ID)
	c.Locals(LocalsAdminKeyID, k.ID)
	return c.Next()
}

// AdminKeyRoutes serves the admin API keys under admin, the /admin
// router behind RequireAdmin.
func (s *Service) AdminKeyRoutes(admin fiber.Router) {
	admin.Get("/api/keys", s.listAdminKeys)
	admin.Post("/api/keys", s.createAdminKey)
	admin.Delete("/api/keys/:id", s.revokeAdminKey)
}

// adminActor names who acted, for the log: the admin and, if any, the key.
func adminActor(c *fiber.Ctx) []any {
	attrs := []any{"admin_id", c.Locals(LocalsUserID)}
	if id, ok := c.Locals(LocalsAdminKeyID).(int64); ok {
		attrs = append(attrs, "via_key", id)
	}
	return attrs
}

// NewKey answers a key's creation.
type NewKey struct {
	slicehub.AdminKey
	// Key is shown this once and never again.
	Key string `json:"key"`
}

func (s *Service) createAdminKey(c *fiber.Ctx) error {
	const op = "gateway.create_admin_key"
	if err := s.origins.CheckJSON(c); err != nil {
		return err
	}
	var in struct {
		Name string `json:"name"`
	}
	if err := wire.DecodeJSON(c, &in, s.cfg.AuthBodyLimit); err != nil {
		return err
	}
	name := strings.TrimSpace(in.Name)
	if !validKeyName(name) {
		return slicehub.Errorf(op, slicehub.KindInvalid, "invalid_name", "name must be 1 to 100 printable characters")
	}
	key, hash := slicehub.NewAdminKey()
	ctx, cancel := s.BackendContext(c)
	defer cancel()
	k, err := s.store.CreateAdminKey(ctx, name, hash, c.Locals(LocalsUserID).(int64))
	if err != nil {
		return slicehub.Wrap(op, slicehub.KindInternal, err)
	}
	s.log.Info("admin key created", append([]any{"key_id", k.ID, "name", k.Name}, adminActor(c)...)...)
	c.Set(fiber.HeaderCacheControl, "no-store")
	return c.Status(http.StatusCreated).JSON(NewKey{AdminKey: k, Key: key})
}

func validKeyName(name string) bool {
	if name == "" || utf8.RuneCountInString(name) > 100 || !utf8.ValidString(name) {
		return false
	}
	for _, r := range name {
		if !unicode.IsPrint(r) {
			return false
		}
	}
	return true
}

func (s *Service) listAdminKeys(c *fiber.Ctx) error {
	const op = "gateway.admin_keys"
	ctx, cancel := s.BackendContext(c)
	defer cancel()
	keys, err := s.store.AdminKeys(ctx)
	if err != nil {
		return slicehub.Wrap(op, slicehub.KindInternal, err)
	}
	c.Set(fiber.HeaderCacheControl, "no-store")
	return c.JSON(fiber.Map{"keys": keys})
}

func (s *Service) revokeAdminKey(c *fiber.Ctx) error {
	const op = "gateway.revoke_admin_key"
	id, err := strconv.ParseInt(c.Params("id"), 10, 64)
	if err != nil || id <= 0 {
		return slicehub.Errorf(op, slicehub.KindInvalid, "invalid_id", "the key id must be a positive integer")
	}
	ctx, cancel := s.BackendContext(c)
	defer cancel()
	if err := s.store.RevokeAdminKey(ctx, id); err != nil {
		return slicehub.Wrap(op, slicehub.KindInternal, err)
	}
	s.log.Info("admin key revoked", append([]any{"key_id", id}, adminActor(c)...)...)
	return c.SendStatus(http.StatusNoContent)
}
