package devenv

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// proc is one agent process. It is identified by pid and start time rather
// than by *exec.Cmd alone, so that a stack can also be stopped by a process
// that did not start it (Cleanup after the starter died), and so that a
// recycled pid is never signalled by mistake.
type proc struct {
	name  string
	pid   int
	start uint64 // start time in clock ticks since boot (/proc/<pid>/stat field 22)
	// stopSig is the graceful stop signal. PostgreSQL's SIGTERM is a "smart"
	// shutdown that waits for every client to disconnect, so it gets SIGINT.
	stopSig syscall.Signal
	// group: send stopSig to the whole process group. Not for PostgreSQL,
	// whose backends must hear about the shutdown from the postmaster.
	group bool

	logPath   string
	logOffset int64 // where this run's output starts in logPath

	// done is closed when Wait returned; nil for a reattached process, which
	// is polled instead (it is not our child, so we cannot wait for it).
	done    chan struct{}
	waitErr error
}

// procRecord is what running.json keeps of a proc.
type procRecord struct {
	Name   string `json:"name"`
	PID    int    `json:"pid"`
	Start  uint64 `json:"start"`
	Signal int    `json:"signal"`
	Group  bool   `json:"group"`
	Log    string `json:"log"`
}

func (p *proc) record() procRecord {
	return procRecord{Name: p.name, PID: p.pid, Start: p.start, Signal: int(p.stopSig), Group: p.group, Log: p.logPath}
}

func reattach(r procRecord) *proc {
	return &proc{name: r.Name, pid: r.PID, start: r.Start, stopSig: syscall.Signal(r.Signal), group: r.Group, logPath: r.Log}
}

type procSpec struct {
	name    string
	path    string
	args    []string
	env     []string
	dir     string
	logPath string
	cred    *syscall.Credential
	stopSig syscall.Signal
	group   bool
}

// startProc starts a process in its own process group, so that a Ctrl-C in
// the terminal reaches only our process (which then stops the agents in
// order) and so that the agent and its helpers can be signalled together.
//
// No Pdeathsig on purpose: if the starter dies, the agents must stay up long
// enough for Cleanup to stop them gracefully (Nomad has to stop its tasks;
// killing it leaves them orphaned).
func startProc(s procSpec) (*proc, error) {
	logf, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	// A header per run, so that the tail shown after a failure belongs to
	// this run and not to an earlier one.
	fmt.Fprintf(logf, "==== devenv: %s started at %s: %s %s\n", s.name, time.Now().Format(time.RFC3339), s.path, strings.Join(s.args, " "))
	off, err := logf.Seek(0, io.SeekEnd)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(s.path, s.args...)
	cmd.Env = s.env
	cmd.Dir = s.dir
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: s.cred}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", s.name, err)
	}
	p := &proc{
		name: s.name, pid: cmd.Process.Pid, stopSig: s.stopSig, group: s.group,
		logPath: s.logPath, logOffset: off, done: make(chan struct{}),
	}
	// The child exists until we wait for it (at worst as a zombie), so its
	// start time is readable now.
	if st, err := readStat(p.pid); err == nil {
		p.start = st.start
	}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// exited reports whether the process is gone.
func (p *proc) exited() bool {
	if p.done != nil {
		select {
		case <-p.done:
			return true
		default:
			return false
		}
	}
	return !sameProcess(p.pid, p.start)
}

// exitErr describes how the process ended, for error messages.
func (p *proc) exitErr() error {
	if p.done != nil && p.exited() {
		if p.waitErr == nil {
			return fmt.Errorf("%s exited", p.name)
		}
		return fmt.Errorf("%s exited: %w", p.name, p.waitErr)
	}
	return fmt.Errorf("%s is gone", p.name)
}

// waitExit polls until the process is gone or the timeout expires.
func (p *proc) waitExit(timeout time.Duration) bool {
	if p.done != nil {
		select {
		case <-p.done:
			return true
		case <-time.After(timeout):
			return false
		}
	}
	return pollUntil(timeout, p.exited)
}

// stop asks the process to stop, waits up to grace, then kills its group.
// Then it kills whatever the process started that outlived it: PostgreSQL's
// backends call setsid() and Nomad starts its executors and loggers with
// setsid, so a process group does not hold them. The tree is taken before
// the first signal, while the parent links still exist.
func (p *proc) stop(grace time.Duration) error {
	if p == nil || p.exited() {
		return nil
	}
	tree := descendants(p.pid)
	target := p.pid
	if p.group {
		target = -p.pid
	}
	_ = syscall.Kill(target, p.stopSig)
	var err error
	if !p.waitExit(grace) {
		_ = syscall.Kill(-p.pid, syscall.SIGKILL)
		_ = syscall.Kill(p.pid, syscall.SIGKILL)
		if p.waitExit(10 * time.Second) {
			err = fmt.Errorf("%s (pid %d) did not stop within %s and was killed", p.name, p.pid, grace)
		} else {
			err = fmt.Errorf("%s (pid %d) survived SIGKILL", p.name, p.pid)
		}
	}
	// Usually nothing is left here (after a clean shutdown, or a purge of
	// Nomad's jobs); stragglers get SIGTERM, a grace period, then SIGKILL.
	if left := killAll(tree, 5*time.Second); len(left) > 0 {
		err = errors.Join(err, fmt.Errorf("%d processes started by %s survived SIGKILL", len(left), p.name))
	}
	return err
}

