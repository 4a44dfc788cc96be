package slicehub

// The slice lifecycle: its states, what each state means to the rest of
// the platform (the predicates), and the transitions every layer makes
// (the constructors). The scheduler, billing, admin, the store and the
// gateway ask a state what it means instead of listing states of their
// own, so a new state is declared here, once: each predicate is a switch
// that names every state, and the exhaustive analyzer (make lint) stops
// the build of a state that one of them forgets. SQL filters take their
// lists from StatesWhere; only the CHECK constraint of the slices table
// names the states again, in the migration that adds one.

// SliceState is a state of the slice lifecycle. Transitions are persisted,
// each one recorded in the slice events.
type SliceState string

const (
	// StateProvisioning: database created, child job dispatched, not yet healthy.
	StateProvisioning SliceState = "provisioning"
	// StateWarm: healthy in Consul and not bound to any user.
	StateWarm SliceState = "warm"
	// StateAssigned: bound to exactly one user.
	StateAssigned SliceState = "assigned"
	// StateSuspended: job stopped, database and profile kept (billing, admin).
	StateSuspended SliceState = "suspended"
	// StateFailed: gave up after the restart budget.
	StateFailed SliceState = "failed"
	// StateRetired: job purged; the database is dropped after retention.
	StateRetired SliceState = "retired"
)

// States lists every state, in lifecycle order. A new state is added
// here too: StatesWhere, and every count by state, go through this list.
var States = []SliceState{StateProvisioning, StateWarm, StateAssigned, StateSuspended, StateFailed, StateRetired}

// Valid reports whether s is one of the known states.
func (s SliceState) Valid() bool {
	for _, v := range States {
		if s == v {
			return true
		}
	}
	return false
}

// next is the state machine: the states a slice in state s may go to. It
// is a switch, not a table, so that make lint asks for a new state's row.
func next(s SliceState) []SliceState {
	switch s {
	case StateProvisioning:
		return []SliceState{StateWarm, StateAssigned, StateFailed, StateRetired, StateSuspended}
	case StateWarm:
		return []SliceState{StateAssigned, StateProvisioning, StateFailed, StateRetired}
	case StateAssigned:
		return []SliceState{StateProvisioning, StateSuspended, StateFailed, StateRetired, StateWarm}
	case StateSuspended:
		return []SliceState{StateProvisioning, StateAssigned, StateRetired}
	case StateFailed:
		return []SliceState{StateProvisioning, StateRetired}
	case StateRetired:
		return nil
	}
	return nil
}

// CanTransition reports whether the lifecycle allows from -> to.
// Provisioning again from warm, assigned, suspended or failed is how a slice is
// re-dispatched (repair, resume, restart) while keeping its database.
func CanTransition(from, to SliceState) bool {
	for _, v := range next(from) {
		if v == to {
			return true
		}
	}
	return false
}

// StatesWhere lists, in lifecycle order, the states for which p holds, as
// in StatesWhere(SliceState.Live). A query filters on it as a text[]
// parameter (state = ANY($1)) rather than typing the states itself.
func StatesWhere(p func(SliceState) bool) []SliceState {
	var out []SliceState
	for _, s := range States {
		if p(s) {
			out = append(out, s)
		}
	}
	return out
}

// Each predicate below names every state, so that a new state is a
// decision in each of them (make lint fails until it is); an unknown
// state satisfies none.

// Live reports whether the platform still looks after a slice in state s:
// the reconciler repairs it, and its recorded allocation may be routed.
// A retired slice is only bookkeeping (its final dump, then its database
// dropped after retention).
func (s SliceState) Live() bool {
	switch s {
	case StateProvisioning, StateWarm, StateAssigned, StateSuspended, StateFailed:
		return true
	case StateRetired:
		return false
	}
	return false
}

// Runs reports whether a slice in state s is meant to have its job
// running: the reconciler re-dispatches a lost job of such a slice and
// stops the job of any other live one, only such a slice may bootstrap,
// and only such a slice is asked for its WhatsApp state.
func (s SliceState) Runs() bool {
	switch s {
	case StateProvisioning, StateWarm, StateAssigned:
		return true
	case StateSuspended, StateFailed, StateRetired:
		return false
	}
	return false
}

// Ready reports whether a slice in state s has passed its health check
// and is in service (for its user, or waiting for one in the warm pool):
// the reconciler watches its health from then on, and `slicectl --wait`
// stops waiting.
func (s SliceState) Ready() bool {
	switch s {
	case StateWarm, StateAssigned:
		return true
	case StateProvisioning, StateSuspended, StateFailed, StateRetired:
		return false
	}
	return false
}

// Routable reports whether the gateway proxies its user's requests to a
// slice in state s (given a passing instance in Consul).
func (s SliceState) Routable() bool {
	switch s {
	case StateAssigned:
		return true
	case StateProvisioning, StateWarm, StateSuspended, StateFailed, StateRetired:
		return false
	}
	return false
}

// Billable reports whether a slice in state s runs, or is starting, for
// its user at the user's cost: billing suspends such a slice when its user
// stops paying (Suspend starts from these states), and a reassignment
// parks the user's old one the same way.
func (s SliceState) Billable() bool {
	switch s {
	case StateProvisioning, StateAssigned:
		return true
	case StateWarm, StateSuspended, StateFailed, StateRetired:
		return false
	}
	return false
}

