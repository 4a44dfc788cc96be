package scheduler

// Admission control (issue 17). Three bursts cost a host memory and CPU:
// a slice starting (Chromium and the page loading), a user linking
// WhatsApp (QR to linked) and the history import that follows. A burst of
// signups on one host must never push a slice past its budget or the host
// into swap, so each is capped per host, and users wait in line, in the
// order they came, and see their place.
//
// Who holds the permits, and why there:
//   - Dispatches: the leader's reconcile is the only place that dispatches,
//     one pass at a time, from PostgreSQL's rows and Nomad's allocations;
//     the count of slices in flight (dispatched, not yet healthy) is
//     derived in every pass from those, so nothing is held that a crash
//     could leak, and a new leader sees the same count.
//   - Pairings and imports: the slice may not call the gateway beyond its
//     bootstrap (issue 9), and a user can link only a QR code they see. So
//     the gateway gates the QR code: it asks the pairing gate (AdmitPairing,
//     in PostgreSQL, so any replica may serve it) before it shows one, and
//     renews the permit at each poll of the workspace page. A permit moves
//     from waiting to pairing to import as the slice reports qr, then
//     connected while importing (GET /api/status/state's "importing"), and
//     is given back once the slice is linked and imported. Permits nobody
//     renews expire (the user closed the page), and holds bound how long a
//     QR code or an import may keep one. "importing" is the slice's word, so
//     it buys one import permit per link (per allocation, and again only
//     after a QR code is granted): a compromised slice reporting it forever
//     holds one slot for ImportHold at most (postgres.AdmitPairing).
//
// "Per host" is the node's address: slices advertise the host's address,
// which the scheduler records for each slice (alloc_addr). Dispatches are
// counted per Nomad node, and Nomad chooses where a dispatch lands: so a new
// dispatch is allowed only if it would not put any node over the cap,
// counting a dispatch not placed yet against every node.

import (
	"context"
	"math"
	"time"

	"github.com/slicehub/slicehub"
)

// Admission holds the per-host caps. 0 (the default) leaves a cap off.
type Admission struct {
	// Dispatches caps the slices dispatched and not yet healthy per node.
	// Repairs of running slices are counted but never held back.
	Dispatches int
	// Pairings caps the users shown a QR code at once per host.
	Pairings int
	// Imports caps the slices linking or importing their history at once
	// per host (a pairing leads to an import, so it counts here too).
	Imports int
	// PairingHold is how long a user keeps a granted QR code without
	// linking; then the permit goes to the next in line and the user joins
	// the back of it. Default 5 minutes.
	PairingHold time.Duration
	// ImportHold bounds an import permit: an open workspace page gives it
	// back when the slice says the import ended, but a page closed once
	// linked, or a slice that never says so, must not keep it (a link
	// gets one import permit, so the bound holds against a hostile
	// slice). The measured import of 1,000 chats / 50,000 messages takes
	// 9-15 s (jobs/README.md), so the default of 3 minutes covers far
	// larger accounts.
	ImportHold time.Duration
	// TTL drops a waiting or pairing permit not renewed for this long: the
	// workspace page renews it every second or so while it is open.
	// Default 1 minute.
	TTL time.Duration
}

func (a *Admission) defaults() {
	if a.PairingHold <= 0 {
		a.PairingHold = 5 * time.Minute
	}
	if a.ImportHold <= 0 {
		a.ImportHold = 3 * time.Minute
	}
	if a.TTL <= 0 {
		a.TTL = time.Minute
	}
}

// PairingStore keeps the pairing permits (*postgres.DB).
type PairingStore interface {
	AdmitPairing(ctx context.Context, a slicehub.PairingAsk) (slicehub.Permit, error)
}

// dispatchRoom is how many slices this pass may dispatch so that, wherever
// Nomad places them, no node has more than Admission.Dispatches in flight.
// In flight: provisioning with an alive job and no passing instance yet.
func (s *Scheduler) dispatchRoom(p *pass, rows []slicehub.Slice) (room, inFlight int) {
	limit := s.cfg.Admission.Dispatches
	perNode := map[string]int{}
	unplaced, worst := 0, 0
	for _, sl := range rows {
		if sl.State != slicehub.StateProvisioning || sl.JobID == "" || !p.alive(sl.JobID) || p.healthy(sl) {
			continue
		}
		inFlight++
		if a, ok := p.current(sl.JobID); ok {
			perNode[a.NodeID]++
			worst = max(worst, perNode[a.NodeID])
		} else {
			unplaced++
		}
	}
	s.cfg.Metrics.DispatchesInFlight.Set(float64(inFlight))
	if limit <= 0 {
		return math.MaxInt, inFlight
	}
	return max(0, limit-worst-unplaced), inFlight
}

// admitDispatch takes one dispatch permit of the pass; false (and the
// reason in the pass) when the cap is reached.
func (s *Scheduler) admitDispatch(p *pass, replacing bool) bool {
	if replacing {
		p.room-- // counted, never held back: a user's slice is down
		return true
	}
	if p.room <= 0 {
		if p.held == 0 {
			s.log.Info("dispatch cap reached: slices wait in line", "cap_per_node", s.cfg.Admission.Dispatches)
		}
		p.held++
		return false
	}
	p.room--
	return true
}

// dispatchQueue is the user's place in line for a dispatch: slices of users
// waiting for their job go in id order (the order the reconcile dispatches
// them in, before any warm refill).
func (s *Scheduler) dispatchQueue(ctx context.Context, sliceID int64) (*slicehub.QueuePlace, error) {
	rows, err := s.store.Slices(ctx, slicehub.StateProvisioning)
	if err != nil {
		return nil, err
	}
	pos := 0
	for _, sl := range rows {
		if sl.UserID == 0 || sl.JobID != "" {
			continue
		}
		pos++
		if sl.ID == sliceID {
			return &slicehub.QueuePlace{For: slicehub.QueueDispatch, Position: pos}, nil
		}
	}
	return nil, nil
}

// Pairing is the gate before a user is shown a QR code (see the package
// comment above): the gateway calls it with what the slice reports, at
// every look at the workspace. Granted: show the code. Otherwise the
// answer's Queue is the user's place in line. Without a pairing store or
// caps, everything is granted.
func (s *Scheduler) Pairing(ctx context.Context, sliceID int64, waState string, importing bool) (slicehub.Permit, error) {
	const op = "scheduler.pairing"
	a := s.cfg.Admission
	st, ok := s.store.(PairingStore)
	if !ok || (a.Pairings <= 0 && a.Imports <= 0) {
		return slicehub.Permit{Granted: true}, nil
	}
	phase := slicehub.PhaseDone
	switch {
	case waState == slicehub.WAQR:
		phase = slicehub.PhaseQR
	case waState == slicehub.WAConnected && importing:
		phase = slicehub.PhaseImporting
	}
	pm, err := st.AdmitPairing(ctx, slicehub.PairingAsk{SliceID: sliceID, Phase: phase, Pairings: a.Pairings, Imports: a.Imports,
		PairingHold: a.PairingHold, ImportHold: a.ImportHold, TTL: a.TTL, Now: s.cfg.Now()})
	if err != nil {
		return slicehub.Permit{}, slicehub.Wrap(op, slicehub.KindOf(err), err)
	}
	return pm, nil
}