// withLog appends this run's log to err, because "nomad is not ready"
// alone says nothing about why: the last 20 lines, and before them the error
// lines of the run, since an agent that fails early often logs its cause
// and then a page of orderly shutdown.
func (p *proc) withLog(err error) error {
	lines := logLines(p.logPath, p.logOffset)
	if len(lines) == 0 {
		return fmt.Errorf("%w (log %s is empty)", err, p.logPath)
	}
	tail := lines
	if len(tail) > 20 {
		tail = tail[len(tail)-20:]
	}
	var notable []string
	inError := false
	for _, l := range lines[:len(lines)-len(tail)] {
		// Multi-line errors go on with indented "* cause" lines.
		cont := inError && (strings.HasPrefix(l, "\t") || strings.HasPrefix(strings.TrimSpace(l), "* "))
		inError = isErrorLine(l) || cont
		if inError {
			notable = append(notable, l)
		}
	}
	if len(notable) > 10 {
		notable = notable[len(notable)-10:]
	}
	text := "--- " + p.logPath + " ---\n"
	if len(notable) > 0 {
		text += strings.Join(notable, "\n") + "\n...\n"
	}
	return &logError{err: err, log: text + strings.Join(tail, "\n")}
}

// logError is an error with an excerpt of the log that explains it.
type logError struct {
	err error
	log string
}

func (e *logError) Error() string { return e.err.Error() + "\n" + e.log }
func (e *logError) Unwrap() error { return e.err }

// isErrorLine recognises the error lines of the agents (hclog's [ERROR],
// the CLI's "==> Error") and of PostgreSQL (FATAL, PANIC, ERROR).
func isErrorLine(l string) bool {
	for _, m := range []string{"[ERROR]", "[ERR]", "==> Error", "Error:", "FATAL:", "PANIC:", "ERROR:"} {
		if strings.Contains(l, m) {
			return true
		}
	}
	return false
}

// logLines returns the lines written to path since off, reading at most the
// last 256 KiB.
func logLines(path string, off int64) []string {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Size()-off > 256<<10 {
		off = st.Size() - 256<<10
	}
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		return nil
	}
	b, _ := io.ReadAll(f)
	s := strings.TrimRight(string(b), "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

// procStart reads a process's start time, field 22 of /proc/<pid>/stat. A
// zombie reports ok=false: for our purposes it has already stopped.
func procStart(pid int) (start uint64, ok bool) {
	st, err := readStat(pid)
	if err != nil || st.state == 'Z' || st.state == 'X' {
		return 0, false
	}
	return st.start, true
}

func sameProcess(pid int, start uint64) bool {
	s, ok := procStart(pid)
	return ok && (start == 0 || s == start)
}

type procStat struct {
	pid, ppid, pgid int
	state           byte
	start           uint64
}

func readStat(pid int) (procStat, error) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return procStat{}, err
	}
	return parseStat(pid, b)
}

func parseStat(pid int, b []byte) (procStat, error) {
	// The command name (field 2) may contain spaces and parentheses; the
	// fields after the last ')' are plain.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procStat{}, errors.New("malformed stat")
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); field N is f[N-3].
	if len(f) < 20 {
		return procStat{}, errors.New("short stat")
	}
	ppid, _ := strconv.Atoi(f[1])
	pgid, _ := strconv.Atoi(f[2])
	start, _ := strconv.ParseUint(f[19], 10, 64)
	return procStat{pid: pid, ppid: ppid, pgid: pgid, state: f[0][0], start: start}, nil
}

// descendants lists every living descendant of pid. Nomad starts its
// executors, logmon and docker_logger with setsid, and tasks in their own
// process groups, so signalling Nomad's group does not reach them; the tree
// does, as long as it is taken while Nomad is alive.
func descendants(pid int) []procStat {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	children := map[int][]procStat{}
	for _, e := range ents {
		n, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := readStat(n)
		if err != nil || st.state == 'Z' {
			continue
		}
		children[st.ppid] = append(children[st.ppid], st)
	}
	var out []procStat
	queue := []int{pid}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		for _, c := range children[p] {
			out = append(out, c)
			queue = append(queue, c.pid)
		}
	}
	return out
}

