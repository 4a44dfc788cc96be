package gateway

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"testing"
	"time"

	consulapi "github.com/hashicorp/consul/api"

	"github.com/slicehub/slicehub"
	"github.com/slicehub/slicehub/consul"
	"github.com/slicehub/slicehub/devenv"
	"github.com/slicehub/slicehub/gateway/accounts"
	"github.com/slicehub/slicehub/postgres"
)

// The proxy benchmark's "gw-real" row: the gateway with its real
// dependencies, sessions in PostgreSQL (production settings: a benchmark)
// and routes from Consul's catalog through consul.Routes, instead of the
// in-memory fakes of the other gateway rows. The stack is devenv's own,
// started by the benchmark: package gateway's tests start none.

// realDeps is the stack and what the gw-real child needs from it.
type realDeps struct {
	stack  *devenv.Stack
	dbURL  string
	consul string
	// consulToken is the gateway's least-privilege Consul token (ACLs are
	// on, as in production); allocID and addr the placement recorded for
	// the slice, which the route table requires (route provenance).
	consulToken   string
	allocID, addr string
	sliceID       int64
}

// startRealDeps starts PostgreSQL, Consul (and Nomad, which devenv always
// starts) with production PostgreSQL settings, creates the gateway's
// database, and registers the backend in Consul as slice 1's service, the
// way Nomad registers a slice (service id "_nomad-task-<alloc>-...").
func startRealDeps(b *testing.B, backend string) *realDeps {
	dir, err := os.MkdirTemp("", fmt.Sprintf("slicehub-test-%d-bench-", os.Getpid()))
	if err != nil {
		b.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil { // PostgreSQL runs as postgres
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	st, err := devenv.Start(ctx, devenv.Options{Dir: dir, NodeName: fmt.Sprintf("slicehub-test-%d-bench", os.Getpid()), Throwaway: true,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		os.RemoveAll(dir)
		b.Fatalf("starting PostgreSQL and Consul for gw-real: %v", err)
	}
	b.Cleanup(func() {
		if err := st.Stop(); err != nil {
			b.Errorf("stopping gw-real's stack: %v", err)
		}
		if err := devenv.RemoveDir(context.Background(), dir, nil); err != nil {
			b.Errorf("stopping gw-real's stack: %v", err)
		}
	})
	conn, err := postgres.Open(ctx, st.Postgres.URL, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		b.Fatal(err)
	}
	if _, err := conn.Pool.Exec(ctx, "CREATE DATABASE bench_gateway"); err != nil {
		b.Fatal(err)
	}
	conn.Close()
	d := &realDeps{stack: st, dbURL: st.Postgres.DatabaseURL("bench_gateway"), consul: st.Consul.Addr, consulToken: st.ACL.ConsulGateway, addr: backend, sliceID: 1}
	host, portStr, _ := net.SplitHostPort(backend)
	port, _ := strconv.Atoi(portStr)
	cc, err := st.Consul.Client()
	if err != nil {
		b.Fatal(err)
	}
	alloc := make([]byte, 16)
	_, _ = rand.Read(alloc)
	a := hex.EncodeToString(alloc)
	allocID := a[:8] + "-" + a[8:12] + "-" + a[12:16] + "-" + a[16:20] + "-" + a[20:]
	d.allocID = allocID
	// In the catalog, on a node of its own, not through the local agent:
	// the Nomad client that devenv starts deregisters every agent service
	// named "_nomad-task-..." that it did not place itself, once its
	// first minute (its deregistration probation) is over, and the route
	// went with it: gw-real answered 503 (no route: slice_starting) to
	// every request from then on, which was every open-loop request (nomad
	// v1.6.1 command/agent/consul/service_client.go, sync). Nomad syncs the local agent's services only, and Consul's
	// anti-entropy leaves another node's registrations alone.
	if _, err := cc.Catalog().Register(&consulapi.CatalogRegistration{
		Node: "slicehub-bench-backend", Address: host,
		Service: &consulapi.AgentService{
			ID: "_nomad-task-" + allocID + "-slice-http-http", Service: slicehub.ConsulService, Address: host, Port: port,
			Meta: map[string]string{slicehub.MetaSliceID: strconv.FormatInt(d.sliceID, 10)},
		},
	}, nil); err != nil {
		b.Fatal(err)
	}
	return d
}

// benchGatewayReal is the gw-real child: a gateway whose accounts,
// sessions and slices are in PostgreSQL and whose routes come from Consul.
func benchGatewayReal() error {
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	db, err := postgres.Open(ctx, os.Getenv("SLICEHUB_BENCH_DATABASE_URL"), log)
	if err != nil {
		return err
	}
	defer db.Close()
	if err := db.Migrate(ctx); err != nil {
		return err
	}
	u, err := db.CreateUser(ctx, "bench@example.com", "unused")
	if err != nil {
		return err
	}
	_, h := accounts.NewToken()
	tok := os.Getenv("SLICEHUB_BENCH_TOKEN")
	var ok bool
	if h, ok = accounts.ParseToken(tok); !ok {
		return fmt.Errorf("SLICEHUB_BENCH_TOKEN is not a session token")
	}
	if err := db.CreateSession(ctx, u.ID, h[:], time.Now().Add(24*time.Hour)); err != nil {
		return err
	}
	sl, err := db.CreateSlice(ctx, u.ID, "bench", "proxy benchmark")
	if err != nil {
		return err
	}
	if _, err := db.Pool.Exec(ctx, `UPDATE slices SET state = 'assigned', alloc_id = $2, alloc_addr = $3 WHERE id = $1`,
		sl.ID, os.Getenv("SLICEHUB_BENCH_ALLOC_ID"), os.Getenv("SLICEHUB_BENCH_ALLOC_ADDR")); err != nil {
		return err
	}
	if _, err := db.Pool.Exec(ctx, `INSERT INTO slice_secrets (slice_id, db_role, db_password, gateway_token) VALUES ($1, 'bench', 'bench', 'bench-token')`, sl.ID); err != nil {
		return err
	}
	want, _ := strconv.ParseInt(os.Getenv("SLICEHUB_BENCH_SLICE_ID"), 10, 64)
	if sl.ID != want {
		return fmt.Errorf("slice id %d, but Consul has the backend as slice %d", sl.ID, want)
	}
	cc, err := consul.NewClientWithToken(os.Getenv("SLICEHUB_BENCH_CONSUL"), os.Getenv("SLICEHUB_BENCH_CONSUL_TOKEN"), log)
	if err != nil {
		return err
	}
	routes := consul.NewRoutes(cc, slicehub.ConsulService, db, log)
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go routes.Run(rctx)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, ok := routes.Lookup(sl.ID); ok {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("slice %d never appeared in the route table", sl.ID)
		}
		time.Sleep(20 * time.Millisecond) // polling interval: the table has no wait-for-one-route call
	}
	srv := New(Config{Logger: log, Argon2: cheapArgon2}, Deps{Accounts: db, Slices: realSlices{db}, Routes: routes, Throttle: db})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	return serveChild(srv, ln, tok)
}

// realSlices is the slice side of the gateway on PostgreSQL alone: the
// proxy path reads a user's slice and its gateway token; claiming and
// bootstrapping (the scheduler's) are not part of the benchmark.
type realSlices struct{ *postgres.DB }

func (realSlices) Claim(context.Context, int64) (slicehub.Slice, error) {
	return slicehub.Slice{}, slicehub.Errorf("bench.claim", slicehub.KindUnavailable, "no_scheduler", "no scheduler in the benchmark")
}

func (realSlices) Bootstrap(context.Context, slicehub.BootstrapRequest) (slicehub.SliceCredentials, error) {
	return slicehub.SliceCredentials{}, slicehub.Errorf("bench.bootstrap", slicehub.KindUnavailable, "no_scheduler", "no scheduler in the benchmark")
}
