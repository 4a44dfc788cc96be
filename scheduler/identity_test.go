package scheduler_test

import (
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	nomadapi "github.com/hashicorp/nomad/api"
	"github.com/jackc/pgx/v5"

	"github.com/slicehub/slicehub"
	"github.com/slicehub/slicehub/scheduler"
	"github.com/slicehub/slicehub/testsupport"
)

// Bootstrap bound to the allocation, on real Nomad (ACLs on) with the real
// slice binary: the slice proves itself with its workload identity; an
// allocation id alone, a forged identity, a replayed one and the identity
// of an allocation that ended get nothing; every new allocation gets a new
// gateway token and database password, and the old sessions end.
func TestRealBootstrapIsBoundToTheAllocation(t *testing.T) {
	r := newRealEnv(t)
	var s *scheduler.Scheduler
	srv := bootstrapServer(t, &s)
	r.registerRaw(t, sliceBinary(t), srv.URL)
	m := scheduler.NewMetrics(nil)
	s = r.scheduler(t, scheduler.Config{MinWarm: 1, MaxSlices: 5, Metrics: m})
	run(t, s.Run)
	r.waitStates(t, 90*time.Second, map[slicehub.SliceState]int{slicehub.StateWarm: 1})
	ctx := context.Background()
	warm, err := r.db.Slices(ctx, slicehub.StateWarm)
	if err != nil || len(warm) != 1 || warm[0].AllocID == "" {
		t.Fatalf("warm slices %+v, %v", warm, err)
	}
	sl := warm[0]
	if v := value(t, m.Bootstraps.WithLabelValues("granted")); v != 1 {
		t.Errorf("bootstraps granted = %v; want 1", v)
	}
	if v := value(t, m.Bootstraps.WithLabelValues("unverified")); v != 0 {
		t.Errorf("bootstraps unverified = %v; want 0 (Nomad enforces ACLs here)", v)
	}
	if vars, err := r.nomad.ReadableVariables(ctx); err != nil || len(vars) != 0 {
		t.Errorf("variables every slice can read: %v, %v; want none", vars, err)
	}

	identity := func(allocID string) string {
		b, err := os.ReadFile(filepath.Join(testsupport.Stack().Nomad.DataDir, "alloc", allocID, "slice", "secrets", "nomad_token"))
		if err != nil {
			t.Fatalf("the allocation's identity file: %v", err)
		}
		return strings.TrimSpace(string(b))
	}
	first := identity(sl.AllocID)
	claims := strings.Split(first, ".")[1]
	forged := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + claims + "."
	bootstrap := func(what, jwt string, want slicehub.Kind) {
		t.Helper()
		_, err := s.Bootstrap(ctx, slicehub.BootstrapRequest{SliceID: sl.IDString(), AllocID: sl.AllocID, Identity: jwt})
		if slicehub.KindOf(err) != want {
			t.Errorf("%s: %v (kind %s); want kind %s", what, err, slicehub.KindOf(err), want)
		}
	}
	bootstrap("the allocation id alone, from Consul's meta", "", slicehub.KindUnauthorized)
	bootstrap("a forged identity (alg none, the allocation's claims)", forged, slicehub.KindUnauthorized)
	bootstrap("the allocation's own identity, replayed", first, slicehub.KindConflict)

	// A session opened with this allocation's password, as the slice has.
	creds, err := r.db.SliceCredentials(ctx, sl.ID, testsupport.Stack().Postgres.Host)
	if err != nil {
		t.Fatal(err)
	}
	oldToken := mustToken(t, s, sl.ID)
	old, err := pgx.Connect(ctx, strings.Replace(creds.DatabaseURL, "pool_max_conns=3", "connect_timeout=5", 1))
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close(context.Background())

	// A new allocation (the old one stopped): it claims fresh credentials.
	if _, err := r.api.Allocations().Stop(&nomadapi.Allocation{ID: sl.AllocID}, nil); err != nil {
		t.Fatal(err)
	}
	var next slicehub.Slice
	testsupport.Eventually(t, 90*time.Second, "a new allocation bootstrapped", func() (bool, error) {
		next, err = r.db.Slice(ctx, sl.ID)
		if err != nil {
			return false, err
		}
		return next.AllocID != sl.AllocID && next.AllocID != "" && value(t, m.Bootstraps.WithLabelValues("granted")) == 2,
			fmt.Errorf("slice %+v, granted %v", next, value(t, m.Bootstraps.WithLabelValues("granted")))
	})
	if tok := mustToken(t, s, sl.ID); tok == oldToken {
		t.Error("the gateway token was not rotated for the new allocation")
	}
	if err := old.Ping(ctx); err == nil {
		t.Error("the old allocation's database session survived the rotation")
	}
	if c, err := pgx.Connect(ctx, strings.Replace(creds.DatabaseURL, "pool_max_conns=3", "connect_timeout=5", 1)); err == nil {
		c.Close(ctx)
		t.Error("the old database password still opens a session")
	}
	// The ended allocation's identity is worthless (Nomad answers 403).
	testsupport.Eventually(t, 30*time.Second, "the stopped allocation's identity refused", func() (bool, error) {
		_, err := r.nomad.VerifyIdentity(ctx, first)
		return slicehub.KindOf(err) == slicehub.KindUnauthorized, fmt.Errorf("VerifyIdentity: %v", err)
	})
}

func mustToken(t *testing.T, s *scheduler.Scheduler, id int64) string {
	t.Helper()
	tok, err := s.GatewayToken(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}
