package admin

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/slicehub/slicehub"
	"github.com/slicehub/slicehub/postgres"
)

// The API against in-memory fakes: routes, confirmation, audit actors and
// the mapping of the scheduler's errors to statuses. The same handlers run
// against the real platform in cmd/slicehub (TestSlicectlAgainstThePlatform).

type fakeStore struct {
	mu     sync.Mutex
	slices map[int64]slicehub.Slice
	users  map[int64]slicehub.User
	notes  []slicehub.SliceEvent
}

func (f *fakeStore) NoteSlice(_ context.Context, id int64, actor, reason string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	sl, ok := f.slices[id]
	if !ok {
		return slicehub.Errorf("fake.note_slice", slicehub.KindNotFound, "slice_not_found", "no such slice")
	}
	f.notes = append(f.notes, slicehub.SliceEvent{SliceID: id, Actor: actor, From: sl.State, To: sl.State, Reason: reason})
	return nil
}

func (f *fakeStore) Slices(_ context.Context, states ...slicehub.SliceState) ([]slicehub.Slice, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []slicehub.Slice
	for id := int64(1); id <= int64(len(f.slices)); id++ {
		sl := f.slices[id]
		if len(states) == 0 || contains(states, sl.State) {
			out = append(out, sl)
		}
	}
	return out, nil
}

func contains(set []slicehub.SliceState, s slicehub.SliceState) bool {
	for _, v := range set {
		if v == s {
			return true
		}
	}
	return false
}

func (f *fakeStore) Slice(_ context.Context, id int64) (slicehub.Slice, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	sl, ok := f.slices[id]
	if !ok {
		return sl, slicehub.Errorf("fake.slice", slicehub.KindNotFound, "slice_not_found", "no such slice")
	}
	return sl, nil
}

func (f *fakeStore) SliceEvents(_ context.Context, id int64) ([]slicehub.SliceEvent, error) {
	return []slicehub.SliceEvent{{SliceID: id, Actor: "scheduler", To: slicehub.StateProvisioning}}, nil
}

func (f *fakeStore) CountSlices(context.Context) (map[slicehub.SliceState]int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[slicehub.SliceState]int{}
	for _, sl := range f.slices {
		out[sl.State]++
	}
	return out, nil
}

func (f *fakeStore) AdminUsers(context.Context) ([]postgres.UserRow, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []postgres.UserRow
	for id := int64(1); id <= int64(len(f.users)); id++ {
		out = append(out, postgres.UserRow{User: f.users[id]})
	}
	return out, nil
}

func (f *fakeStore) UserByID(_ context.Context, id int64) (slicehub.User, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	u, ok := f.users[id]
	if !ok {
		return u, slicehub.Errorf("fake.user", slicehub.KindNotFound, "user_not_found", "no such account")
	}
	return u, nil
}

func (f *fakeStore) SetUserDisabled(ctx context.Context, id int64, disabled bool) (slicehub.User, error) {
	u, err := f.UserByID(ctx, id)
	if err != nil {
		return u, err
	}
	now := time.Now()
	u.DisabledAt = &now
	f.mu.Lock()
	f.users[id] = u
	f.mu.Unlock()
	return u, nil
}

// fakePool records who did what; its transitions are a crude copy of the
// scheduler's guards, enough to exercise 409.
type fakePool struct {
	store   *fakeStore
	mu      sync.Mutex
	actors  []string
	paused  bool
	minWarm int
	capa    *slicehub.Capacity // nil: Nomad does not answer
}

func (p *fakePool) move(id int64, actor string, from []slicehub.SliceState, to slicehub.SliceState) (slicehub.Slice, error) {
	sl, err := p.store.Slice(context.Background(), id)
	if err != nil {
		return sl, err
	}
	if !contains(from, sl.State) {
		return sl, slicehub.Errorf("fake.op", slicehub.KindConflict, "slice_state", "cannot act on a %s slice", sl.State)
	}
	sl.State = to
	p.store.mu.Lock()
	p.store.slices[id] = sl
	p.store.mu.Unlock()
	p.mu.Lock()
	p.actors = append(p.actors, actor)
	p.mu.Unlock()
	return sl, nil
}

