package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/slicehub/slicehub"
	"github.com/slicehub/slicehub/ops"
	"github.com/slicehub/slicehub/testsupport"
)

// slicectlRun is one run of slicectl, as its main would run it.
type slicectlRun struct {
	code           int
	stdout, stderr string
}

func slicectl(t *testing.T, args ...string) slicectlRun {
	t.Helper()
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	code := ops.Execute(ctx, args, &out, &errb)
	shown := make([]string, len(args))
	for i, a := range args {
		if strings.HasPrefix(a, "postgres://") {
			a = "postgres://…" // keep the test database's password out of the log
		}
		shown[i] = a
	}
	t.Logf("slicectl %s -> %d\n%s%s", strings.Join(shown, " "), code, out.String(), errb.String())
	return slicectlRun{code, out.String(), errb.String()}
}

// api runs slicectl against the platform with the admin key.
type api struct {
	t        *testing.T
	gw, key  string
	database string
}

func (a api) run(args ...string) slicectlRun {
	a.t.Helper()
	return slicectl(a.t, append([]string{"--gateway", a.gw, "--key", a.key}, args...)...)
}

// ok runs a command that must succeed and decodes its --json output.
func (a api) ok(out any, args ...string) {
	a.t.Helper()
	r := a.run(append(args, "--json")...)
	if r.code != 0 {
		a.t.Fatalf("slicectl %s: exit %d: %s", strings.Join(args, " "), r.code, r.stderr)
	}
	if out != nil {
		if err := json.Unmarshal([]byte(r.stdout), out); err != nil {
			a.t.Fatalf("slicectl %s --json: %v in %q", strings.Join(args, " "), err, r.stdout)
		}
	}
}

func (a api) wantCode(code int, args ...string) slicectlRun {
	a.t.Helper()
	r := a.run(args...)
	if r.code != code {
		a.t.Fatalf("slicectl %s: exit %d; want %d (stderr %q)", strings.Join(args, " "), r.code, code, r.stderr)
	}
	return r
}

type sliceOut struct {
	ID      int64               `json:"id"`
	State   slicehub.SliceState `json:"state"`
	UserID  int64               `json:"user_id"`
	Healthy bool                `json:"healthy"`
}

