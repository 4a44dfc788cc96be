package devenv

import (
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// An orphan with the stack's TMPDIR is killed; a process of another stack
// (a sibling directory whose name shares the prefix) is left alone.
func TestSweepOrphansKillsOnlyThisStacksProcesses(t *testing.T) {
	dir := t.TempDir()
	start := func(tmp string) *exec.Cmd {
		cmd := exec.Command("sleep", "300")
		cmd.Env = []string{"TMPDIR=" + tmp}
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		return cmd
	}
	mine := start(filepath.Join(dir, "nomad", "tmp"))
	other := start(dir + "-other/nomad/tmp")
	exited := make(chan error, 1)
	go func() { exited <- mine.Wait() }()

	if n := sweepOrphans(dir); n != 1 {
		t.Fatalf("sweepOrphans killed %d processes; want exactly 1", n)
	}
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		t.Fatal("the stack's orphan survived the sweep")
	}
	if err := other.Process.Signal(syscall.Signal(0)); err != nil {
		t.Fatalf("another stack's process was killed: %v", err)
	}
}