func (p *fakePool) Suspend(_ context.Context, id int64, actor string) (slicehub.Slice, error) {
	return p.move(id, actor, []slicehub.SliceState{slicehub.StateAssigned}, slicehub.StateSuspended)
}
func (p *fakePool) Resume(_ context.Context, id int64, actor string) (slicehub.Slice, error) {
	return p.move(id, actor, []slicehub.SliceState{slicehub.StateSuspended}, slicehub.StateProvisioning)
}
func (p *fakePool) Restart(_ context.Context, id int64, actor string) (slicehub.Slice, error) {
	return p.move(id, actor, []slicehub.SliceState{slicehub.StateAssigned, slicehub.StateWarm}, slicehub.StateProvisioning)
}
func (p *fakePool) Retire(_ context.Context, id int64, actor string) (slicehub.Slice, error) {
	return p.move(id, actor, []slicehub.SliceState{slicehub.StateAssigned, slicehub.StateWarm, slicehub.StateSuspended}, slicehub.StateRetired)
}
func (p *fakePool) Reassign(_ context.Context, id, userID int64, actor string) (slicehub.Slice, error) {
	sl, err := p.move(id, actor, []slicehub.SliceState{slicehub.StateWarm, slicehub.StateAssigned}, slicehub.StateAssigned)
	sl.UserID = userID
	return sl, err
}
func (p *fakePool) Progress(context.Context, int64) (slicehub.SliceProgress, error) {
	return slicehub.SliceProgress{}, slicehub.Errorf("fake.progress", slicehub.KindNotFound, "", "none")
}
func (p *fakePool) Capacity(context.Context) (slicehub.Capacity, error) {
	if p.capa != nil {
		return *p.capa, nil
	}
	return slicehub.Capacity{}, slicehub.Errorf("fake.capacity", slicehub.KindUnavailable, "nomad_down", "Nomad did not answer")
}
func (p *fakePool) SetPaused(v bool) { p.mu.Lock(); p.paused = v; p.mu.Unlock() }
func (p *fakePool) Paused() bool     { p.mu.Lock(); defer p.mu.Unlock(); return p.paused }
func (p *fakePool) MinWarm() int     { p.mu.Lock(); defer p.mu.Unlock(); return p.minWarm }
func (p *fakePool) MaxSlices() int   { return 10 }
func (p *fakePool) SetMinWarm(n int) error {
	if n < 0 || n > 10 {
		return slicehub.Errorf("fake.min_warm", slicehub.KindInvalid, "invalid_min_warm", "out of range")
	}
	p.mu.Lock()
	p.minWarm = n
	p.mu.Unlock()
	return nil
}

// fakeRoutes routes slice 1 only, to addr (a fake slice) or a made-up one.
type fakeRoutes struct{ addr string }

func (r fakeRoutes) Lookup(id int64) (slicehub.Route, bool) {
	addr := r.addr
	if addr == "" {
		addr = "10.0.0.1:1234"
	}
	return slicehub.Route{SliceID: id, Addr: addr, AllocID: "a1"}, id == 1
}

// newTestAPI serves the API behind a stand-in for the gateway's admin
// guard (admin 7, via key 3) and its error writer (kind → status).
func newTestAPI(t *testing.T) (*fiber.App, *fakePool) {
	app, pool, _ := testApp(t, nil)
	return app, pool
}

