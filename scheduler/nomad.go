package scheduler

import (
	"context"
	"regexp"

	"github.com/slicehub/slicehub"
)

// The scheduler is policy only: package nomad talks to Nomad and
// implements the interfaces below with the root package's values, which
// this package names with aliases.

// Nomad is what the scheduler needs from Nomad. *nomad.Client implements
// it over github.com/hashicorp/nomad/api; tests of pure pool logic replace it
// with a fake.
type Nomad interface {
	// Dispatch starts a child of the parameterized slice job for generation
	// gen of the slice. A repeated call with the same slice and generation
	// returns the existing child instead of a second one (while Nomad has
	// not garbage-collected it), and the child's ID carries both, so that
	// the reconciler can also recognise it after that.
	Dispatch(ctx context.Context, sliceID int64, gen int) (jobID string, err error)
	// Children lists the dispatched children of the slice job.
	Children(ctx context.Context) ([]Child, error)
	// Allocations lists every allocation Nomad knows, of any job: those of
	// the children tell what runs and how often it failed, and all of them
	// count against the nodes' capacity.
	Allocations(ctx context.Context) ([]Alloc, error)
	// JobAllocations lists the allocations of one child (progress).
	JobAllocations(ctx context.Context, jobID string) ([]Alloc, error)
	// Nodes lists the client nodes with their resources.
	Nodes(ctx context.Context) ([]Node, error)
	// SliceResources is what one slice asks for, from the parent job.
	SliceResources(ctx context.Context) (Resources, error)
	// Alloc returns one allocation; KindNotFound when Nomad does not know it.
	Alloc(ctx context.Context, allocID string) (Alloc, error)
	// Stop stops a child; purge also removes it from Nomad's state.
	Stop(ctx context.Context, jobID string, purge bool) error
}

// EventSource is implemented by a Nomad that can stream its events. The
// scheduler follows it, when available, to reconcile as soon as a child or
// an allocation changes instead of waiting for the next interval.
type EventSource interface {
	// Events streams from the latest index until ctx ends or the stream
	// breaks (then the last value carries Err and the channel closes).
	Events(ctx context.Context) (<-chan Event, error)
}

// What Nomad reports, as the root package's values.
type (
	Child     = slicehub.SliceJob
	Alloc     = slicehub.Alloc
	Node      = slicehub.ClusterNode
	Resources = slicehub.SliceResources
	Identity  = slicehub.WorkloadIdentity
	Event     = slicehub.ClusterEvent
	DrainNode = slicehub.DrainNode
)

// IdentityVerifier is implemented by a Nomad that can verify workload
// identities (*nomad.Client). Nomad 1.6 has no JWKS endpoint and its tokens
// neither expire nor name an audience, so Nomad itself is asked.
type IdentityVerifier interface {
	// VerifyIdentity returns the claims of jwt when Nomad accepts it:
	// signed by Nomad, and its allocation exists and is not terminal.
	// KindUnauthorized otherwise.
	VerifyIdentity(ctx context.Context, jwt string) (Identity, error)
	// EnforcesACLs reports whether Nomad checks tokens at all: without
	// ACLs it accepts any, and an identity proves nothing.
	EnforcesACLs(ctx context.Context) (bool, error)
}

// uuidRE is the shape of an allocation ID, checked before Nomad is asked.
var uuidRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)
