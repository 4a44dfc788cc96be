package slice

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func TestSliceUID(t *testing.T) {
	for _, c := range []struct {
		id   string
		base int64
		want int
		ok   bool
	}{
		{"1", 0, DefaultUIDBase + 1, true},
		{"42", 200000, 200042, true},
		{"0", 0, 0, false},
		{"-3", 0, 0, false},
		{"x", 0, 0, false},
		{"1", 1000, 0, false},                    // below every host account's range
		{"2147483647", 0, 0, false},              // beyond uid_t's usable range
		{"2146483648", DefaultUIDBase, 0, false}, // exactly one past
		{"2146483647", DefaultUIDBase, 1<<31 - 1, true},
	} {
		got, err := SliceUID(c.id, c.base)
		if (err == nil) != c.ok || got != c.want {
			t.Errorf("SliceUID(%q, %d) = %d, %v; want %d, ok=%v", c.id, c.base, got, err, c.want, c.ok)
		}
	}
}

// TestOwnTree: a profile written under another uid (Docker's new directory
// is root's; older images ran every slice as 10001) becomes the slice's,
// symlinks are not followed, and the root ends 0700.
func TestOwnTree(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("SKIPPED: chown needs root (the test machines run as root)")
	}
	dir := t.TempDir()
	p := filepath.Join(dir, "profile")
	outside := filepath.Join(dir, "outside")
	for _, d := range []string{p, filepath.Join(p, "Default", "IndexedDB")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(p, "Default", "Cookies"), []byte("c"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(outside, []byte("o"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(p, "link")); err != nil {
		t.Fatal(err)
	}
	for _, x := range []string{p, filepath.Join(p, "Default"), filepath.Join(p, "Default", "IndexedDB"), filepath.Join(p, "Default", "Cookies")} {
		if err := os.Lchown(x, 10001, 10001); err != nil {
			t.Fatal(err)
		}
	}
	const uid = DefaultUIDBase + 5
	if err := ownTree(p, uid); err != nil {
		t.Fatal(err)
	}
	for _, x := range []string{p, filepath.Join(p, "Default"), filepath.Join(p, "Default", "IndexedDB"), filepath.Join(p, "Default", "Cookies"), filepath.Join(p, "link")} {
		fi, err := os.Lstat(x)
		if err != nil {
			t.Fatal(err)
		}
		if st := fi.Sys().(*syscall.Stat_t); int(st.Uid) != uid || int(st.Gid) != uid {
			t.Errorf("%s: owner %d:%d, want %d", x, st.Uid, st.Gid, uid)
		}
	}
	if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o700 {
		t.Errorf("profile mode %o, want 0700", fi.Mode().Perm())
	}
	if fi, _ := os.Stat(outside); fi.Sys().(*syscall.Stat_t).Uid != 0 {
		t.Errorf("the symlink's target changed owner: it was followed")
	}
}

// TestRemoveProfile: a profile owned by a slice's uid, with 0700
// directories, goes; its neighbour and a symlink's target stay.
func TestRemoveProfile(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("SKIPPED: chown needs root (the test machines run as root)")
	}
	root := t.TempDir()
	outside := filepath.Join(t.TempDir(), "outside")
	if err := os.WriteFile(outside, []byte("o"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"7", "8"} {
		d := filepath.Join(root, id, "Default", "IndexedDB")
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, "x.ldb"), []byte("login"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(outside, filepath.Join(root, id, "link")); err != nil {
			t.Fatal(err)
		}
		if err := ownTree(filepath.Join(root, id), DefaultUIDBase+7); err != nil {
			t.Fatal(err)
		}
	}
	if err := RemoveProfile(root, "7"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(filepath.Join(root, "7")); !os.IsNotExist(err) {
		t.Errorf("profile 7 still there: %v", err)
	}
	if _, err := os.Stat(filepath.Join(root, "8", "Default", "IndexedDB", "x.ldb")); err != nil {
		t.Errorf("the neighbour's profile was touched: %v", err)
	}
	if _, err := os.Stat(outside); err != nil {
		t.Errorf("the symlink's target went too: %v", err)
	}
	if err := RemoveProfile(root, "7"); err != nil {
		t.Errorf("a second removal: %v", err)
	}
	for _, bad := range []string{"../8", "0", "", "8/../8"} {
		if err := RemoveProfile(root, bad); err == nil {
			t.Errorf("RemoveProfile(%q) accepted", bad)
		}
	}
	if _, err := os.Stat(filepath.Join(root, "8")); err != nil {
		t.Errorf("profile 8 removed by a bad id: %v", err)
	}
}
