package scaletest_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	nomadapi "github.com/hashicorp/nomad/api"

	"github.com/slicehub/slicehub/consul"
	"github.com/slicehub/slicehub/jobs"
	"github.com/slicehub/slicehub/nomad"
	"github.com/slicehub/slicehub/postgres"
	"github.com/slicehub/slicehub/scheduler"
	"github.com/slicehub/slicehub/testsupport"
)

var envs atomic.Int64

// env is a pool of mock_driver slices on the package's two-node stack,
// under a parent job and Consul service named for the test.
type env struct {
	db     *postgres.DB
	nomad  *nomad.Client
	api    *nomadapi.Client
	routes *consul.Routes
	name   string
}

func newEnv(t testing.TB, vars map[string]string) *env {
	t.Helper()
	stack := testsupport.Stack(t)
	log := testsupport.Logger(t)
	ctx := context.Background()
	db, err := postgres.Open(ctx, testsupport.NewDatabase(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	if err := db.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	// Slice databases (wa_slice_<id>) and roles belong to the server, not
	// to the test's gateway database: each env gets its own range of ids.
	if _, err := db.Pool.Exec(ctx, fmt.Sprintf(`ALTER SEQUENCE slices_id_seq RESTART WITH %d`, envs.Add(1)*1_000_000)); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	name := "slice-t" + hex.EncodeToString(b)
	nc, err := nomad.New(stack.Nomad.Addr, log)
	if err != nil {
		t.Fatal(err)
	}
	nc.JobID = name
	cc, err := consul.NewClient(stack.Consul.Addr, log)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{db: db, nomad: nc, api: nc.API, name: name, routes: consul.NewRoutes(cc, name, db, log)}
	e.routes.WaitTime = 5 * time.Second
	rctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		e.routes.Run(rctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		e.purge(t)
	})
	all := map[string]string{"service_name": name, "restart_delay": "1s"}
	for k, v := range vars {
		all[k] = v
	}
	if err := nc.RegisterJob(ctx, jobs.SliceMock, all); err != nil {
		t.Fatal(err)
	}
	return e
}

// run runs the scheduler's loop until the test ends.
func (e *env) run(t testing.TB, s *scheduler.Scheduler) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
}

// purge removes every child and the parent job and waits until their
// allocations are terminal.
func (e *env) purge(t testing.TB) {
	// Thousands of children take minutes to stop (each deregistration
	// goes through Consul): the scale run needs the long bound.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	if err := e.nomad.Purge(ctx); err != nil {
		t.Logf("cleanup: %v", err)
	}
}
