package gateway

import (
	"github.com/gofiber/fiber/v2"

	"github.com/slicehub/slicehub"
)

// Public is the root router of the public app, for packages that serve
// paths of their own (billing: /billing/*). Add routes before serving:
// Fiber builds its route tree when it starts.
func (s *Server) Public() fiber.Router { return s.app }

// User returns the request's signed-in user, from the session cookie;
// KindUnauthorized without a valid session.
func (s *Server) User(c *fiber.Ctx) (slicehub.User, error) {
	sess, err := s.acc.Session(c)
	if err != nil {
		return slicehub.User{}, err
	}
	return sess.User, nil
}
