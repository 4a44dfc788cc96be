package ops

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/slicehub/slicehub"
	"github.com/slicehub/slicehub/admin"
	"github.com/slicehub/slicehub/postgres"
	"github.com/slicehub/slicehub/testsupport"
)

// The commands that stream (logs, backup, restore) against the admin API
// mounted on a real listener, with the real PostgreSQL and Nomad of the
// test stack behind it. The gateway's admin guard is left out (it is
// tested in package gateway and admin): a stand-in puts admin 1 in the
// locals, as the guard would.

// apiEnv is one admin API over a fresh gateway database.
type apiEnv struct {
	url string // the admin API's base: http://127.0.0.1:port
	db  *postgres.DB
}

// noPool is the scheduler where a test needs none of it.
type noPool struct{ admin.Pool }

// statePool suspends and resumes by plain transitions, recording the
// calls: what the admin API asks of the scheduler around a restore (the
// scheduler's own operations are tested in package scheduler).
type statePool struct {
	admin.Pool
	db    *postgres.DB
	mu    sync.Mutex
	calls []string
}

func (p *statePool) move(ctx context.Context, id int64, from, to slicehub.SliceState, actor, call string) (slicehub.Slice, error) {
	p.mu.Lock()
	p.calls = append(p.calls, call)
	p.mu.Unlock()
	return p.db.Transition(ctx, id, slicehub.Change{From: []slicehub.SliceState{from}, To: to, Actor: actor, Reason: call})
}

func (p *statePool) Suspend(ctx context.Context, id int64, actor string) (slicehub.Slice, error) {
	return p.move(ctx, id, slicehub.StateAssigned, slicehub.StateSuspended, actor, "suspend")
}

func (p *statePool) Resume(ctx context.Context, id int64, actor string) (slicehub.Slice, error) {
	return p.move(ctx, id, slicehub.StateSuspended, slicehub.StateProvisioning, actor, "resume")
}

func (p *statePool) Calls() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.calls...)
}

type noRoutes struct{}

func (noRoutes) Lookup(int64) (slicehub.Route, bool) { return slicehub.Route{}, false }

func startAPI(t *testing.T, setup func(d *admin.Deps, db *postgres.DB)) apiEnv {
	t.Helper()
	ctx := t.Context()
	db, err := postgres.Open(ctx, testsupport.NewDatabase(t), testsupport.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	if err := db.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	// The gateway's body limit (gateway.Config.BodyLimit): a restore upload is
	// bounded by it until the gateway streams request bodies.
	app := fiber.New(fiber.Config{DisableStartupMessage: true, BodyLimit: 32 << 20, ErrorHandler: func(c *fiber.Ctx, err error) error {
		status := slicehub.KindOf(err).HTTPStatus()
		var fe *fiber.Error
		if errors.As(err, &fe) {
			status = fe.Code
		}
		return c.Status(status).JSON(fiber.Map{"error": slicehub.MessageOf(err), "code": slicehub.CodeOf(err)})
	}})
	group := app.Group("/admin", func(c *fiber.Ctx) error {
		c.Locals("uid", int64(1))
		return c.Next()
	})
	d := admin.Deps{Store: db, Pool: noPool{}, Routes: noRoutes{}, UserKey: "uid", KeyKey: "kid", Logger: testsupport.Logger(t)}
	if setup != nil {
		setup(&d, db)
	}
	admin.Register(group, d)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _ = app.Listener(ln) }()
	t.Cleanup(func() {
		if err := app.ShutdownWithTimeout(10 * time.Second); err != nil {
			t.Errorf("admin API shutdown: %v (a stream left open?)", err)
		}
		wg.Wait()
	})
	return apiEnv{url: "http://" + ln.Addr().String(), db: db}
}
