package slicehub

// Admin actions on one slice. This table is the one place an action is
// declared: the admin API registers POST /admin/api/slices/:id/<name> for
// each row, the dashboard draws its form and notice from it, slicectl
// makes `slicectl slices <name>` from it, and the dashboard's audit log
// leaves the rows that slice_events already records out of admin_audit.
// Adding an action is a row here and its case in admin's runSliceAction
// (and, when it needs one, the store or scheduler method it calls).

// AdminAction names an action an admin takes on a slice; it is the last
// path segment of its API and dashboard routes, the slicectl command and
// the action in admin_audit.
type AdminAction string

const (
	ActionSuspend  AdminAction = "suspend"
	ActionResume   AdminAction = "resume"
	ActionRestart  AdminAction = "restart"
	ActionRetire   AdminAction = "retire"
	ActionReassign AdminAction = "reassign"
	ActionNote     AdminAction = "note"
)

// ActionInput is the one thing an action asks for besides the slice id.
type ActionInput string

const (
	InputNone    ActionInput = ""
	InputConfirm ActionInput = "confirm" // the slice id again: the action cannot be undone
	InputUser    ActionInput = "user"    // a user id (user_id in the API, --user in slicectl)
	InputNote    ActionInput = "note"    // free text (note in the API, --text in slicectl)
)

// AdminActionSpec describes one action for every door it comes through.
type AdminActionSpec struct {
	Name AdminAction
	// Label is the dashboard's button; Prompt labels its input, if any.
	Label, Prompt string
	// Short is slicectl's one-line help.
	Short string
	// Done is the dashboard's notice after the action.
	Done  string
	Input ActionInput
	// Wait: slicectl offers --wait (until the slice is healthy again).
	Wait bool
	// Event: the action is recorded in slice_events (a transition, or a
	// note), so the audit log does not show its admin_audit row as well.
	Event bool
	// Danger marks the button of an action that cannot be undone.
	Danger bool
}

// AdminActions lists every slice action, in the order the dashboard and
// slicectl's help show them.
var AdminActions = []AdminActionSpec{
	{Name: ActionSuspend, Label: "Suspend", Short: "Stop a slice, keeping its database and profile",
		Done: "The slice is suspended.", Event: true},
	{Name: ActionResume, Label: "Resume", Short: "Start a suspended slice again (--wait until healthy)",
		Done: "The slice is resuming.", Wait: true, Event: true},
	{Name: ActionRestart, Label: "Restart", Short: "Replace a slice's job with a new one (--wait until healthy)",
		Done: "The slice is restarting.", Wait: true, Event: true},
	{Name: ActionReassign, Label: "Reassign", Prompt: "Reassign to user id", Short: "Bind a slice to another user (--user ID)",
		Done: "The slice is reassigned.", Input: InputUser, Event: true},
	{Name: ActionRetire, Label: "Retire", Prompt: "Retire: this stops the slice for good.",
		Short: "Stop and purge a slice for good (needs --confirm ID)", Done: "The slice is retired.",
		Input: InputConfirm, Event: true, Danger: true},
	{Name: ActionNote, Label: "Add note", Prompt: "Note for the slice's history",
		Short: "Record an operator's note in a slice's history (--text TEXT)", Done: "The note is in the slice's history.",
		Input: InputNote, Event: true},
}

// MaxNoteLen bounds a note's length in bytes.
const MaxNoteLen = 500

// LookupAdminAction returns the action named name.
func LookupAdminAction(name string) (AdminActionSpec, bool) {
	for _, a := range AdminActions {
		if string(a.Name) == name {
			return a, true
		}
	}
	return AdminActionSpec{}, false
}

// EventAdminActions are the names of the actions slice_events records.
func EventAdminActions() []string {
	var out []string
	for _, a := range AdminActions {
		if a.Event {
			out = append(out, string(a.Name))
		}
	}
	return out
}