// killAll stops processes that outlived their agent: SIGTERM to each (and to
// its group when it leads one, which covers a task's own children), a grace
// period, then SIGKILL.
func killAll(ps []procStat, grace time.Duration) (left []procStat) {
	alive := func() []procStat {
		var a []procStat
		for _, p := range ps {
			if sameProcess(p.pid, p.start) {
				a = append(a, p)
			}
		}
		return a
	}
	signal := func(sig syscall.Signal) {
		for _, p := range alive() {
			if p.pgid == p.pid {
				_ = syscall.Kill(-p.pid, sig)
			}
			_ = syscall.Kill(p.pid, sig)
		}
	}
	if len(alive()) == 0 {
		return nil
	}
	signal(syscall.SIGTERM)
	if pollUntil(grace, func() bool { return len(alive()) == 0 }) {
		return nil
	}
	signal(syscall.SIGKILL)
	pollUntil(5*time.Second, func() bool { return len(alive()) == 0 })
	return alive()
}

// pollUntil calls cond every 50ms until it is true or timeout passes.
func pollUntil(timeout time.Duration, cond func() bool) bool {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return pollCtx(ctx, 50*time.Millisecond, func() (bool, error) { return cond(), nil }) == nil
}

// pollCtx calls cond every interval until it says done, or ctx ends.
// cond returns (false, err) to keep polling while remembering why not yet,
// (true, nil) on success and (true, err) for a failure that waiting cannot
// fix (the process exited). When ctx ends first, the error carries cond's
// last error, which says what was awaited.
// waitReady polls ready every interval until it reports true, p exits
// (its exit is the error) or ctx ends. A failure carries the tail of p's
// log: an agent that will not start says why there.
func (p *proc) waitReady(ctx context.Context, interval time.Duration, ready func() (bool, error)) error {
	err := pollCtx(ctx, interval, func() (bool, error) {
		if p.exited() {
			return true, p.exitErr()
		}
		return ready()
	})
	if err == nil && p.exited() {
		err = p.exitErr()
	}
	if err != nil {
		return p.withLog(err)
	}
	return nil
}

func pollCtx(ctx context.Context, interval time.Duration, cond func() (done bool, err error)) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	var last error
	for {
		done, err := cond()
		if done {
			return err
		}
		if err != nil {
			last = err
		}
		select {
		case <-ctx.Done():
			if last != nil {
				return fmt.Errorf("%w (last error: %v)", ctx.Err(), last)
			}
			return ctx.Err()
		case <-t.C:
		}
	}
}

// mountsUnder lists mount points at or below dir, deepest first. Nomad's
// client mounts a tmpfs for each task's secrets directory; they stay mounted
// after the agent stops and make os.RemoveAll fail with EBUSY.
func mountsUnder(dir string) []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	dir = filepath.Clean(dir)
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescapeMount(fields[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			out = append(out, mp)
		}
	}
	// Deepest first, so that nested mounts come off before their parents.
	sort.Slice(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return out
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func unmountUnder(dir string) error {
	var errs []error
	for _, mp := range mountsUnder(dir) {
		if err := syscall.Unmount(mp, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", mp, err))
		}
	}
	return errors.Join(errs...)
}

// taskSecretDirs lists the secrets/ and private/ directories of every task
// directory the Nomad clients of the stack in dir have built:
// <dir>/nomad*/data/alloc/<alloc>/<task>/{secrets,private}.
func taskSecretDirs(dir string) []string {
	var out []string
	for _, name := range []string{"secrets", "private"} {
		m, _ := filepath.Glob(filepath.Join(dir, "nomad*", "data", "alloc", "*", "*", name))
		out = append(out, m...)
	}
	sort.Strings(out)
	return out
}

// remountTaskSecrets mounts a tmpfs on each task's secrets/ and private/
// that is not a mount point, as Nomad's client does when it builds a task
// directory (client/allocdir createSecretDir: size=1m, noexec, world
// writable, with its marker file). Nomad restores an allocation's task
// directory without building it again, so without this a restored task
// would write its secrets to disk. Only root can mount; Nomad falls back to
// plain directories then, and so does this.
func remountTaskSecrets(dir string) error {
	if os.Geteuid() != 0 {
		return nil
	}
	mounted := map[string]bool{}
	for _, mp := range mountsUnder(dir) {
		mounted[mp] = true
	}
	var errs []error
	for _, d := range taskSecretDirs(dir) {
		if mounted[d] {
			continue
		}
		if err := syscall.Mount("tmpfs", d, "tmpfs", syscall.MS_NOEXEC, "size=1m"); err != nil {
			errs = append(errs, fmt.Errorf("mount tmpfs on %s: %w", d, err))
			continue
		}
		if err := os.Chmod(d, 0o777); err != nil {
			errs = append(errs, err)
		}
		if f, err := os.OpenFile(filepath.Join(d, ".nomad-mount"), os.O_RDWR|os.O_CREATE, 0o666); err != nil {
			errs = append(errs, err)
		} else {
			f.Close()
		}
	}
	return errors.Join(errs...)
}
