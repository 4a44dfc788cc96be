package gateway

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/slicehub/slicehub"
)

// The fakes implement the three interfaces in memory, with the semantics
// the real implementations promise (kinds, codes, expiry), and count calls
// so that tests can see what the caches spare.

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

type fakeSession struct {
	userID   int64
	expires  time.Time
	lastSeen time.Time
}

type fakeAccounts struct {
	now func() time.Time

	mu       sync.Mutex
	nextID   int64
	users    map[string]slicehub.User // by email
	hashes   map[string]string
	sessions map[string]*fakeSession // by string(token hash)
	resets   map[string]*fakeReset   // by string(token hash)
	keys     map[string]*slicehub.AdminKey
	nextKey  int64

	sessionUserCalls atomic.Int64
}

type fakeReset struct {
	userID  int64
	expires time.Time
	used    bool
}

func newFakeAccounts(now func() time.Time) *fakeAccounts {
	return &fakeAccounts{now: now, users: map[string]slicehub.User{}, hashes: map[string]string{},
		sessions: map[string]*fakeSession{}, resets: map[string]*fakeReset{}, keys: map[string]*slicehub.AdminKey{}}
}

func (a *fakeAccounts) CreateUser(_ context.Context, email, hash string) (slicehub.User, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.users[email]; ok {
		return slicehub.User{}, slicehub.Errorf("fake.create_user", slicehub.KindConflict, "email_taken",
			"an account with this email already exists")
	}
	a.nextID++
	u := slicehub.User{ID: a.nextID, Email: email, CreatedAt: a.now()}
	a.users[email] = u
	a.hashes[email] = hash
	return u, nil
}

func (a *fakeAccounts) UserByEmail(_ context.Context, email string) (slicehub.User, string, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	u, ok := a.users[email]
	if !ok {
		return slicehub.User{}, "", slicehub.Errorf("fake.user_by_email", slicehub.KindNotFound, "", "no such user")
	}
	return u, a.hashes[email], nil
}

func (a *fakeAccounts) setAdmin(email string, admin bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	u := a.users[email]
	u.IsAdmin = admin
	a.users[email] = u
}

func (a *fakeAccounts) userByID(id int64) (slicehub.User, bool) {
	for _, u := range a.users {
		if u.ID == id {
			return u, true
		}
	}
	return slicehub.User{}, false
}

func (a *fakeAccounts) CreateSession(_ context.Context, userID int64, h []byte, expires time.Time) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.sessions[string(h)] = &fakeSession{userID: userID, expires: expires, lastSeen: a.now()}
	return nil
}

func (a *fakeAccounts) SessionUser(_ context.Context, h []byte, idle time.Duration) (slicehub.User, error) {
	a.sessionUserCalls.Add(1)
	a.mu.Lock()
	defer a.mu.Unlock()
	unauth := slicehub.Errorf("fake.session_user", slicehub.KindUnauthorized, "", "no session")
	s, ok := a.sessions[string(h)]
	now := a.now()
	if !ok || !now.Before(s.expires) || now.Sub(s.lastSeen) > idle {
		return slicehub.User{}, unauth
	}
	if now.Sub(s.lastSeen) >= time.Minute {
		s.lastSeen = now
	}
	u, ok := a.userByID(s.userID)
	if !ok || u.DisabledAt != nil {
		return slicehub.User{}, unauth
	}
	return u, nil
}

func (a *fakeAccounts) DeleteSession(_ context.Context, h []byte) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.sessions, string(h))
	return nil
}

func (a *fakeAccounts) setDisabled(email string, disabled bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	u := a.users[email]
	u.DisabledAt = nil
	if disabled {
		t := a.now()
		u.DisabledAt = &t
	}
	a.users[email] = u
}

func (a *fakeAccounts) passwordHash(email string) string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.hashes[email]
}

func (a *fakeAccounts) CreateResetToken(_ context.Context, userID int64, h []byte, expires time.Time) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.resets[string(h)] = &fakeReset{userID: userID, expires: expires}
	return nil
}

func (a *fakeAccounts) liveReset(h []byte) (*fakeReset, slicehub.User, error) {
	r, ok := a.resets[string(h)]
	invalid := slicehub.Errorf("fake.reset", slicehub.KindInvalid, "invalid_token", "invalid or expired")
	if !ok || r.used || !a.now().Before(r.expires) {
		return nil, slicehub.User{}, invalid
	}
	u, ok := a.userByID(r.userID)
	if !ok || u.DisabledAt != nil {
		return nil, slicehub.User{}, invalid
	}
	return r, u, nil
}

func (a *fakeAccounts) ResetTokenUser(_ context.Context, h []byte) (slicehub.User, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	_, u, err := a.liveReset(h)
	return u, err
}

func (a *fakeAccounts) ResetPassword(_ context.Context, h []byte, hash string) (slicehub.User, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	_, u, err := a.liveReset(h)
	if err != nil {
		return u, err
	}
	a.hashes[u.Email] = hash
	for _, r := range a.resets {
		if r.userID == u.ID {
			r.used = true
		}
	}
	for k, s := range a.sessions {
		if s.userID == u.ID {
			delete(a.sessions, k)
		}
	}
	return u, nil
}

