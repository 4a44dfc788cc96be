package devenv

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
)

// sweepOrphans kills every process that still carries this stack's TMPDIR
// in its environment. Nomad starts logmon and docker_logger in sessions of
// their own; when the agent that owned them died abruptly (a test that
// kills Nomad, a crash), they are re-parented to init and no process tree
// leads to them any more. The TMPDIR that devenv gives Nomad, inside the
// state directory, is what still names their stack. Returns how many were
// killed.
func sweepOrphans(dir string) int {
	marker := []byte("TMPDIR=" + filepath.Clean(dir) + string(filepath.Separator))
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	self := os.Getpid()
	killed := 0
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		env, err := os.ReadFile(filepath.Join("/proc", e.Name(), "environ"))
		if err != nil {
			continue
		}
		for _, kv := range bytes.Split(env, []byte{0}) {
			if bytes.HasPrefix(kv, marker) {
				if syscall.Kill(pid, syscall.SIGKILL) == nil {
					killed++
				}
				break
			}
		}
	}
	return killed
}
