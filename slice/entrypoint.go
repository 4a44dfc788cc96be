package slice

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"

	"github.com/slicehub/slicehub"
)

// DefaultUIDBase is the first of the slices' uids: slice <id> runs as
// DefaultUIDBase + id, so that no two slices share a uid (one bind-mount
// mistake must not hand a neighbour's profile over) and no slice shares one
// with a host account (system and login accounts stay below 65536).
const DefaultUIDBase = 1_000_000

// maxUID leaves room below 2^32-1, which is (uid_t)-1, "no change".
const maxUID = 1<<31 - 1

// SliceUID is the uid (and gid) slice id runs as under base (0: the
// default).
func SliceUID(sliceID string, base int64) (int, error) {
	id, ok := slicehub.ParseSliceID(sliceID)
	if !ok {
		return 0, errors.New("SLICE_ID must be a positive decimal integer")
	}
	if base == 0 {
		base = DefaultUIDBase
	}
	if base < 65536 || base > maxUID {
		return 0, fmt.Errorf("the uid base %d is not in [65536, %d]", base, maxUID)
	}
	if int64(id) > maxUID-base {
		return 0, fmt.Errorf("slice id %d gives a uid beyond %d", id, maxUID)
	}
	return int(base + int64(id)), nil
}

// Entrypoint is what the image runs first, as root, with no capability
// but CHOWN, SETUID, SETGID, KILL and SYS_CHROOT (the job's cap_drop/cap_add;
// SYS_CHROOT is for Chromium's sandbox inside its own user namespace) and
// no-new-privileges. It makes the profile directory (the slice's own bind
// mount, SLICE_PROFILE_DIR) belong to the slice's uid, gives it a home, and
// executes argv as that uid with no supplementary groups. setuid from root
// to another uid empties the permitted capabilities, and no-new-privileges
// keeps exec from ever regaining any: what runs after this holds nothing.
//
// Not root (an image run by hand with --user): argv runs as it is.
//
// Under Nomad (NOMAD_ALLOC_DIR set), the allocation's log directory is
// given to the slice's uid too, and argv does not replace this process:
// it runs as its child, its stdout and stderr copied into Nomad-named,
// rotated files there (RunWithLogs), since the job disables Nomad's own
// log processes. Entrypoint then returns argv's exit status. Outside Nomad
// argv is executed in place and writes to the container's stdout and
// stderr, as it always did.
//
// The task's `user` would be simpler, but Nomad 1.6 does not interpolate
// it, so it cannot depend on the slice id.
func Entrypoint(getenv func(string) string, argv []string) (int, error) {
	const op = "slice.entrypoint"
	if len(argv) == 0 {
		return 2, fmt.Errorf("%s: no command", op)
	}
	path := argv[0]
	env := os.Environ()
	rot, withLogs, err := LogRotationFromEnv(getenv)
	if err != nil {
		return 1, fmt.Errorf("%s: %w", op, err)
	}
	if withLogs {
		// Resolved now: /proc/self is root's once the process is no
		// longer dumpable, after the drop below.
		if p, err := exec.LookPath(path); err == nil {
			path = p
		}
	}
	if os.Geteuid() == 0 {
		var base int64
		if v := getenv("SLICE_UID_BASE"); v != "" {
			b, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return 1, fmt.Errorf("%s: SLICE_UID_BASE: %w", op, err)
			}
			base = b
		}
		uid, err := SliceUID(getenv("SLICE_ID"), base)
		if err != nil {
			return 1, fmt.Errorf("%s: %w", op, err)
		}
		if dir := getenv("SLICE_PROFILE_DIR"); dir != "" {
			if err := ownTree(dir, uid); err != nil {
				return 1, fmt.Errorf("%s: profile directory: %w", op, err)
			}
		}
		// The allocation's secrets directory (Nomad's, this allocation's
		// only): Nomad writes the workload identity there (nomad_token,
		// owned by the task's user, root here), which the slice presents
		// at bootstrap, and the slice keeps its credentials there.
		if dir := getenv("NOMAD_SECRETS_DIR"); dir != "" {
			if err := ownTree(dir, uid); err != nil {
				return 1, fmt.Errorf("%s: secrets directory: %w", op, err)
			}
		}
		// Nomad makes the allocation's log directory world-writable and
		// owned by nobody; the slice's files there are its own.
		if withLogs {
			if err := ownTree(rot.Dir, uid); err != nil {
				return 1, fmt.Errorf("%s: log directory: %w", op, err)
			}
		}
		// The image's home belongs to no slice uid; Chromium writes there.
		home := "/tmp/home"
		if err := os.MkdirAll(home, 0o700); err != nil {
			return 1, fmt.Errorf("%s: %w", op, err)
		}
		if err := ownTree(home, uid); err != nil {
			return 1, fmt.Errorf("%s: %w", op, err)
		}
		env = append(env, "HOME="+home)
		// Go applies these to every thread of the process.
		if err := syscall.Setgroups(nil); err != nil {
			return 1, fmt.Errorf("%s: setgroups: %w", op, err)
		}
		if err := syscall.Setgid(uid); err != nil {
			return 1, fmt.Errorf("%s: setgid: %w", op, err)
		}
		if err := syscall.Setuid(uid); err != nil {
			return 1, fmt.Errorf("%s: setuid: %w", op, err)
		}
	}
	if withLogs {
		code, err := RunWithLogs(rot, append([]string{path}, argv[1:]...), env)
		if err != nil {
			return code, fmt.Errorf("%s: %w", op, err)
		}
		return code, nil
	}
	if err := syscall.Exec(path, argv, env); err != nil {
		return 1, fmt.Errorf("%s: exec %s: %w", op, path, err)
	}
	return 0, nil // not reached
}

