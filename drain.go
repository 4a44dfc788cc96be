package slicehub

import "time"

// A node drain (slicectl drain) as it stands: the scheduler reports it and
// the admin API shows it as it is.

// Move states of one slice, in order.
const (
	MoveWaiting = "waiting" // still running on the drained node
	MoveMoving  = "moving"  // stopped there; its replacement is not running yet
	MoveStarted = "started" // the replacement runs elsewhere; not passing in Consul yet
	MovePassing = "passing" // served from its new node
)

// SliceMove is one slice that was on the drained node.
type SliceMove struct {
	SliceID   int64  `json:"slice_id"`
	JobID     string `json:"job_id"`
	FromAlloc string `json:"from_alloc"`
	ToAlloc   string `json:"to_alloc,omitempty"`
	ToNode    string `json:"to_node,omitempty"`
	State     string `json:"state"`
}

// DrainStatus is where a drain stands.
type DrainStatus struct {
	NodeID        string      `json:"node_id"`
	NodeName      string      `json:"node_name"`
	Draining      bool        `json:"draining"`
	Eligible      bool        `json:"eligible"`
	ForceDeadline *time.Time  `json:"force_deadline,omitempty"`
	Moves         []SliceMove `json:"moves"`
	// Done: the node takes no new slices and every slice that was on it is
	// passing elsewhere.
	Done bool `json:"done"`
	// Started: this call started the drain; MovedNow: the slices this call
	// stopped on the node.
	Started  bool    `json:"started,omitempty"`
	MovedNow []int64 `json:"moved_now,omitempty"`
}