// Every slicectl command against the whole platform on real Nomad (docker
// driver), Consul and PostgreSQL: bootstrap of the first admin and its key,
// doctor (passing, then failing on a missing Consul), status, the pool,
// the slice operations with --wait, and the users.
func TestSlicectlAgainstThePlatform(t *testing.T) {
	m := startPlatform(t)
	st := testsupport.Stack(t)
	gw := "http://" + m.PublicAddr

	// Bootstrap: straight into PostgreSQL, the key printed once.
	var boot struct {
		UserID   int64  `json:"user_id"`
		Key      string `json:"key"`
		Password string `json:"password"`
	}
	r := slicectl(t, "users", "create-admin", "--database-url", m.Config.DatabaseURL, "--email", "ops@example.com", "--json")
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &boot) != nil || !strings.HasPrefix(boot.Key, "shk_") || boot.Password == "" {
		t.Fatalf("create-admin: exit %d, %q", r.code, r.stdout)
	}
	if r := slicectl(t, "users", "create-admin", "--database-url", m.Config.DatabaseURL, "--email", "ops@example.com"); r.code != ops.ExitError || !strings.Contains(r.stderr, "--promote") {
		t.Errorf("create-admin twice: exit %d %q; want 1 and a hint to --promote", r.code, r.stderr)
	}
	a := api{t: t, gw: gw, key: boot.Key, database: m.Config.DatabaseURL}

	// doctor: everything there, then Consul pointed at a closed port.
	doctor := []string{"doctor", "--nomad-addr", st.Nomad.Addr, "--consul-addr", st.Consul.Addr,
		"--database-url", m.Config.DatabaseURL, "--image", m.Config.SliceImage}
	if r := slicectl(t, doctor...); r.code != 0 {
		t.Fatalf("doctor on a healthy stack: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	closed := closedAddr(t)
	r = slicectl(t, append(doctor, "--consul-addr", closed)...)
	if r.code != ops.ExitUnhealthy || !strings.Contains(r.stderr, "consul") || !strings.Contains(r.stdout, "Consul not reachable at http://"+closed) {
		t.Errorf("doctor without Consul: exit %d\n%s%s; want 3 naming Consul", r.code, r.stdout, r.stderr)
	}
	if r := slicectl(t, append(doctor, "--image", "slicehub/slice:no-such-tag")...); r.code != ops.ExitUnhealthy || !strings.Contains(r.stdout, "make image") {
		t.Errorf("doctor without the image: exit %d %q; want 3 and `make image`", r.code, r.stdout)
	}

	// Wrong keys and usage.
	if r := slicectl(t, "--gateway", gw, "--key", "shk_nope", "status"); r.code != ops.ExitError || !strings.Contains(r.stderr, "invalid_key") {
		t.Errorf("status with a bad key: exit %d %q; want 1 invalid_key", r.code, r.stderr)
	}
	a.wantCode(ops.ExitUsage, "slices", "frobnicate", "1")
	a.wantCode(ops.ExitUsage, "pool", "scale", "-1")

	testsupport.Eventually(t, 120*time.Second, "a warm slice", func() (bool, error) {
		return len(warmSlices(t, m)) >= 1, nil
	})
	var status struct {
		Ready  bool                        `json:"ready"`
		Slices map[slicehub.SliceState]int `json:"slices"`
		Pool   struct {
			MinWarm int  `json:"min_warm"`
			Paused  bool `json:"paused"`
		} `json:"pool"`
		Capacity *struct {
			Nodes int `json:"nodes"`
		} `json:"capacity"`
	}
	a.ok(&status, "status")
	if !status.Ready || status.Slices[slicehub.StateWarm] < 1 || status.Pool.MinWarm != 1 || status.Capacity == nil || status.Capacity.Nodes < 1 {
		t.Errorf("status = %+v; want ready, a warm slice, min_warm 1, one node", status)
	}
	if r := a.run("status"); r.code != 0 || !strings.Contains(r.stdout, "min_warm=1") {
		t.Errorf("status (text): exit %d %q", r.code, r.stdout)
	}

	// The pool: paused, the target changed while paused (so no slice is
	// started for it), back.
	type poolOut struct {
		Pool struct {
			MinWarm int  `json:"min_warm"`
			Paused  bool `json:"paused"`
		} `json:"pool"`
	}
	var p poolOut
	a.ok(&p, "pool", "pause")
	if !p.Pool.Paused {
		t.Errorf("pool pause: %+v", p)
	}
	a.ok(&p, "pool", "scale", "3")
	a.ok(&p, "pool", "show")
	if p.Pool.MinWarm != 3 || !p.Pool.Paused {
		t.Errorf("pool show after scale 3: %+v", p)
	}
	a.ok(&p, "pool", "scale", "1")
	a.ok(&p, "pool", "resume")
	if p.Pool.Paused || p.Pool.MinWarm != 1 {
		t.Errorf("pool resume: %+v", p)
	}

	// A customer, and the slices and users the CLI sees.
	alice := newClient(t, m)
	id := alice.signup("alice@example.com")
	var users struct {
		Users []struct {
			ID      int64  `json:"id"`
			Email   string `json:"email"`
			IsAdmin bool   `json:"is_admin"`
			SliceID int64  `json:"slice_id"`
		} `json:"users"`
	}
	a.ok(&users, "users", "list")
	var aliceID int64
	for _, u := range users.Users {
		if u.Email == "alice@example.com" && u.SliceID == id {
			aliceID = u.ID
		}
	}
	if aliceID == 0 || len(users.Users) != 2 {
		t.Fatalf("users list = %+v; want ops and alice with slice %d", users, id)
	}
	var list struct {
		Slices []sliceOut `json:"slices"`
	}
	a.ok(&list, "slices", "list", "--state", "assigned")
	if len(list.Slices) != 1 || list.Slices[0].ID != id || list.Slices[0].UserID != aliceID {
		t.Errorf("slices list --state assigned = %+v; want slice %d of user %d", list, id, aliceID)
	}
	a.wantCode(ops.ExitUsage, "slices", "list", "--state", "bogus")
	if r := a.run("slices", "list"); r.code != 0 || !strings.Contains(r.stdout, "assigned") {
		t.Errorf("slices list (text): %d %q", r.code, r.stdout)
	}
	alice.whoami() // healthy before we restart it

	// restart --wait: progress on stderr, healthy again, audited.
	r = a.wantCode(0, "slices", "restart", fmt.Sprint(id), "--wait", "--timeout", "3m")
	if !strings.Contains(r.stderr, "healthy after") || !strings.Contains(r.stderr, "/5 ") {
		t.Errorf("restart --wait stderr %q; want a progress bar ending healthy", r.stderr)
	}
	if status, who := alice.whoami(); status != http.StatusOK || who != fmt.Sprint(id) {
		t.Errorf("alice after restart: %d from %q", status, who)
	}

	// suspend, then resume --wait.
	var act struct {
		Slice sliceOut `json:"slice"`
	}
	a.ok(&act, "slices", "suspend", fmt.Sprint(id))
	if act.Slice.State != slicehub.StateSuspended {
		t.Errorf("suspend: %+v", act)
	}
	a.wantCode(ops.ExitError, "slices", "restart", fmt.Sprint(id)) // 409: a suspended slice is resumed, not restarted
	a.wantCode(0, "slices", "resume", fmt.Sprint(id), "--wait", "--timeout", "3m")

	var detail struct {
		Slice  sliceOut `json:"slice"`
		Route  *struct{ Addr string }
		Events []struct {
			Actor string              `json:"actor"`
			To    slicehub.SliceState `json:"to"`
		} `json:"events"`
	}
	a.ok(&detail, "slices", "show", fmt.Sprint(id))
	actor := fmt.Sprintf("admin:%d", boot.UserID)
	var byAdmin []slicehub.SliceState
	for _, e := range detail.Events {
		if e.Actor == actor {
			byAdmin = append(byAdmin, e.To)
		}
	}
	if fmt.Sprint(byAdmin) != "[provisioning suspended provisioning]" || detail.Route == nil || !detail.Slice.Healthy {
		t.Errorf("slices show: events by %s %v, route %v; want restart, suspend, resume recorded and a route", actor, byAdmin, detail.Route)
	}
	if r := a.run("slices", "show", fmt.Sprint(id)); r.code != 0 || !strings.Contains(r.stdout, actor) {
		t.Errorf("slices show (text): %d %q", r.code, r.stdout)
	}
	a.wantCode(ops.ExitUnhealthy, "slices", "show", "999999")

	// Its logs (the slice logs JSON to stderr), from its docker allocation
	// through the gateway and its admin guard.
	if r := a.run("slices", "logs", fmt.Sprint(id), "--stderr", "--tail", "5"); r.code != 0 || !strings.Contains(r.stdout, `"msg"`) {
		t.Errorf("slices logs --stderr --tail 5: exit %d, %q; want the slice's JSON log lines", r.code, r.stdout)
	}
	// Its database backed up, then restored while it runs: suspended, its
	// allocation waited out, restored, resumed, and healthy again.
	dump := filepath.Join(t.TempDir(), "alice.dump")
	a.wantCode(0, "db", "backup", "--slice", fmt.Sprint(id), "-o", dump)
	a.wantCode(0, "db", "restore", "--slice", fmt.Sprint(id), "-i", dump, "--yes")
	a.wantCode(0, "slices", "resume", fmt.Sprint(id), "--wait", "--timeout", "3m")
	if status, who := alice.whoami(); status != http.StatusOK || who != fmt.Sprint(id) {
		t.Errorf("alice after the restore: %d from %q", status, who)
	}

	// Destructive actions want the id again.
	a.wantCode(ops.ExitUsage, "slices", "retire", fmt.Sprint(id))
	a.wantCode(ops.ExitUsage, "slices", "retire", fmt.Sprint(id), "--confirm", "1"+fmt.Sprint(id))
	a.ok(&act, "slices", "retire", fmt.Sprint(id), "--confirm", fmt.Sprint(id))
	if act.Slice.State != slicehub.StateRetired {
		t.Errorf("retire: %+v", act)
	}
	a.wantCode(ops.ExitError, "slices", "suspend", fmt.Sprint(id)) // 409

	// reassign: the refilled warm slice goes to the ops account.
	testsupport.Eventually(t, 120*time.Second, "the pool refilled", func() (bool, error) {
		return len(warmSlices(t, m)) >= 1, nil
	})
	warm := warmSlices(t, m)[0]
	a.wantCode(ops.ExitUsage, "slices", "reassign", fmt.Sprint(warm.ID))
	a.wantCode(ops.ExitUnhealthy, "slices", "reassign", fmt.Sprint(warm.ID), "--user", "424242")
	a.ok(&act, "slices", "reassign", fmt.Sprint(warm.ID), "--user", fmt.Sprint(boot.UserID))
	if act.Slice.State != slicehub.StateAssigned || act.Slice.UserID != boot.UserID {
		t.Errorf("reassign: %+v; want assigned to user %d", act, boot.UserID)
	}

	a.wantCode(ops.ExitUsage, "users", "disable", fmt.Sprint(aliceID))
	a.ok(nil, "users", "disable", fmt.Sprint(aliceID), "--confirm", fmt.Sprint(aliceID))
	testsupport.Eventually(t, 10*time.Second, "alice signed out", func() (bool, error) {
		status, body := alice.do("GET", "/auth/me", nil)
		return status == http.StatusUnauthorized, fmt.Errorf("/auth/me: %d %v", status, body)
	})
	a.wantCode(ops.ExitError, "users", "disable", fmt.Sprint(boot.UserID), "--confirm", fmt.Sprint(boot.UserID)) // not oneself
	a.wantCode(ops.ExitUnhealthy, "users", "disable", "424242", "--confirm", "424242")
}

// closedAddr is a local address nothing listens on.
func closedAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}
