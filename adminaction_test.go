package slicehub_test

import (
	"testing"

	"github.com/slicehub/slicehub"
)

// Every row of the action table says what each door needs: a name the
// routes and slicectl can carry, a label, help and a notice.
func TestAdminActionsTable(t *testing.T) {
	seen := map[slicehub.AdminAction]bool{}
	for _, a := range slicehub.AdminActions {
		if a.Name == "" || seen[a.Name] {
			t.Errorf("action %q: empty or twice", a.Name)
		}
		seen[a.Name] = true
		if a.Label == "" || a.Short == "" || a.Done == "" {
			t.Errorf("action %q: label %q, short %q, done %q; want all three", a.Name, a.Label, a.Short, a.Done)
		}
		if a.Input != slicehub.InputNone && a.Prompt == "" {
			t.Errorf("action %q asks for %q without a prompt", a.Name, a.Input)
		}
		if got, ok := slicehub.LookupAdminAction(string(a.Name)); !ok || got.Name != a.Name {
			t.Errorf("LookupAdminAction(%q) = %v, %v", a.Name, got.Name, ok)
		}
	}
	if _, ok := slicehub.LookupAdminAction("disable_user"); ok {
		t.Error("LookupAdminAction found a user action among the slice actions")
	}
	want := map[string]bool{"suspend": true, "resume": true, "restart": true, "retire": true, "reassign": true, "note": true}
	got := slicehub.EventAdminActions()
	if len(got) != len(want) {
		t.Errorf("EventAdminActions() = %v; want %v", got, want)
	}
	for _, n := range got {
		if !want[n] {
			t.Errorf("EventAdminActions() has %q", n)
		}
	}
}
