package jobs_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/gofiber/fiber/v2"
	nomadapi "github.com/hashicorp/nomad/api"

	"github.com/slicehub/slicehub"
	"github.com/slicehub/slicehub/admin"
	slicenomad "github.com/slicehub/slicehub/nomad"
	"github.com/slicehub/slicehub/ops"
	"github.com/slicehub/slicehub/postgres"
	"github.com/slicehub/slicehub/testsupport"
)

type noPool struct{ admin.Pool }

type noRoutes struct{}

func (noRoutes) Lookup(int64) (slicehub.Route, bool) { return slicehub.Route{}, false }

// slicectlLogs returns a function that runs `slicectl slices logs ID
// --stderr` for a slice whose Nomad job is jobID, against an admin API
// (its own database, no gateway) reading logs from nc as the gateway does.
func slicectlLogs(t *testing.T, nc *nomadapi.Client, jobID string) func() (string, error) {
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
	sl, err := db.CreateSlice(ctx, 0, "test", "a docker slice")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Pool.Exec(ctx, `UPDATE slices SET job_id = $1 WHERE id = $2`, jobID, sl.ID); err != nil {
		t.Fatal(err)
	}
	app := fiber.New(fiber.Config{DisableStartupMessage: true})
	group := app.Group("/admin", func(c *fiber.Ctx) error {
		c.Locals("uid", int64(1))
		return c.Next()
	})
	admin.Register(group, admin.Deps{Store: db, Pool: noPool{}, Routes: noRoutes{}, UserKey: "uid", KeyKey: "kid",
		Logger: testsupport.Logger(t), Logs: &slicenomad.Client{API: nc}})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _ = app.Listener(ln) }()
	t.Cleanup(func() {
		_ = app.ShutdownWithTimeout(10 * time.Second)
		wg.Wait()
	})
	url := "http://" + ln.Addr().String()
	return func() (string, error) {
		var out, errb bytes.Buffer
		cctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		if code := ops.Execute(cctx, []string{"--gateway", url, "--key", "shk_test", "slices", "logs", fmt.Sprint(sl.ID), "--stderr"}, &out, &errb); code != 0 {
			return "", fmt.Errorf("slicectl slices logs: exit %d: %s", code, errb.String())
		}
		return out.String(), nil
	}
}