func (a *fakeAccounts) CreateAdminKey(_ context.Context, name string, h []byte, by int64) (slicehub.AdminKey, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.nextKey++
	k := &slicehub.AdminKey{ID: a.nextKey, Name: name, CreatedBy: by, CreatedAt: a.now()}
	a.keys[string(h)] = k
	return *k, nil
}

func (a *fakeAccounts) AdminKeys(context.Context) ([]slicehub.AdminKey, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := []slicehub.AdminKey{}
	for _, k := range a.keys {
		out = append(out, *k)
	}
	return out, nil
}

func (a *fakeAccounts) RevokeAdminKey(_ context.Context, id int64) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, k := range a.keys {
		if k.ID == id {
			if k.RevokedAt == nil {
				t := a.now()
				k.RevokedAt = &t
			}
			return nil
		}
	}
	return slicehub.Errorf("fake.revoke_admin_key", slicehub.KindNotFound, "key_not_found", "no such key")
}

func (a *fakeAccounts) AdminKeyUser(_ context.Context, h []byte) (slicehub.User, slicehub.AdminKey, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	k, ok := a.keys[string(h)]
	if !ok || k.RevokedAt != nil {
		return slicehub.User{}, slicehub.AdminKey{}, slicehub.Errorf("fake.admin_key_user", slicehub.KindUnauthorized,
			"invalid_key", "no such key")
	}
	t := a.now()
	k.LastUsedAt = &t
	u, _ := a.userByID(k.CreatedBy)
	return u, *k, nil
}

func (a *fakeAccounts) sessionCount() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.sessions)
}

type fakeSlices struct {
	mu        sync.Mutex
	nextID    int64
	byUser    map[int64]slicehub.Slice
	tokens    map[int64]string
	claimErr  error
	claimWarm bool // Claim binds an assigned slice (true) or queues a provisioning one
	bootstrap func(slicehub.BootstrapRequest) (slicehub.SliceCredentials, error)

	sliceForUserCalls atomic.Int64
	tokenCalls        atomic.Int64
}

func newFakeSlices() *fakeSlices {
	return &fakeSlices{byUser: map[int64]slicehub.Slice{}, tokens: map[int64]string{}, claimWarm: true, nextID: 100}
}

func (f *fakeSlices) Claim(_ context.Context, userID int64) (slicehub.Slice, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.claimErr != nil {
		return slicehub.Slice{}, f.claimErr
	}
	if sl, ok := f.byUser[userID]; ok {
		return sl, nil
	}
	f.nextID++
	state := slicehub.StateProvisioning
	if f.claimWarm {
		state = slicehub.StateAssigned
	}
	sl := slicehub.Slice{ID: f.nextID, State: state, UserID: userID}
	f.byUser[userID] = sl
	f.tokens[sl.ID] = "token-of-slice-" + sl.IDString()
	return sl, nil
}

func (f *fakeSlices) SliceForUser(_ context.Context, userID int64) (slicehub.Slice, error) {
	f.sliceForUserCalls.Add(1)
	f.mu.Lock()
	defer f.mu.Unlock()
	sl, ok := f.byUser[userID]
	if !ok {
		return slicehub.Slice{}, slicehub.Errorf("fake.slice_for_user", slicehub.KindNotFound, "", "no slice")
	}
	return sl, nil
}

func (f *fakeSlices) set(userID int64, sl slicehub.Slice) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if sl.ID == 0 {
		delete(f.byUser, userID)
		return
	}
	f.byUser[userID] = sl
	if _, ok := f.tokens[sl.ID]; !ok {
		f.tokens[sl.ID] = "token-of-slice-" + sl.IDString()
	}
}

func (f *fakeSlices) sliceOf(userID int64) slicehub.Slice {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.byUser[userID]
}

func (f *fakeSlices) GatewayToken(_ context.Context, sliceID int64) (string, error) {
	f.tokenCalls.Add(1)
	f.mu.Lock()
	defer f.mu.Unlock()
	t, ok := f.tokens[sliceID]
	if !ok {
		return "", slicehub.Errorf("fake.gateway_token", slicehub.KindNotFound, "", "no slice")
	}
	return t, nil
}

func (f *fakeSlices) tokenOf(sliceID int64) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.tokens[sliceID]
}

func (f *fakeSlices) Bootstrap(_ context.Context, req slicehub.BootstrapRequest) (slicehub.SliceCredentials, error) {
	f.mu.Lock()
	b := f.bootstrap
	f.mu.Unlock()
	if b == nil {
		return slicehub.SliceCredentials{}, slicehub.Errorf("fake.bootstrap", slicehub.KindNotFound, "", "no such slice")
	}
	return b(req)
}

type fakeRoutes struct {
	mu sync.RWMutex
	m  map[int64]slicehub.Route
}

func newFakeRoutes() *fakeRoutes { return &fakeRoutes{m: map[int64]slicehub.Route{}} }

func (r *fakeRoutes) Lookup(id int64) (slicehub.Route, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	rt, ok := r.m[id]
	return rt, ok
}

func (r *fakeRoutes) set(id int64, addr string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if addr == "" {
		delete(r.m, id)
		return
	}
	r.m[id] = slicehub.Route{SliceID: id, Addr: addr, AllocID: "alloc-" + slicehub.Slice{ID: id}.IDString()}
}
