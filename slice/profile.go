package slice

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
)

// Profile is the slice's Chromium user data directory, on storage that
// outlives the container (the client's host volume, /profiles/<slice id>).
//
// Most of a profile is cache that Chromium rebuilds. What a WhatsApp login
// needs is small: the site's IndexedDB and Local Storage (and, for sites
// that use them, cookies). Those are the Essentials: they are what the
// snapshot in the slice's database holds, so that a slice placed on another
// node comes back logged in.
type Profile struct {
	Dir string
	// Essentials are paths relative to Dir, with '/' separators.
	Essentials []string
}

// DefaultEssentials are the parts of a Chromium profile that carry a site's
// login. WebStorage holds the quota database that indexes the storage
// buckets, so that the restored IndexedDB is found where Chromium expects it.
// Cookies are stored with the fixed key of --password-store=basic, so they
// can be restored on any node.
var DefaultEssentials = []string{
	"Default/IndexedDB",
	"Default/Local Storage",
	"Default/WebStorage",
	"Default/Cookies",
	"Default/Cookies-journal",
}

// skipFile reports files of the essentials that are not state: LevelDB's
// advisory LOCK (meaningless in a copy) and its text logs.
func skipFile(name string) bool {
	switch name {
	case "LOCK", "LOG", "LOG.old":
		return true
	}
	return false
}

// markerName is the file, outside the essentials, that records which
// snapshot generation this directory last matched (saved from or restored
// into). It tells a profile left on a node by an earlier placement from one
// that is current.
const markerName = ".slicehub-snapshot.json"

type profileMarker struct {
	Generation int64  `json:"generation"`
	SHA256     string `json:"sha256"`
}

// singletonFiles are Chromium's process-singleton lock, socket and cookie.
// After a crash or a container restart they name a process that is gone (or
// worse, a live one that reuses its pid), and Chromium then refuses the
// profile as "in use by another process".
var singletonFiles = []string{"SingletonLock", "SingletonSocket", "SingletonCookie"}

// removeLocks deletes the stale Singleton* files. It must only run when no
// Chromium uses the directory.
func (p Profile) removeLocks() ([]string, error) {
	var removed []string
	var errs []error
	for _, name := range singletonFiles {
		path := filepath.Join(p.Dir, name)
		// Lstat: SingletonLock is a symlink to "host-pid", which dangles.
		if _, err := os.Lstat(path); err != nil {
			continue
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, name)
	}
	return removed, errors.Join(errs...)
}

// killLeftovers kills the processes that still run Chromium on this profile:
// after the browser process dies, its zygote, renderers and utility
// processes can outlive it for a while and keep writing to the directory.
// Chromium passes --user-data-dir to each of its processes, so the command
// line finds them. It returns how many it killed.
func (p Profile) killLeftovers() int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	self := os.Getpid()
	n := 0
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && usesProfile(cmdline, p.Dir) {
			if syscall.Kill(pid, syscall.SIGKILL) == nil {
				n++
			}
		}
	}
	return n
}

// usesProfile reports whether a /proc/<pid>/cmdline names dir as its user
// data directory. Chromium's child processes rewrite their command line
// into one space-separated string, so arguments may end with a NUL, a
// space or the end; "/profiles/4" must not match "/profiles/44".
func usesProfile(cmdline []byte, dir string) bool {
	want := []byte("--user-data-dir=" + dir)
	for rest := cmdline; ; {
		i := bytes.Index(rest, want)
		if i < 0 {
			return false
		}
		rest = rest[i+len(want):]
		if len(rest) == 0 || rest[0] == 0 || rest[0] == ' ' {
			return true
		}
	}
}

