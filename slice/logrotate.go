package slice

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Defaults of the slice's own log rotation: the job's former `logs` block
// (3 files of 5 MB per stream).
const (
	DefaultLogMaxFileMB = 5
	DefaultLogMaxFiles  = 3
)

// LogRotation is where and how the slice's stdout and stderr are kept
// under Nomad, in place of Nomad's logmon and docker_logger (the job has
// `logs { disabled = true }`): files named as logmon names them, in the
// allocation's log directory, which Nomad's logs endpoint streams from the
// lowest index upward whoever wrote them (jobs/README.md).
type LogRotation struct {
	Dir         string // <alloc dir>/logs
	Task        string // the Nomad task: files are <Task>.stdout.<n>, <Task>.stderr.<n>
	MaxFileSize int64  // bytes; a write that would pass it starts the next index
	MaxFiles    int    // per stream; the oldest indexes beyond it are removed
}

// LogRotationFromEnv reads the rotation from the task's environment:
// NOMAD_ALLOC_DIR (none: not under Nomad, ok false), NOMAD_TASK_NAME,
// SLICE_LOG_MAX_FILE_MB and SLICE_LOG_MAX_FILES.
func LogRotationFromEnv(getenv func(string) string) (r LogRotation, ok bool, err error) {
	alloc := getenv("NOMAD_ALLOC_DIR")
	if alloc == "" {
		return r, false, nil
	}
	r = LogRotation{Dir: filepath.Join(alloc, "logs"), Task: getenv("NOMAD_TASK_NAME"),
		MaxFileSize: DefaultLogMaxFileMB << 20, MaxFiles: DefaultLogMaxFiles}
	if r.Task == "" {
		r.Task = "slice"
	}
	if v := getenv("SLICE_LOG_MAX_FILE_MB"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 1 || n > 1<<20 {
			return r, false, fmt.Errorf("SLICE_LOG_MAX_FILE_MB %q: want a whole number of MB from 1", v)
		}
		r.MaxFileSize = n << 20
	}
	if v := getenv("SLICE_LOG_MAX_FILES"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			return r, false, fmt.Errorf("SLICE_LOG_MAX_FILES %q: want a number of files from 1", v)
		}
		r.MaxFiles = n
	}
	return r, true, nil
}

// RotatingFile is one stream (<task>.<stream>.<n>) of a task's log. Not
// safe for concurrent writes: each stream has its own copier.
type RotatingFile struct {
	dir, prefix string // prefix: "<task>.<stream>."
	max         int64
	maxFiles    int
	idx         int
	size        int64
	f           *os.File
}

// OpenRotatingFile opens stream of r, resuming where a previous run of the
// task (a restart in place keeps the allocation's directory) left it: the
// highest index present, or the next one when that is full.
func OpenRotatingFile(r LogRotation, stream string) (*RotatingFile, error) {
	w := &RotatingFile{dir: r.Dir, prefix: r.Task + "." + stream + ".", max: r.MaxFileSize, maxFiles: r.MaxFiles}
	idxs, err := w.indexes()
	if err != nil {
		return nil, err
	}
	if len(idxs) > 0 {
		w.idx = idxs[len(idxs)-1]
	}
	if err := w.open(); err != nil {
		return nil, err
	}
	if w.size >= w.max {
		if err := w.rotate(); err != nil {
			return nil, err
		}
	}
	return w, nil
}

// indexes lists the stream's indexes present, in increasing order. A name
// with the prefix and no integer after it is skipped here; Nomad's
// endpoint would fail on it, and this code never writes one.
func (w *RotatingFile) indexes() ([]int, error) {
	entries, err := os.ReadDir(w.dir)
	if err != nil {
		return nil, err
	}
	var idxs []int
	for _, e := range entries {
		s, ok := strings.CutPrefix(e.Name(), w.prefix)
		if !ok || e.IsDir() {
			continue
		}
		if n, err := strconv.Atoi(s); err == nil && n >= 0 {
			idxs = append(idxs, n)
		}
	}
	sort.Ints(idxs)
	return idxs, nil
}

func (w *RotatingFile) open() error {
	f, err := os.OpenFile(filepath.Join(w.dir, w.prefix+strconv.Itoa(w.idx)), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return err
	}
	w.f, w.size = f, fi.Size()
	return nil
}

