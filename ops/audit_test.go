package ops

import (
	"fmt"
	"sync"
	"testing"

	"github.com/slicehub/slicehub/admin"
	"github.com/slicehub/slicehub/postgres"
)

// memPool holds the pool settings as the scheduler does, in memory.
type memPool struct {
	statePool
	mu      sync.Mutex
	paused  bool
	minWarm int
}

func (p *memPool) SetPaused(v bool) { p.mu.Lock(); p.paused = v; p.mu.Unlock() }
func (p *memPool) Paused() bool     { p.mu.Lock(); defer p.mu.Unlock(); return p.paused }
func (p *memPool) MinWarm() int     { p.mu.Lock(); defer p.mu.Unlock(); return p.minWarm }
func (p *memPool) MaxSlices() int   { return 10 }
func (p *memPool) SetMinWarm(n int) error {
	p.mu.Lock()
	p.minWarm = n
	p.mu.Unlock()
	return nil
}

// Pool changes and user disables through slicectl are stored (the pool
// settings, for every replica and the next start) and written to the audit
// table, with the backups and restores beside them.
func TestPoolSettingsStoredAndActionsAudited(t *testing.T) {
	ctx := t.Context()
	pool := &memPool{}
	env := startAPI(t, func(d *admin.Deps, db *postgres.DB) {
		pool.db = db
		d.Pool, d.Audit, d.Settings, d.Backups = pool, db, db, db
	})
	cli := func(args ...string) (int, string, string) {
		return runCLI(t, append([]string{"--gateway", env.url, "--key", "shk_test"}, args...)...)
	}
	for _, args := range [][]string{{"pool", "pause"}, {"pool", "scale", "3"}} {
		if code, _, errs := cli(args...); code != 0 {
			t.Fatalf("slicectl %v: exit %d: %s", args, code, errs)
		}
	}
	if code, _, _ := cli("pool", "scale", "11"); code != ExitUsage {
		t.Errorf("pool scale above max_slices: exit %d; want 2", code)
	}
	ps, err := env.db.PoolSettings(ctx)
	if err != nil || !ps.Paused || ps.MinWarm == nil || *ps.MinWarm != 3 {
		t.Fatalf("stored pool settings: %+v %v; want paused, min_warm 3 (and not 11)", ps, err)
	}
	if !pool.Paused() || pool.MinWarm() != 3 {
		t.Errorf("this replica's pool: paused=%v min_warm=%d; want the same", pool.Paused(), pool.MinWarm())
	}

	// User 1 is the acting admin, who may not disable themself.
	if _, err := env.db.CreateUser(ctx, "admin@example.com", "x"); err != nil {
		t.Fatal(err)
	}
	u, err := env.db.CreateUser(ctx, "gone@example.com", "x")
	if err != nil {
		t.Fatal(err)
	}
	if code, _, errs := cli("users", "disable", fmt.Sprint(u.ID), "--confirm", fmt.Sprint(u.ID)); code != 0 {
		t.Fatalf("users disable: exit %d: %s", code, errs)
	}
	if code, _, errs := cli("db", "backup", "--gateway-db", "-o", t.TempDir()+"/gw.dump"); code != 0 {
		t.Fatalf("db backup --gateway-db: exit %d: %s", code, errs)
	}

	rows, err := env.db.AdminAudits(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]postgres.AdminAudit{}
	for _, r := range rows {
		got[r.Action] = r
	}
	for action, target := range map[string]string{
		"pool_pause": "pool", "pool_scale": "pool", "disable_user": fmt.Sprintf("user:%d", u.ID), "gateway_backup": "gateway",
	} {
		r, ok := got[action]
		if !ok || r.Actor != "admin:1" || r.Target != target {
			t.Errorf("audit row of %s: %+v (found %v); want actor admin:1, target %s", action, r, ok, target)
		}
	}
	if len(rows) != 4 {
		t.Errorf("%d audit rows; want 4 (the refused scale is not an action)", len(rows))
	}
}
