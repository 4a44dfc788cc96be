package slice

import (
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

// logFiles maps the names in dir to their contents.
func logFiles(t *testing.T, dir string) map[string]string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		m[e.Name()] = string(b)
	}
	return m
}

func names(m map[string]string) string {
	var n []string
	for k := range m {
		n = append(n, k)
	}
	sort.Strings(n)
	return strings.Join(n, ",")
}

func TestRotatingFileNamesRotatesAndPurges(t *testing.T) {
	dir := t.TempDir()
	r := LogRotation{Dir: dir, Task: "slice", MaxFileSize: 20, MaxFiles: 3}
	w, err := OpenRotatingFile(r, "stdout")
	if err != nil {
		t.Fatal(err)
	}
	// 9-byte lines: two fit in a 20-byte file, the third starts the next.
	for i := range 10 {
		if _, err := w.Write([]byte("line " + string(rune('0'+i)) + "..\n")); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	got := logFiles(t, dir)
	// Lines 0-1 in .0, 2-3 in .1, ..., 8-9 in .4; only the newest 3 stay.
	if names(got) != "slice.stdout.2,slice.stdout.3,slice.stdout.4" {
		t.Fatalf("files %s; want indexes 2-4 (0 and 1 purged past max files)", names(got))
	}
	if got["slice.stdout.2"] != "line 4..\nline 5..\n" || got["slice.stdout.4"] != "line 8..\nline 9..\n" {
		t.Errorf("contents %q; want whole lines, two per file, in order", got)
	}
}

func TestRotatingFileResumesAfterRestart(t *testing.T) {
	dir := t.TempDir()
	r := LogRotation{Dir: dir, Task: "slice", MaxFileSize: 20, MaxFiles: 3}
	// A previous run of the task left .3 (not full) and .2; a stray name
	// with the prefix is ignored.
	for name, body := range map[string]string{"slice.stderr.2": "0123456789abcdefghij", "slice.stderr.3": "run 1\n", "slice.stderr.x": "?"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	w, err := OpenRotatingFile(r, "stderr")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("run 2\n")); err != nil {
		t.Fatal(err)
	}
	w.Close()
	if got := logFiles(t, dir)["slice.stderr.3"]; got != "run 1\nrun 2\n" {
		t.Fatalf("slice.stderr.3 = %q; want the new run appended to the highest index", got)
	}

	// The highest index full: the next run starts the next one.
	if err := os.WriteFile(filepath.Join(dir, "slice.stderr.3"), []byte("0123456789abcdefghij"), 0o600); err != nil {
		t.Fatal(err)
	}
	w, err = OpenRotatingFile(r, "stderr")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("run 3\n")); err != nil {
		t.Fatal(err)
	}
	w.Close()
	got := logFiles(t, dir)
	if got["slice.stderr.4"] != "run 3\n" {
		t.Fatalf("files %q; want run 3 in slice.stderr.4", got)
	}
	if _, ok := got["slice.stderr.2"]; !ok {
		t.Errorf("files %s: 2, 3, 4 are 3 files, none to purge", names(got))
	}
}

func TestRotatingFileCutsAWriteLargerThanAFile(t *testing.T) {
	dir := t.TempDir()
	w, err := OpenRotatingFile(LogRotation{Dir: dir, Task: "t", MaxFileSize: 8, MaxFiles: 5}, "stdout")
	if err != nil {
		t.Fatal(err)
	}
	if n, err := w.Write([]byte("abcdefghijklmnopqrst")); n != 20 || err != nil {
		t.Fatalf("Write = %d, %v", n, err)
	}
	w.Close()
	got := logFiles(t, dir)
	if got["t.stdout.0"] != "abcdefgh" || got["t.stdout.1"] != "ijklmnop" || got["t.stdout.2"] != "qrst" {
		t.Errorf("files %q; want 8-byte pieces", got)
	}
}

func TestLogRotationFromEnv(t *testing.T) {
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	if _, ok, err := LogRotationFromEnv(env(nil)); ok || err != nil {
		t.Errorf("no NOMAD_ALLOC_DIR: ok %v, %v; want not under Nomad", ok, err)
	}
	r, ok, err := LogRotationFromEnv(env(map[string]string{"NOMAD_ALLOC_DIR": "/alloc", "NOMAD_TASK_NAME": "slice"}))
	want := LogRotation{Dir: "/alloc/logs", Task: "slice", MaxFileSize: 5 << 20, MaxFiles: 3}
	if !ok || err != nil || r != want {
		t.Errorf("defaults: %+v %v %v; want %+v", r, ok, err, want)
	}
	r, _, err = LogRotationFromEnv(env(map[string]string{"NOMAD_ALLOC_DIR": "/a", "SLICE_LOG_MAX_FILE_MB": "2", "SLICE_LOG_MAX_FILES": "7"}))
	if err != nil || r.MaxFileSize != 2<<20 || r.MaxFiles != 7 || r.Task != "slice" {
		t.Errorf("from env: %+v %v", r, err)
	}
	for _, bad := range []map[string]string{{"SLICE_LOG_MAX_FILE_MB": "0"}, {"SLICE_LOG_MAX_FILES": "x"}} {
		bad["NOMAD_ALLOC_DIR"] = "/a"
		if _, _, err := LogRotationFromEnv(env(bad)); err == nil {
			t.Errorf("%v: no error", bad)
		}
	}
}

func TestRunWithLogs(t *testing.T) {
	dir := t.TempDir()
	r := LogRotation{Dir: dir, Task: "slice", MaxFileSize: 1 << 20, MaxFiles: 3}
	// A child that writes on both streams, leaves a descendant holding
	// them (as a Chromium process could), and exits 3.
	t0 := time.Now()
	code, err := RunWithLogs(r, []string{"/bin/sh", "-c", "echo out; echo err >&2; sleep 30 & exit 3"}, os.Environ())
	if err != nil || code != 3 {
		t.Fatalf("RunWithLogs = %d, %v; want 3", code, err)
	}
	if d := time.Since(t0); d > 10*time.Second {
		t.Errorf("returned after %v; want the descendant's open pipe given up after %v", d, drainAfterExit)
	}
	got := logFiles(t, dir)
	if got["slice.stdout.0"] != "out\n" || got["slice.stderr.0"] != "err\n" {
		t.Errorf("files %q; want each stream in its file", got)
	}

	code, err = RunWithLogs(r, []string{"/bin/sh", "-c", "echo again; kill -KILL $$"}, os.Environ())
	if err != nil || code != 128+9 {
		t.Errorf("killed child: %d, %v; want 137", code, err)
	}
	if got := logFiles(t, dir)["slice.stdout.0"]; got != "out\nagain\n" {
		t.Errorf("slice.stdout.0 = %q; want the second run appended", got)
	}
}
