package slice

import (
	"encoding/json"
	"errors"
	"fmt"
)

// Linux clone flags (linux/sched.h). Only the namespace flags matter here.
const (
	cloneNewNS     = 0x00020000
	cloneNewCgroup = 0x02000000
	cloneNewUTS    = 0x04000000
	cloneNewIPC    = 0x08000000
)

// ChromiumSeccompProfile returns Docker's default seccomp profile (its JSON,
// as the Docker release on the client ships it) with the one change
// Chromium's sandbox needs: clone and unshare may create user, PID and
// network namespaces.
//
// Why: Chromium sandboxes its renderers by putting them in new user, PID and
// network namespaces (Debian's build has no setuid helper). Docker's default
// profile allows those flags only to containers with CAP_SYS_ADMIN, so
// Chromium stops with "No usable sandbox!". Granting CAP_SYS_ADMIN, or
// running unconfined, would open far more than this: mount, the other
// namespace kinds and every other syscall Docker filters stay refused. The
// namespaces are created unprivileged, inside the container's own user, and
// only give up rights.
//
// The profile is derived at build time (ops/image.sh) rather than kept in
// the repository, so that it follows the Docker release it extends.
func ChromiumSeccompProfile(dockerDefault []byte) ([]byte, error) {
	const op = "slice.seccomp"
	var p map[string]any
	if err := json.Unmarshal(dockerDefault, &p); err != nil {
		return nil, fmt.Errorf("%s: the Docker profile is not JSON: %w", op, err)
	}
	syscalls, ok := p["syscalls"].([]any)
	if _, hasDefault := p["defaultAction"]; !ok || !hasDefault {
		return nil, fmt.Errorf("%s: %w", op, errors.New("not a Docker seccomp profile (no defaultAction or syscalls)"))
	}
	forbidden := cloneNewNS | cloneNewCgroup | cloneNewUTS | cloneNewIPC
	rule := map[string]any{
		"names":  []string{"clone", "unshare"},
		"action": "SCMP_ACT_ALLOW",
		// Allowed when none of the other namespace flags is set: the
		// sandbox needs CLONE_NEWUSER, CLONE_NEWPID and CLONE_NEWNET only.
		"args": []map[string]any{{
			"index": 0, "value": forbidden, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ",
		}},
		"comment": "slicehub: Chromium's namespace sandbox (user, pid and net namespaces only)",
		// s390 passes the clone flags as the second argument; Docker's own
		// clone rules make the same exception.
		"includes": map[string]any{},
		"excludes": map[string]any{"arches": []string{"s390", "s390x"}},
	}
	p["syscalls"] = append(syscalls, rule)
	out, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	return append(out, '\n'), nil
}
