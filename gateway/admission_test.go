package gateway

import (
	"context"
	"sync"
	"testing"

	"github.com/slicehub/slicehub"
	"github.com/slicehub/slicehub/gateway/pages"
)

// fakeGate is a pairing gate whose answer the test sets; it records what
// the gateway asked.
type fakeGate struct {
	mu    sync.Mutex
	pm    slicehub.Permit
	asked []string // wa state, ",importing" when so
}

func (g *fakeGate) Pairing(_ context.Context, _ int64, wa string, importing bool) (slicehub.Permit, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if importing {
		wa += ",importing"
	}
	g.asked = append(g.asked, wa)
	return g.pm, nil
}

func (g *fakeGate) set(pm slicehub.Permit) {
	g.mu.Lock()
	g.pm = pm
	g.mu.Unlock()
}

// queuedProgress adds a dispatch queue place to the fake progress.
type queuedProgress struct {
	*fakeProgress
	mu    sync.Mutex
	place *slicehub.QueuePlace
}

func (q *queuedProgress) SliceProgress(ctx context.Context, userID int64) (slicehub.SliceProgress, error) {
	p, err := q.fakeProgress.SliceProgress(ctx, userID)
	q.mu.Lock()
	p.Queue = q.place
	q.mu.Unlock()
	return p, err
}

// Admission on the workspace page: a user waiting for a dispatch sees the
// place in line; a user whose slice shows a QR code sees no code but the
// place until the gate grants it; then the code; and once linked the gate
// is told, so that the permit moves on.
func TestWorkspaceShowsTheQueue(t *testing.T) {
	gate := &fakeGate{}
	qp := &queuedProgress{fakeProgress: newFakeProgress(), place: &slicehub.QueuePlace{For: slicehub.QueueDispatch, Position: 3}}
	e := newPageEnv(t, func(_ *Config, d *Deps) { d.Pairing = gate; d.Progress = qp })
	qp.fakeProgress = e.progress
	e.slices.claimWarm = false
	u := e.signup("queue@example.com")
	sl := e.slices.sliceOf(u.id)
	ws := newWASlice(t, sl.ID)
	e.progress.set(u.id, sl.ID, slicehub.StageDatabase)

	st, _ := e.openEvents(u.client)
	got := st.untilStatus("dispatch queue", func(w pages.WorkspaceStatus) bool { return w.Queued != "" })
	if got.Queued != "dispatch" || got.QueuePosition != 3 || got.Phase != "starting" {
		t.Fatalf("status %+v; want queued for dispatch at place 3", got)
	}

	qp.mu.Lock()
	qp.place = nil
	qp.mu.Unlock()
	gate.set(slicehub.Permit{Queue: &slicehub.QueuePlace{For: slicehub.QueuePairing, Position: 2}})
	e.slices.set(u.id, slicehub.Slice{ID: sl.ID, State: slicehub.StateAssigned, UserID: u.id})
	e.routes.set(sl.ID, ws.addr())
	e.srv.InvalidateSlice(sl.ID)
	ws.set(slicehub.WAQR)
	got = st.untilStatus("pairing queue", func(w pages.WorkspaceStatus) bool { return w.Queued == "pairing" })
	if got.QueuePosition != 2 || got.QR != nil || got.WhatsApp != slicehub.WAQR {
		t.Fatalf("status %+v; want place 2 for pairing and no QR code", got)
	}

	gate.set(slicehub.Permit{Granted: true})
	got = st.untilStatus("QR granted", func(w pages.WorkspaceStatus) bool { return w.QR != nil })
	if got.Queued != "" || got.QueuePosition != 0 {
		t.Fatalf("status %+v; want the code and no queue", got)
	}

	ws.set(slicehub.WAConnected)
	st.untilStatus("connected", func(w pages.WorkspaceStatus) bool { return w.Phase == "connected" })
	gate.mu.Lock()
	last := gate.asked[len(gate.asked)-1]
	gate.mu.Unlock()
	if last != slicehub.WAConnected {
		t.Fatalf("the gate was last asked %q; want %q (the permit given back)", last, slicehub.WAConnected)
	}
}