// rotate closes the current file, opens the next index and removes the
// oldest beyond maxFiles.
func (w *RotatingFile) rotate() error {
	if err := w.f.Close(); err != nil {
		return err
	}
	w.idx++
	if err := w.open(); err != nil {
		return err
	}
	idxs, err := w.indexes()
	if err != nil {
		return err
	}
	for len(idxs) > w.maxFiles {
		if err := os.Remove(filepath.Join(w.dir, w.prefix+strconv.Itoa(idxs[0]))); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		idxs = idxs[1:]
	}
	return nil
}

// Write appends p, starting the next index first when p would pass the
// size limit of a file that holds something (so that a line written in one
// write stays in one file), and cutting p only when it alone is larger
// than a file.
func (w *RotatingFile) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		if w.size > 0 && w.size+int64(len(p)) > w.max {
			if err := w.rotate(); err != nil {
				return written, err
			}
		}
		chunk := p
		if int64(len(chunk)) > w.max {
			chunk = chunk[:w.max]
		}
		n, err := w.f.Write(chunk)
		written += n
		w.size += int64(n)
		if err != nil {
			return written, err
		}
		p = p[n:]
	}
	return written, nil
}

// Close closes the current file.
func (w *RotatingFile) Close() error { return w.f.Close() }

// drainAfterExit bounds how long the log copier waits, once the command
// has exited, for the pipes' other writers (a Chromium process the slice
// did not reap) to close them.
const drainAfterExit = 2 * time.Second

// RunWithLogs runs argv with its stdout and stderr (and those of every
// process it starts, which inherit them) on pipes that it copies into r's
// files, forwards the signals a container receives to it, and returns its
// exit status once the pipes are drained. It is the process that Docker's
// init waits for, so the last lines (a panic's trace) are on disk before
// the container ends. It runs as the slice's uid, after the entrypoint's
// drop.
func RunWithLogs(r LogRotation, argv, env []string) (int, error) {
	outW, err := OpenRotatingFile(r, "stdout")
	if err != nil {
		return 1, err
	}
	defer outW.Close()
	errW, err := OpenRotatingFile(r, "stderr")
	if err != nil {
		return 1, err
	}
	defer errW.Close()
	outR, outPipe, err := os.Pipe()
	if err != nil {
		return 1, err
	}
	errR, errPipe, err := os.Pipe()
	if err != nil {
		return 1, err
	}

	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env, cmd.Stdin, cmd.Stdout, cmd.Stderr = env, os.Stdin, outPipe, errPipe
	// Registered before the start: a SIGTERM arriving in between is queued
	// for the child, not taken as this process's own death.
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2)
	defer signal.Stop(sigs)
	if err := cmd.Start(); err != nil {
		return 1, err
	}
	// Only the child (and what it starts) holds the write ends now: EOF
	// comes when all of them are gone.
	outPipe.Close()
	errPipe.Close()

	var wg sync.WaitGroup
	for _, c := range []struct {
		w io.Writer
		r *os.File
	}{{outW, outR}, {errW, errR}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			copyStream(c.w, c.r)
		}()
	}
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	var werr error
loop:
	for {
		select {
		case s := <-sigs:
			_ = cmd.Process.Signal(s)
		case werr = <-waited:
			break loop
		}
	}
	// A descendant left behind would keep the pipes open forever.
	_ = outR.SetReadDeadline(time.Now().Add(drainAfterExit))
	_ = errR.SetReadDeadline(time.Now().Add(drainAfterExit))
	wg.Wait()
	outR.Close()
	errR.Close()
	return exitCode(cmd.ProcessState, werr), nil
}

// copyStream copies r into w until EOF or the drain deadline. A write
// error (a full disk) is reported once, where Docker keeps this process's
// own stderr, and the stream is then read and dropped: a reader that
// stopped would fill the pipe and block the slice at its next log line.
func copyStream(w io.Writer, r io.Reader) {
	buf := make([]byte, 32<<10)
	failed := false
	for {
		n, err := r.Read(buf)
		if n > 0 && !failed {
			if _, werr := w.Write(buf[:n]); werr != nil {
				failed = true
				fmt.Fprintf(os.Stderr, "slice logs: %v; this stream's output is dropped from here on\n", werr)
			}
		}
		if err != nil {
			return
		}
	}
}

// exitCode is the status a shell would report: the code, or 128 + the
// signal that killed the process.
func exitCode(ps *os.ProcessState, err error) int {
	if ps == nil {
		if err != nil {
			return 1
		}
		return 0
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ps.ExitCode()
}
