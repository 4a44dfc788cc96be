package scheduler

import (
	"context"
	"sort"
	"time"

	"github.com/slicehub/slicehub"
)

// Node drain: take a Nomad client out of service and move its slices to the
// other nodes, following each one until it is running elsewhere and passing
// in Consul.
//
// How Nomad treats our slices under a drain (Nomad 1.6,
// nomad/drainer/watch_jobs.go): slices are dispatched children of a batch
// job, and the drainer never migrates batch allocations on its own; they
// stay on the draining node until the drain's deadline, when Nomad stops
// them all at once and the reconciler places a replacement elsewhere
// (batch allocations stopped for a migration are replaced, whatever their
// reschedule budget). Waiting for the deadline would only delay every move
// and then move them all together, so Drain moves them itself: it stops a
// few allocations at a time (Nomad's alloc stop, which replaces the
// allocation on an eligible node: the draining node is no longer one) and
// stops more as the moved ones turn passing. The drain deadline stays as
// the backstop: whatever is still on the node then is stopped by Nomad.
//
// The status is computed afresh from Nomad and Consul at each call, and
// each call moves the next few, so any gateway replica can serve the
// follow-up calls of one drain and nothing is lost when a caller goes
// away (the deadline then finishes the job).

// NodeDrainer is implemented by a Nomad that can drain nodes
// (*nomad.Client).
type NodeDrainer interface {
	// FindNode resolves a node by exact ID, exact name or unique ID prefix;
	// KindNotFound when none matches, KindInvalid when a prefix is
	// ambiguous.
	FindNode(ctx context.Context, ref string) (DrainNode, error)
	// DrainNode marks the node ineligible and sets a drain with this
	// deadline (Nomad stops what is left on the node when it passes).
	DrainNode(ctx context.Context, nodeID string, deadline time.Duration) error
	// StopAlloc stops one allocation; Nomad places its replacement.
	StopAlloc(ctx context.Context, allocID string) error
}

// The drain's status is the domain's (slicehub.DrainStatus), which the
// admin API shows as it is.
const (
	MoveWaiting = slicehub.MoveWaiting
	MoveMoving  = slicehub.MoveMoving
	MoveStarted = slicehub.MoveStarted
	MovePassing = slicehub.MovePassing
)

type (
	SliceMove   = slicehub.SliceMove
	DrainStatus = slicehub.DrainStatus
)

// DrainOptions tune Drain (the root package's, so that the admin API
// fills them without importing this package).
type DrainOptions = slicehub.DrainOptions

func (s *Scheduler) drainer(op string) (NodeDrainer, error) {
	d, ok := s.nomad.(NodeDrainer)
	if !ok {
		return nil, slicehub.Errorf(op, slicehub.KindUnavailable, "drain_unsupported", "this scheduler's Nomad cannot drain nodes")
	}
	return d, nil
}

// Drain starts draining the node ref (name, ID or ID prefix) if it is not
// draining yet, moves the next slices off it (at most MaxParallel moving at
// once), and returns the status. Call it again until Done.
func (s *Scheduler) Drain(ctx context.Context, ref string, o DrainOptions) (DrainStatus, error) {
	const op = "scheduler.drain"
	if o.Deadline <= 0 {
		o.Deadline = 5 * time.Minute
	}
	if o.MaxParallel <= 0 {
		o.MaxParallel = 2
	}
	d, err := s.drainer(op)
	if err != nil {
		return DrainStatus{}, err
	}
	node, err := d.FindNode(ctx, ref)
	if err != nil {
		return DrainStatus{}, err
	}
	// An ineligible node that is not draining was drained already (or
	// taken out by hand): the next calls of a finished drain must not
	// start another one.
	started := !node.Draining && node.Eligible
	if started {
		if err := d.DrainNode(ctx, node.ID, o.Deadline); err != nil {
			return DrainStatus{}, err
		}
		s.log.Info("node drain started", "node", node.Name, "node_id", node.ID, "deadline", o.Deadline, "actor", o.Actor)
		if node, err = d.FindNode(ctx, node.ID); err != nil {
			return DrainStatus{}, err
		}
	}
	st, err := s.drainStatus(ctx, node)
	st.Started = started
	if err != nil {
		return st, err
	}
	inFlight := 0
	for _, m := range st.Moves {
		if m.State == MoveMoving || m.State == MoveStarted {
			inFlight++
		}
	}
	for i := range st.Moves {
		m := &st.Moves[i]
		if inFlight >= o.MaxParallel {
			break
		}
		if m.State != MoveWaiting {
			continue
		}
		if err := d.StopAlloc(ctx, m.FromAlloc); err != nil {
			return st, err
		}
		s.log.Info("moving slice off a draining node", "slice_id", m.SliceID, "job_id", m.JobID, "alloc_id", m.FromAlloc, "node", node.Name)
		m.State = MoveMoving
		st.MovedNow = append(st.MovedNow, m.SliceID)
		inFlight++
	}
	return st, nil
}

