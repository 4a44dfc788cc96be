// Package adminapi is the admin API's wire: the JSON shapes of
// /admin/api/ that the gateway (package admin) serves and slicectl (package
// ops) reads. It holds types only, standard library and the domain
// package, so that a client links no server: the domain types carry no
// JSON tags (they are not an API), and the API names their fields here
// once, in snake_case.
package adminapi

import (
	"time"

	"github.com/slicehub/slicehub"
)

// SliceJSON is one slice.
type SliceJSON struct {
	ID             int64               `json:"id"`
	State          slicehub.SliceState `json:"state"`
	UserID         int64               `json:"user_id,omitempty"`
	JobID          string              `json:"job_id,omitempty"`
	DBName         string              `json:"db_name,omitempty"`
	Restarts       int                 `json:"restarts"`
	CreatedAt      time.Time           `json:"created_at"`
	StateChangedAt time.Time           `json:"state_changed_at"`
	Healthy        bool                `json:"healthy"`
}

// EventJSON is one recorded transition of a slice.
type EventJSON struct {
	At     time.Time           `json:"at"`
	Actor  string              `json:"actor"`
	From   slicehub.SliceState `json:"from,omitempty"`
	To     slicehub.SliceState `json:"to"`
	Reason string              `json:"reason,omitempty"`
}

// RouteJSON is where a healthy slice answers.
type RouteJSON struct {
	Addr    string `json:"addr"`
	AllocID string `json:"alloc_id"`
}

// SliceDetail is GET /admin/api/slices/:id.
type SliceDetail struct {
	Slice    SliceJSON               `json:"slice"`
	Route    *RouteJSON              `json:"route"`
	Progress *slicehub.SliceProgress `json:"progress"`
	Events   []EventJSON             `json:"events"`
}

// PoolJSON is the warm pool's target and state.
type PoolJSON struct {
	MinWarm   int  `json:"min_warm"`
	Warm      int  `json:"warm"`
	Starting  int  `json:"starting"` // provisioning, bound or not
	MaxSlices int  `json:"max_slices"`
	Paused    bool `json:"paused"`
}

// Status is GET /admin/api/status.
type Status struct {
	Slices   map[slicehub.SliceState]int `json:"slices"`
	Pool     PoolJSON                    `json:"pool"`
	Capacity *slicehub.Capacity          `json:"capacity"`
	// CapacityError says why Capacity is missing (Nomad did not answer).
	CapacityError string `json:"capacity_error,omitempty"`
}

// UserJSON is one account.
type UserJSON struct {
	ID         int64      `json:"id"`
	Email      string     `json:"email"`
	IsAdmin    bool       `json:"is_admin"`
	CreatedAt  time.Time  `json:"created_at"`
	DisabledAt *time.Time `json:"disabled_at,omitempty"`
	SliceID    int64      `json:"slice_id,omitempty"`
}

// ActionBody is the body of the slice, pool and user actions; each action
// reads the fields it needs (slicehub.AdminActions says which). An empty
// body is an empty object.
type ActionBody struct {
	Confirm string `json:"confirm,omitempty"`
	UserID  int64  `json:"user_id,omitempty"`
	MinWarm *int   `json:"min_warm,omitempty"`
	Note    string `json:"note,omitempty"`
}

// SliceAnswer is the answer of a slice action.
type SliceAnswer struct {
	Slice SliceJSON `json:"slice"`
}

// PoolAnswer is the answer of a pool action.
type PoolAnswer struct {
	Pool PoolJSON `json:"pool"`
}

// UserAnswer is the answer of a user action.
type UserAnswer struct {
	User UserJSON `json:"user"`
}

// DrainRequest is the body of POST /admin/api/nodes/:node/drain.
type DrainRequest struct {
	Confirm string `json:"confirm"`
	// Deadline is Nomad's drain deadline (Go duration); default 5m, at most
	// 24h. What is still on the node then is stopped by Nomad.
	Deadline string `json:"deadline"`
	// MaxParallel bounds the slices moving at once; default 2, at most 50.
	MaxParallel int `json:"max_parallel"`
}

// DrainJSON is the answer of both drain routes.
type DrainJSON struct {
	Drain slicehub.DrainStatus `json:"drain"`
}