// testApp is newTestAPI with a say in the Deps (the dashboard's).
func testApp(t *testing.T, setup func(*Deps)) (*fiber.App, *fakePool, *fakeStore) {
	store := &fakeStore{
		slices: map[int64]slicehub.Slice{
			1: {ID: 1, State: slicehub.StateAssigned, UserID: 2},
			2: {ID: 2, State: slicehub.StateWarm},
		},
		users: map[int64]slicehub.User{1: {ID: 1, Email: "a@x"}, 2: {ID: 2, Email: "b@x"}, 7: {ID: 7, Email: "ops@x", IsAdmin: true}},
	}
	// Users are listed 1..len: make the map dense.
	store.users[3] = slicehub.User{ID: 3, Email: "c@x"}
	store.users[4], store.users[5], store.users[6] = slicehub.User{ID: 4}, slicehub.User{ID: 5}, slicehub.User{ID: 6}
	pool := &fakePool{store: store, minWarm: 1}
	app := fiber.New(fiber.Config{DisableStartupMessage: true, ErrorHandler: func(c *fiber.Ctx, err error) error {
		status := map[slicehub.Kind]int{
			slicehub.KindInvalid: 400, slicehub.KindNotFound: 404, slicehub.KindConflict: 409,
			slicehub.KindForbidden: 403, slicehub.KindTooLarge: 413, slicehub.KindUnavailable: 503,
		}[slicehub.KindOf(err)]
		var fe *fiber.Error
		if status == 0 && errors.As(err, &fe) {
			status = fe.Code
		}
		if status == 0 {
			status = 500
		}
		return c.Status(status).JSON(fiber.Map{"error": slicehub.MessageOf(err), "code": slicehub.CodeOf(err)})
	}})
	group := app.Group("/admin", func(c *fiber.Ctx) error {
		c.Locals("uid", int64(7))
		c.Locals("kid", int64(3))
		return c.Next()
	})
	d := Deps{Store: store, Pool: pool, Routes: fakeRoutes{}, UserKey: "uid", KeyKey: "kid",
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if setup != nil {
		setup(&d)
	}
	Register(group, d)
	return app, pool, store
}

func call(t *testing.T, app *fiber.App, method, path, body string) (int, map[string]any) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req := httptest.NewRequest(method, path, rd)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := app.Test(req, 5000)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	var out map[string]any
	raw, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("%s %s: %d, not JSON: %q", method, path, resp.StatusCode, raw)
	}
	return resp.StatusCode, out
}