// DrainStatus returns where the drain of node ref stands, without acting.
func (s *Scheduler) DrainStatus(ctx context.Context, ref string) (DrainStatus, error) {
	const op = "scheduler.drain_status"
	d, err := s.drainer(op)
	if err != nil {
		return DrainStatus{}, err
	}
	node, err := d.FindNode(ctx, ref)
	if err != nil {
		return DrainStatus{}, err
	}
	return s.drainStatus(ctx, node)
}

func (s *Scheduler) drainStatus(ctx context.Context, node DrainNode) (DrainStatus, error) {
	st := DrainStatus{NodeID: node.ID, NodeName: node.Name, Draining: node.Draining, Eligible: node.Eligible}
	if !node.ForceDeadline.IsZero() {
		t := node.ForceDeadline
		st.ForceDeadline = &t
	}
	children, err := s.nomad.Children(ctx)
	if err != nil {
		return st, err
	}
	allocs, err := s.nomad.Allocations(ctx)
	if err != nil {
		return st, err
	}
	nodes, err := s.nomad.Nodes(ctx)
	if err != nil {
		return st, err
	}
	nodeName := make(map[string]string, len(nodes))
	for _, n := range nodes {
		nodeName[n.ID] = n.Name
	}
	slice := map[string]int64{}
	for _, c := range children {
		if c.Alive() && c.SliceID != 0 {
			slice[c.JobID] = c.SliceID
		}
	}
	byJob := map[string][]Alloc{}
	for _, a := range allocs {
		if _, ok := slice[a.JobID]; ok {
			byJob[a.JobID] = append(byJob[a.JobID], a)
		}
	}
	routes := s.routes.Snapshot()
	for job, as := range byJob {
		var from, to *Alloc
		for i := range as {
			a := &as[i]
			if a.NodeID == node.ID {
				// The one still there wins over older terminal ones.
				if from == nil || (a.Holds() && !from.Holds()) {
					from = a
				}
			} else if a.DesiredStatus == slicehub.AllocDesiredRun && a.Holds() {
				to = a
			}
		}
		if from == nil {
			continue // never on this node
		}
		m := SliceMove{SliceID: slice[job], JobID: job, FromAlloc: from.ID}
		switch {
		case from.DesiredStatus == slicehub.AllocDesiredRun && from.Holds():
			m.State = MoveWaiting
		case to == nil:
			m.State = MoveMoving
		default:
			m.ToAlloc, m.ToNode = to.ID, nodeName[to.NodeID]
			m.State = MoveMoving
			if to.Running() {
				m.State = MoveStarted
				if rt, ok := routes[m.SliceID]; ok && rt.AllocID == to.ID {
					m.State = MovePassing
				}
			}
		}
		st.Moves = append(st.Moves, m)
	}
	sort.Slice(st.Moves, func(i, j int) bool { return st.Moves[i].SliceID < st.Moves[j].SliceID })
	st.Done = !st.Eligible
	for _, m := range st.Moves {
		st.Done = st.Done && m.State == MovePassing
	}
	return st, nil
}
