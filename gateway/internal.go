package gateway

import (
	"net"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/slicehub/slicehub"
	"github.com/slicehub/slicehub/gateway/accounts"
	"github.com/slicehub/slicehub/gateway/wire"
)

// bootstrap hands a starting slice its credentials (database URL, gateway
// token). It is served only on the internal listener, which nginx never
// exposes; Slices.Bootstrap lets each allocation claim once, proven by its
// workload identity.
func (s *Server) bootstrap(c *fiber.Ctx) error {
	const op = "gateway.bootstrap"
	ip, _ := s.trusted.ClientAddr(c.Context())
	if err := accounts.Spend(op, s.bootstrapLimit, accounts.IPKey(ip)); err != nil {
		return err
	}
	var req slicehub.BootstrapRequest
	if err := wire.DecodeJSON(c, &req, s.cfg.InternalBodyLimit); err != nil {
		return err
	}
	if _, ok := slicehub.ParseSliceID(req.SliceID); !ok {
		return slicehub.Errorf(op, slicehub.KindInvalid, "invalid_slice_id", "slice_id must be a positive decimal integer")
	}
	if !validAllocID(req.AllocID) {
		return slicehub.Errorf(op, slicehub.KindInvalid, "invalid_alloc_id", "alloc_id is missing or malformed")
	}
	// The allocation's workload identity, which proves the caller is the
	// allocation (Slices.Bootstrap has Nomad verify it).
	if auth := c.Get(fiber.HeaderAuthorization); auth != "" {
		jwt, ok := strings.CutPrefix(auth, "Bearer ")
		if !ok || jwt == "" || len(jwt) > 8192 {
			return slicehub.Errorf(op, slicehub.KindInvalid, "invalid_identity", "Authorization must be Bearer <workload identity>")
		}
		req.Identity = jwt
	}
	ctx, cancel := s.acc.BackendContext(c)
	defer cancel()
	creds, err := s.deps.Slices.Bootstrap(ctx, req)
	if err != nil {
		return slicehub.Wrap(op, slicehub.KindInternal, err)
	}
	c.Set(fiber.HeaderCacheControl, "no-store")
	return c.JSON(creds)
}

// validAllocID accepts Nomad allocation ids (UUIDs) and nothing that could
// smuggle anything else into logs or queries.
func validAllocID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// internalReadTimeout bounds how long a slice may take to send its request.
const internalReadTimeout = 10 * time.Second

// ServeBootstrap serves the internal app on ln, restricted to the bootstrap
// endpoint: the listener slices reach (devenv's slice network, `make run`).
// /healthz, /readyz and /metrics stay on the internal listener, for
// operators and checks; a slice gets 404 for them here. (In production the
// edge's private listener plays this part: it forwards /internal/ only.)
func (s *Server) ServeBootstrap(ln net.Listener) error {
	return s.serve(s.internal, bootstrapListener{ln})
}

// bootstrapListener marks the connections of ServeBootstrap's listener.
type bootstrapListener struct{ net.Listener }

func (l bootstrapListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return bootstrapConn{c}, nil
}

type bootstrapConn struct{ net.Conn }

// bootstrapOnly answers 404 to anything but the bootstrap endpoint on a
// connection from ServeBootstrap's listener.
func (s *Server) bootstrapOnly(c *fiber.Ctx) error {
	if _, ok := c.Context().Conn().(bootstrapConn); ok && c.Path() != slicehub.BootstrapPath {
		return slicehub.Errorf("gateway.bootstrap_listener", slicehub.KindNotFound, "not_found", "not found")
	}
	return c.Next()
}
