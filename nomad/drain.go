package nomad

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/hashicorp/nomad/api"

	"github.com/slicehub/slicehub"
)

// A node drain's Nomad side: find the node, set its drain, stop one
// allocation at a time. The policy (which allocations, how many at once,
// when the drain is done) is the scheduler's (scheduler/drain.go).

// FindNode implements scheduler.NodeDrainer.
func (n *Client) FindNode(ctx context.Context, ref string) (slicehub.DrainNode, error) {
	const op = "nomad.find_node"
	ref = strings.TrimSpace(ref)
	if ref == "" {
		return slicehub.DrainNode{}, slicehub.Errorf(op, slicehub.KindInvalid, "invalid_node", "a node name or ID is required")
	}
	stubs, _, err := n.API.Nodes().List((&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return slicehub.DrainNode{}, slicehub.Wrap(op, slicehub.KindUnavailable, err)
	}
	var match []*api.NodeListStub
	for _, s := range stubs {
		if s.ID == ref || s.Name == ref {
			match = []*api.NodeListStub{s}
			break
		}
		if strings.HasPrefix(s.ID, ref) {
			match = append(match, s)
		}
	}
	switch len(match) {
	case 0:
		return slicehub.DrainNode{}, slicehub.Errorf(op, slicehub.KindNotFound, "node_not_found", "no Nomad node named %q or with an ID starting with it", ref)
	case 1:
	default:
		return slicehub.DrainNode{}, slicehub.Errorf(op, slicehub.KindInvalid, "node_ambiguous", "%d Nomad nodes have an ID starting with %q; give more of it", len(match), ref)
	}
	node, _, err := n.API.Nodes().Info(match[0].ID, (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		var ue api.UnexpectedResponseError
		if errors.As(err, &ue) && ue.StatusCode() == http.StatusNotFound {
			return slicehub.DrainNode{}, slicehub.Errorf(op, slicehub.KindNotFound, "node_not_found", "node %s is gone", match[0].ID)
		}
		return slicehub.DrainNode{}, slicehub.Wrap(op, slicehub.KindUnavailable, err)
	}
	out := slicehub.DrainNode{ID: node.ID, Name: node.Name, Draining: node.DrainStrategy != nil,
		Eligible: node.SchedulingEligibility == api.NodeSchedulingEligible}
	if node.DrainStrategy != nil {
		out.ForceDeadline = node.DrainStrategy.ForceDeadline
	}
	return out, nil
}

// DrainNode implements scheduler.NodeDrainer.
func (n *Client) DrainNode(ctx context.Context, nodeID string, deadline time.Duration) error {
	const op = "nomad.drain_node"
	spec := &api.DrainSpec{Deadline: deadline}
	if _, err := n.API.Nodes().UpdateDrain(nodeID, spec, false, (&api.WriteOptions{}).WithContext(ctx)); err != nil {
		return slicehub.Wrap(op, slicehub.KindUnavailable, fmt.Errorf("drain %s: %w", nodeID, err))
	}
	return nil
}

// StopAlloc implements scheduler.NodeDrainer.
func (n *Client) StopAlloc(ctx context.Context, allocID string) error {
	const op = "nomad.stop_alloc"
	if _, err := n.API.Allocations().Stop(&api.Allocation{ID: allocID}, (&api.QueryOptions{}).WithContext(ctx)); err != nil {
		var ue api.UnexpectedResponseError
		if errors.As(err, &ue) && ue.StatusCode() == http.StatusNotFound {
			return nil // gone already: nothing to move
		}
		return slicehub.Wrap(op, slicehub.KindUnavailable, fmt.Errorf("stop allocation %s: %w", allocID, err))
	}
	return nil
}
