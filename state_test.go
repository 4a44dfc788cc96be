package slicehub

import "testing"

// predicates are every predicate of state.go, by name.
var predicates = map[string]func(SliceState) bool{
	"Live": SliceState.Live, "Runs": SliceState.Runs, "Ready": SliceState.Ready, "Routable": SliceState.Routable,
	"Billable": SliceState.Billable, "Bindable": SliceState.Bindable, "Restorable": SliceState.Restorable,
}

// The predicates nest the way the lifecycle reads: a slice a user is
// routed to is in service, one in service runs, one that runs is live;
// billing suspends only a slice that runs; a retired slice is none of them.
func TestStatePredicatesNest(t *testing.T) {
	implies := []struct{ a, b string }{
		{"Routable", "Ready"}, {"Ready", "Runs"}, {"Runs", "Live"}, {"Billable", "Runs"},
		{"Routable", "Billable"}, {"Bindable", "Live"}, {"Restorable", "Live"}, {"Routable", "Bindable"},
	}
	for _, s := range States {
		for _, im := range implies {
			if predicates[im.a](s) && !predicates[im.b](s) {
				t.Errorf("%s is %s but not %s", s, im.a, im.b)
			}
		}
	}
	for name, p := range predicates {
		if p(StateRetired) {
			t.Errorf("retired is %s; a retired slice is only bookkeeping", name)
		}
		if p(SliceState("paused")) {
			t.Errorf("an unknown state is %s", name)
		}
		if len(StatesWhere(p)) == 0 {
			t.Errorf("no state is %s", name)
		}
	}
}

func TestStatesWhereKeepsLifecycleOrder(t *testing.T) {
	for name, p := range predicates {
		got := StatesWhere(p)
		i := 0
		for _, s := range States {
			if !p(s) {
				continue
			}
			if i >= len(got) || got[i] != s {
				t.Errorf("StatesWhere(%s) = %v; want the %s states in lifecycle order (%v)", name, got, name, States)
				break
			}
			i++
		}
		if i != len(got) {
			t.Errorf("StatesWhere(%s) = %v has states that are not %s", name, got, name)
		}
	}
	if got := StatesWhere(func(SliceState) bool { return false }); len(got) != 0 {
		t.Errorf("StatesWhere(never) = %v", got)
	}
}

// Every constructor starts only from states the state machine lets reach
// its destination (or the destination itself: recording a job), so a
// change built here never fails on the lifecycle, only on a race.
func TestTransitionConstructorsFollowTheStateMachine(t *testing.T) {
	changes := map[string]Change{
		"Suspend": Suspend("admin:1", "r"), "Resume": Resume("admin:1", "r"), "Restart": Restart("admin:1", "r"),
		"Redispatch": Redispatch("scheduler", "r"), "Fail": Fail("scheduler", "r"), "Retire": Retire("billing", "r"),
		"Dispatched": Dispatched("scheduler", "slice/dispatch-1", "r"), "Healthy": Healthy("scheduler", "r", false),
		"Healthy bound": Healthy("scheduler", "r", true), "Adopt": Adopt("hand", "slice/dispatch-2", "r", true),
	}
	for name, c := range changes {
		if len(c.From) == 0 || !c.To.Valid() || c.Actor == "" || c.Reason == "" {
			t.Errorf("%s = %+v; want From, a valid To, an actor and a reason", name, c)
		}
		for _, from := range c.From {
			if from != c.To && !CanTransition(from, c.To) {
				t.Errorf("%s starts from %s, which cannot go to %s", name, from, c.To)
			}
		}
	}
	if c := Healthy("scheduler", "r", true); c.To != StateAssigned || !c.To.Routable() {
		t.Errorf("Healthy(bound) goes to %s; want the state its user is routed to", c.To)
	}
	if c := Healthy("scheduler", "r", false); c.To.Routable() || !c.To.Ready() {
		t.Errorf("Healthy(unbound) goes to %s; want in service and routed to nobody", c.To)
	}
	// The changes that drop the job leave the leader to dispatch a new
	// generation; the ones that record a job keep its id.
	for _, name := range []string{"Resume", "Restart", "Redispatch"} {
		if c := changes[name]; c.SetJob == nil || *c.SetJob != "" || !c.AddRestart {
			t.Errorf("%s does not drop the job for a new generation: %+v", name, c)
		}
	}
	if c := changes["Dispatched"]; c.SetJob == nil || *c.SetJob != "slice/dispatch-1" || c.AddRestart {
		t.Errorf("Dispatched does not record the job: %+v", c)
	}
	// Billing suspends what it bills, and a suspended slice is no longer
	// billed.
	for _, s := range States {
		if Suspend("billing", "r").StartsFrom(s) != s.Billable() {
			t.Errorf("Suspend starts from %s: %v; Billable: %v", s, !s.Billable(), s.Billable())
		}
	}
	if StateSuspended.Billable() || StateSuspended.Runs() {
		t.Error("a suspended slice is billed or runs")
	}
}

func TestChangeAtNarrowsToTheStateRead(t *testing.T) {
	c := Retire("admin:1", "r")
	if got := c.At(StateWarm).From; len(got) != 1 || got[0] != StateWarm {
		t.Errorf("Retire.At(warm).From = %v; want [warm]", got)
	}
	if got := c.At(StateRetired).From; len(got) != 0 {
		t.Errorf("Retire.At(retired).From = %v; want none (no slice is in it)", got)
	}
	if len(c.From) != len(StatesWhere(SliceState.Live)) {
		t.Errorf("At changed the change it narrows: %v", c.From)
	}
}
