package nomad

import (
	"fmt"
	"regexp"
	"strconv"

	"github.com/slicehub/slicehub"
)

// The job-ID format of a dispatched slice: Nomad names a child
// "<parent>/dispatch-<prefix>-<unix>-<uuid8>", and Dispatch's prefix is
// "s<slice>g<generation>", so that a child says which slice and generation
// it runs even after Nomad garbage-collected its dispatch token.

// childIDRE reads the slice and generation back from a child's ID,
// "<parent>/dispatch-s<slice>g<generation>-<unix>-<uuid8>".
var childIDRE = regexp.MustCompile(`/dispatch-s([1-9][0-9]*)g([0-9]+)-[0-9]+-[0-9a-f]{8}$`)

// dispatchPrefix is the prefix of a slice generation's child.
func dispatchPrefix(sliceID int64, gen int) string {
	return fmt.Sprintf("s%dg%d", sliceID, gen)
}

// DispatchToken is the idempotency token of a slice's generation: a retry of
// a dispatch that timed out returns the first child instead of a second.
func DispatchToken(sliceID int64, gen int) string {
	return fmt.Sprintf("slice-%d-gen-%d", sliceID, gen)
}

// ParseJobID reads the slice and generation from a child's job ID; ok is
// false for an ID Dispatch did not make (a hand dispatch, another job).
func ParseJobID(jobID string) (sliceID int64, gen int, ok bool) {
	m := childIDRE.FindStringSubmatch(jobID)
	if m == nil {
		return 0, 0, false
	}
	id, err := strconv.ParseInt(m[1], 10, 64)
	if err != nil {
		return 0, 0, false
	}
	if gen, err = strconv.Atoi(m[2]); err != nil {
		return 0, 0, false
	}
	return id, gen, true
}

// parseChild builds a child from a job stub's fields. The generation is
// believed only when the ID's slice is the meta's.
func parseChild(jobID, metaSlice, status string, stop bool) slicehub.SliceJob {
	c := slicehub.SliceJob{JobID: jobID, Generation: -1, Status: status, Stopped: stop}
	c.SliceID, _ = slicehub.ParseSliceID(metaSlice)
	if id, gen, ok := ParseJobID(jobID); ok && id == c.SliceID {
		c.Generation = gen
	}
	return c
}