func TestAdminAPI(t *testing.T) {
	app, pool, store := testApp(t, nil)
	cases := []struct {
		method, path, body string
		status             int
		code               string // of an error
	}{
		{"GET", "/admin/api/status", "", 200, ""},
		{"GET", "/admin/api/slices", "", 200, ""},
		{"GET", "/admin/api/slices?state=warm,assigned", "", 200, ""},
		{"GET", "/admin/api/slices?state=nope", "", 400, "invalid_state"},
		{"GET", "/admin/api/slices/1", "", 200, ""},
		{"GET", "/admin/api/slices/99", "", 404, "slice_not_found"},
		{"GET", "/admin/api/slices/01", "", 400, "invalid_id"},
		{"POST", "/admin/api/slices/1/suspend", "", 200, ""},
		{"POST", "/admin/api/slices/1/suspend", "", 409, "slice_state"}, // the fake is not idempotent; the scheduler is
		{"POST", "/admin/api/slices/1/restart", "", 409, "slice_state"},
		{"POST", "/admin/api/slices/1/resume", "{}", 200, ""},
		{"POST", "/admin/api/slices/1/resume", `{"bogus":1}`, 400, "invalid_json"},
		{"POST", "/admin/api/slices/99/restart", "", 404, "slice_not_found"},
		{"POST", "/admin/api/slices/1/note", `{}`, 400, "invalid_note"},
		{"POST", "/admin/api/slices/1/note", `{"note":"   "}`, 400, "invalid_note"},
		{"POST", "/admin/api/slices/99/note", `{"note":"x"}`, 404, "slice_not_found"},
		{"POST", "/admin/api/slices/1/note", `{"note":" called the customer "}`, 200, ""},
		{"POST", "/admin/api/slices/2/retire", "", 400, "confirmation_required"},
		{"POST", "/admin/api/slices/2/retire", `{"confirm":"1"}`, 400, "confirmation_required"},
		{"POST", "/admin/api/slices/2/reassign", `{}`, 400, "invalid_user"},
		{"POST", "/admin/api/slices/2/reassign", `{"user_id":99}`, 404, "user_not_found"},
		{"POST", "/admin/api/slices/2/reassign", `{"user_id":3}`, 200, ""},
		{"POST", "/admin/api/slices/2/retire", `{"confirm":"2"}`, 200, ""},
		{"POST", "/admin/api/pool/pause", "", 200, ""},
		{"POST", "/admin/api/pool/scale", `{}`, 400, "invalid_min_warm"},
		{"POST", "/admin/api/pool/scale", `{"min_warm":11}`, 400, "invalid_min_warm"},
		{"POST", "/admin/api/pool/scale", `{"min_warm":4}`, 200, ""},
		{"GET", "/admin/api/users", "", 200, ""},
		{"POST", "/admin/api/users/2/disable", "", 400, "confirmation_required"},
		{"POST", "/admin/api/users/7/disable", `{"confirm":"7"}`, 409, "self_disable"},
		{"POST", "/admin/api/users/99/disable", `{"confirm":"99"}`, 404, "user_not_found"},
		{"POST", "/admin/api/users/2/disable", `{"confirm":"2"}`, 200, ""},
	}
	for _, c := range cases {
		status, body := call(t, app, c.method, c.path, c.body)
		if status != c.status || (c.code != "" && body["code"] != c.code) {
			t.Errorf("%s %s %s = %d %v; want %d %q", c.method, c.path, c.body, status, body, c.status, c.code)
		}
	}

	// Every slice action ran as the admin.
	for _, a := range pool.actors {
		if a != "admin:7" {
			t.Errorf("actor %q; want admin:7", a)
		}
	}
	if len(pool.actors) != 4 { // suspend, resume, reassign, retire
		t.Errorf("actions reaching the scheduler: %v; want 4", pool.actors)
	}
	// The note went to the slice's history, as the admin, trimmed.
	if len(store.notes) != 1 || store.notes[0].Actor != "admin:7" || store.notes[0].Reason != "note: called the customer" ||
		store.notes[0].SliceID != 1 {
		t.Errorf("notes %+v; want one on slice 1 by admin:7", store.notes)
	}

	// Status shows the pool as set, and Nomad's absence without failing.
	_, st := call(t, app, "GET", "/admin/api/status", "")
	pj, _ := st["pool"].(map[string]any)
	if pj["paused"] != true || pj["min_warm"] != float64(4) || st["capacity"] != nil || st["capacity_error"] != "Nomad did not answer" {
		t.Errorf("status = %v", st)
	}
	_, one := call(t, app, "GET", "/admin/api/slices/1", "")
	if rt, _ := one["route"].(map[string]any); rt["addr"] != "10.0.0.1:1234" {
		t.Errorf("slice 1 detail = %v; want its route", one)
	}
	_, users := call(t, app, "GET", "/admin/api/users", "")
	if list, _ := users["users"].([]any); len(list) != 7 {
		t.Errorf("users = %v", users)
	}
}

func TestStreamsBodyMatchesOnlyTheRestoreEndpoint(t *testing.T) {
	for path, want := range map[string]bool{
		"/admin/api/slices/42/restore":   true,
		"/admin/api/slices/42/backup":    false,
		"/admin/api/slices//restore":     false,
		"/admin/api/slices/4x2/restore":  false,
		"/admin/api/slices/42/restore/x": false,
		"/api/slices/42/restore":         false,
	} {
		if got := StreamsBody(path); got != want {
			t.Errorf("StreamsBody(%q) = %v, want %v", path, got, want)
		}
	}
}
