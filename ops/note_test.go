package ops

import (
	"fmt"
	"strings"
	"testing"

	"github.com/slicehub/slicehub/admin"
	"github.com/slicehub/slicehub/postgres"
)

// `slicectl slices note` (a row of slicehub.AdminActions, with no command
// of its own) records the operator's note in the slice's history, as the
// admin, without changing the slice, and audits it.
func TestSliceNoteRecordedInHistory(t *testing.T) {
	ctx := t.Context()
	env := startAPI(t, func(d *admin.Deps, db *postgres.DB) { d.Audit = db })
	sl, err := env.db.CreateSlice(ctx, 0, "scheduler", "test")
	if err != nil {
		t.Fatal(err)
	}
	id := fmt.Sprint(sl.ID)
	cli := func(args ...string) (int, string, string) {
		return runCLI(t, append([]string{"--gateway", env.url, "--key", "shk_test"}, args...)...)
	}
	if code, _, _ := cli("slices", "note", id); code != ExitUsage {
		t.Errorf("slices note without --text: exit %d; want %d", code, ExitUsage)
	}
	if code, _, _ := cli("slices", "note", id, "--text", strings.Repeat("x", 501)); code != ExitUsage {
		t.Errorf("slices note with 501 bytes: exit %d; want %d (the API's 400)", code, ExitUsage)
	}
	code, out, errs := cli("slices", "note", id, "--text", "called the customer")
	if code != 0 || strings.TrimSpace(out) != fmt.Sprintf("slice %d: %s", sl.ID, sl.State) {
		t.Fatalf("slices note: exit %d, %q, %s", code, out, errs)
	}

	evs, err := env.db.SliceEvents(ctx, sl.ID)
	if err != nil || len(evs) == 0 {
		t.Fatalf("events: %v %v", evs, err)
	}
	last := evs[len(evs)-1]
	if last.Actor != "admin:1" || last.From != sl.State || last.To != sl.State || last.Reason != "note: called the customer" {
		t.Errorf("last event %+v; want admin:1's note, %s → %s", last, sl.State, sl.State)
	}
	after, err := env.db.Slice(ctx, sl.ID)
	if err != nil || after.State != sl.State || !after.StateChangedAt.Equal(sl.StateChangedAt) {
		t.Errorf("slice after a note: %+v %v; want it unchanged", after, err)
	}
	rows, err := env.db.AdminAudits(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 1 || rows[0].Action != "note" || rows[0].Target != "slice:"+id || rows[0].Actor != "admin:1" {
		t.Errorf("audit rows %+v; want one note on slice:%s by admin:1", rows, id)
	}
}