// Bindable reports whether an admin may bind a slice in state s to a
// user (Reassign). A failed slice needs an operator first; a retired one
// is gone.
func (s SliceState) Bindable() bool {
	switch s {
	case StateProvisioning, StateWarm, StateAssigned, StateSuspended:
		return true
	case StateFailed, StateRetired:
		return false
	}
	return false
}

// Restorable reports whether an admin may restore a backup into a slice in
// state s: it holds a user's data and its job is settled (an assigned
// slice is suspended for the restore and resumed after). A starting slice
// may still be migrating its database, a warm one holds nobody's data, and
// a retired one is gone.
func (s SliceState) Restorable() bool {
	switch s {
	case StateAssigned, StateSuspended, StateFailed:
		return true
	case StateProvisioning, StateWarm, StateRetired:
		return false
	}
	return false
}

// Change describes one transition of a slice: the states it may start
// from, the state it goes to, who asks and why, and edits made in the same
// transaction. The constructors below build the transitions the platform
// makes, so that the scheduler, billing and admin agree on where each one
// may start.
type Change struct {
	From   []SliceState
	To     SliceState
	Actor  string
	Reason string
	// SetUser binds (value > 0) or releases (value < 0) the user; 0 keeps it.
	SetUser int64
	// SetJob replaces the job id when non-nil ("" clears it).
	SetJob *string
	// AddRestart increments the dispatch generation (Slice.Restarts).
	AddRestart bool
}

// At narrows c to start from s only: the state its caller just read, so
// that the transition fails with a conflict if the slice moved meanwhile.
// A state c does not start from leaves From empty, which no slice is in.
func (c Change) At(s SliceState) Change {
	if c.StartsFrom(s) {
		c.From = []SliceState{s}
	} else {
		c.From = nil
	}
	return c
}

// StartsFrom reports whether c may start from state s.
func (c Change) StartsFrom(s SliceState) bool {
	for _, v := range c.From {
		if v == s {
			return true
		}
	}
	return false
}

// newJob is the SetJob of a transition that drops the slice's job: the
// leader dispatches a new generation.
func newJob() *string {
	empty := ""
	return &empty
}

// Suspend stops a slice that runs for its user and keeps its database and
// profile (billing when the user stops paying, or an admin). The slice
// stays bound to its user.
func Suspend(actor, reason string) Change {
	return Change{From: StatesWhere(SliceState.Billable), To: StateSuspended, Actor: actor, Reason: reason}
}

// Resume dispatches a suspended slice again: a new generation of its job,
// same database and profile, so WhatsApp stays linked.
func Resume(actor, reason string) Change {
	return Change{From: []SliceState{StateSuspended}, To: StateProvisioning, SetJob: newJob(), AddRestart: true,
		Actor: actor, Reason: reason}
}

// Restart replaces the job of a slice in service, or of a failed one, with
// a new generation (an admin's restart). A slice still starting is
// restarted already.
func Restart(actor, reason string) Change {
	return Change{From: StatesWhere(func(s SliceState) bool { return s.Ready() || s == StateFailed }),
		To: StateProvisioning, SetJob: newJob(), AddRestart: true, Actor: actor, Reason: reason}
}

// Redispatch replaces the job of a slice that should run and does not
// (the scheduler's repair): a new generation, same database and user.
func Redispatch(actor, reason string) Change {
	return Change{From: StatesWhere(SliceState.Runs), To: StateProvisioning, SetJob: newJob(), AddRestart: true,
		Actor: actor, Reason: reason}
}

// Fail gives up on a slice that should run: its restart budget is spent,
// and a human has to look.
func Fail(actor, reason string) Change {
	return Change{From: StatesWhere(SliceState.Runs), To: StateFailed, Actor: actor, Reason: reason}
}

// Retire stops and purges a live slice for good. Store methods that retire
// add the retirement's own bookkeeping (releasing the user, the final
// dump).
func Retire(actor, reason string) Change {
	return Change{From: StatesWhere(SliceState.Live), To: StateRetired, Actor: actor, Reason: reason}
}

// Dispatched records jobID as the job of a provisioning slice: the one the
// scheduler just dispatched, or one it finds dispatched but not recorded.
func Dispatched(actor, jobID, reason string) Change {
	return Change{From: []SliceState{StateProvisioning}, To: StateProvisioning, SetJob: &jobID, Actor: actor, Reason: reason}
}

// Healthy moves a provisioning slice that passes its health check into
// service: assigned when a user is already bound to it, warm otherwise.
func Healthy(actor, reason string, bound bool) Change {
	to := StateWarm
	if bound {
		to = StateAssigned
	}
	return Change{From: []SliceState{StateProvisioning}, To: to, Actor: actor, Reason: reason}
}

// Adopt makes jobID, dispatched by someone else (an operator's hand
// dispatch), the job of a slice that should run or has failed; a new
// generation unless the slice never had a job.
func Adopt(actor, jobID, reason string, newGeneration bool) Change {
	return Change{From: StatesWhere(func(s SliceState) bool { return s.Runs() || s == StateFailed }),
		To: StateProvisioning, SetJob: &jobID, AddRestart: newGeneration, Actor: actor, Reason: reason}
}