// walk calls fn for every regular file of the essentials, in a stable order,
// with its path relative to Dir.
func (p Profile) walk(fn func(rel string, info fs.FileInfo) error) error {
	for _, ess := range p.Essentials {
		root := filepath.Join(p.Dir, filepath.FromSlash(ess))
		err := filepath.WalkDir(root, func(full string, d fs.DirEntry, err error) error {
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					return nil // not created yet, or removed while walking
				}
				return err
			}
			if !d.Type().IsRegular() || skipFile(d.Name()) {
				return nil
			}
			info, err := d.Info()
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			if err != nil {
				return err
			}
			rel, err := filepath.Rel(p.Dir, full)
			if err != nil {
				return err
			}
			return fn(filepath.ToSlash(rel), info)
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// hasEssentials reports whether any essential file exists: false for an
// empty or new profile directory.
func (p Profile) hasEssentials() bool {
	found := errors.New("found")
	err := p.walk(func(string, fs.FileInfo) error { return found })
	return errors.Is(err, found)
}

// fingerprint summarises the essentials' names, sizes and modification
// times: it changes whenever Chromium writes to them, and costs only a stat
// per file, so it can be polled.
func (p Profile) fingerprint() (string, error) {
	h := sha256.New()
	var buf [16]byte
	err := p.walk(func(rel string, info fs.FileInfo) error {
		h.Write([]byte(rel))
		binary.LittleEndian.PutUint64(buf[:8], uint64(info.Size()))
		binary.LittleEndian.PutUint64(buf[8:], uint64(info.ModTime().UnixNano()))
		h.Write(buf[:])
		return nil
	})
	if err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// errProfileChanging means the essentials changed while they were copied:
// the copy may be torn (a LevelDB log half written, a table compacted away),
// so it is thrown away and taken again later.
var errProfileChanging = errors.New("the profile changed during the copy")

// archive is a snapshot of the essentials: a gzipped tar.
type archive struct {
	Data        []byte
	SHA256      [sha256.Size]byte
	Files       int
	Bytes       int64  // uncompressed file bytes
	Fingerprint string // of the profile the copy was taken from
}

// snapshot copies the essentials into an archive. The fingerprint must be
// the same before and after the copy, so no file grew, shrank or was
// rewritten meanwhile; the caller also waits until the essentials have been
// quiet for a while before it copies. A copy taken while Chromium runs is
// therefore the state between two bursts of writes, which LevelDB opens as
// it would after a crash. The copy taken at shutdown, after Chromium closed,
// is exact.
func (p Profile) snapshot(maxBytes int64) (archive, error) {
	before, err := p.fingerprint()
	if err != nil {
		return archive{}, err
	}
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestSpeed)
	tw := tar.NewWriter(zw)
	var a archive
	err = p.walk(func(rel string, info fs.FileInfo) error {
		f, err := os.Open(filepath.Join(p.Dir, filepath.FromSlash(rel)))
		if errors.Is(err, fs.ErrNotExist) {
			return errProfileChanging
		}
		if err != nil {
			return err
		}
		defer f.Close()
		// Read the whole file first: tar needs the size up front, and a
		// file that grows while it is read would otherwise fail the copy.
		data, err := io.ReadAll(io.LimitReader(f, maxBytes+1))
		if err != nil {
			return err
		}
		a.Bytes += int64(len(data))
		if a.Bytes > maxBytes {
			return fmt.Errorf("the essentials exceed %d bytes", maxBytes)
		}
		hdr := &tar.Header{Name: rel, Mode: 0o600, Size: int64(len(data)), ModTime: info.ModTime(), Typeflag: tar.TypeReg, Format: tar.FormatPAX}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if _, err := tw.Write(data); err != nil {
			return err
		}
		a.Files++
		return nil
	})
	if err != nil {
		return archive{}, err
	}
	if err := tw.Close(); err != nil {
		return archive{}, err
	}
	if err := zw.Close(); err != nil {
		return archive{}, err
	}
	after, err := p.fingerprint()
	if err != nil {
		return archive{}, err
	}
	if before != after {
		return archive{}, errProfileChanging
	}
	a.Data = buf.Bytes()
	a.SHA256 = sha256.Sum256(a.Data)
	a.Fingerprint = after
	return a, nil
}

// restore replaces the essentials with those of an archive. Chromium must
// not run. The archive is unpacked next to the profile first and moved into
// place path by path, so that a failure midway leaves the old essentials or
// the new ones for each path, never half a LevelDB.
func (p Profile) restore(data []byte, maxBytes int64) (files int, err error) {
	const op = "slice.profile_restore"
	if err := os.MkdirAll(p.Dir, 0o700); err != nil {
		return 0, fmt.Errorf("%s: %w", op, err)
	}
	// A restore cut short (the container was killed) leaves its temporary
	// directory behind.
	if stale, _ := filepath.Glob(filepath.Join(p.Dir, ".restore-*")); len(stale) > 0 {
		for _, d := range stale {
			_ = os.RemoveAll(d)
		}
	}
	tmp, err := os.MkdirTemp(p.Dir, ".restore-")
	if err != nil {
		return 0, fmt.Errorf("%s: %w", op, err)
	}
	defer os.RemoveAll(tmp)

	zr, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		return 0, fmt.Errorf("%s: %w", op, err)
	}
	tr := tar.NewReader(zr)
	var total int64
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return 0, fmt.Errorf("%s: %w", op, err)
		}
		// The archive comes from our own database, but it is still input:
		// only regular files, only under an essential path, never outside.
		name := path.Clean(hdr.Name)
		if hdr.Typeflag != tar.TypeReg || !p.essential(name) {
			return 0, fmt.Errorf("%s: unexpected entry %q in the snapshot", op, hdr.Name)
		}
		total += hdr.Size
		if total > maxBytes {
			return 0, fmt.Errorf("%s: the snapshot unpacks to more than %d bytes", op, maxBytes)
		}
		dst := filepath.Join(tmp, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
			return 0, fmt.Errorf("%s: %w", op, err)
		}
		f, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return 0, fmt.Errorf("%s: %w", op, err)
		}
		_, err = io.Copy(f, io.LimitReader(tr, hdr.Size))
		if err == nil {
			// On disk before the marker says this generation is here: a
			// node that loses power mid-restore must restore again.
			err = f.Sync()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return 0, fmt.Errorf("%s: %w", op, err)
		}
		_ = os.Chtimes(dst, hdr.ModTime, hdr.ModTime)
		files++
	}
	for _, ess := range p.Essentials {
		dst := filepath.Join(p.Dir, filepath.FromSlash(ess))
		if err := os.RemoveAll(dst); err != nil {
			return 0, fmt.Errorf("%s: %w", op, err)
		}
		src := filepath.Join(tmp, filepath.FromSlash(ess))
		if _, err := os.Lstat(src); errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
			return 0, fmt.Errorf("%s: %w", op, err)
		}
		if err := os.Rename(src, dst); err != nil {
			return 0, fmt.Errorf("%s: %w", op, err)
		}
	}
	return files, nil
}

// essential reports whether name (cleaned, slash-separated, relative) is an
// essential path or lies under one.
func (p Profile) essential(name string) bool {
	if name == "." || strings.HasPrefix(name, "/") || name == ".." || strings.HasPrefix(name, "../") {
		return false
	}
	return slices.ContainsFunc(p.Essentials, func(ess string) bool {
		return name == ess || strings.HasPrefix(name, ess+"/")
	})
}

func (p Profile) readMarker() (profileMarker, bool) {
	b, err := os.ReadFile(filepath.Join(p.Dir, markerName))
	if err != nil {
		return profileMarker{}, false
	}
	var m profileMarker
	if json.Unmarshal(b, &m) != nil {
		return profileMarker{}, false
	}
	return m, true
}

func (p Profile) writeMarker(m profileMarker) error {
	b, _ := json.Marshal(m)
	tmp := filepath.Join(p.Dir, markerName+".tmp")
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(p.Dir, markerName))
}