// ownTree makes dir (mode 0700) and, when it belonged to someone else (a
// new directory Docker created as root, or a profile written under the
// image's former shared uid), everything in it belong to uid. A directory
// already owned by uid is left as it is: no walk over a large profile at
// every start.
func ownTree(dir string, uid int) error {
	fi, err := os.Lstat(dir)
	if err != nil {
		return err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return errors.New("no owner information")
	}
	if int(st.Uid) == uid && int(st.Gid) == uid && fi.Mode().Perm() == 0o700 {
		return nil
	}
	// Root holds no DAC_OVERRIDE here: a directory is made root's before it
	// is read (root is then its owner), and handed to uid after its
	// entries.
	if err := os.Lchown(dir, 0, 0); err != nil {
		return err
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return err
	}
	return ownEntries(dir, uid)
}

func ownEntries(dir string, uid int) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		p := filepath.Join(dir, e.Name())
		// Lchown: a symlink planted in a profile must not redirect it.
		if e.IsDir() {
			if err := os.Lchown(p, 0, 0); err != nil {
				return err
			}
			if err := ownEntries(p, uid); err != nil {
				return err
			}
			continue
		}
		if err := os.Lchown(p, uid, uid); err != nil {
			return err
		}
	}
	return os.Lchown(dir, uid, uid)
}

// RemoveProfile deletes the profile directory of retired slice id under
// root (the profiles directory of a node), whoever owns what is in it. It
// runs as root with CAP_CHOWN only (jobs/slice-reaper.nomad.hcl): each
// directory is made root's before it is read, then everything is removed.
// A missing directory is not an error: the slice never ran on this node.
func RemoveProfile(root, sliceID string) error {
	const op = "slice.remove_profile"
	if _, ok := slicehub.ParseSliceID(sliceID); !ok {
		return fmt.Errorf("%s: slice id %q is not a positive decimal integer", op, sliceID)
	}
	dir := filepath.Join(root, sliceID)
	if _, err := os.Lstat(dir); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err := reclaim(dir); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	return nil
}

// reclaim makes dir and every directory below it root's, mode 0700, so
// that root without DAC_OVERRIDE may empty them. Symlinks are not followed.
func reclaim(dir string) error {
	if err := os.Lchown(dir, 0, 0); err != nil {
		return err
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return err
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if e.IsDir() {
			if err := reclaim(filepath.Join(dir, e.Name())); err != nil {
				return err
			}
		}
	}
	return nil
}
