package slice

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/slicehub/slicehub"
	"github.com/slicehub/slicehub/testsupport"
)

func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, body := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		return "<" + err.Error() + ">"
	}
	return string(b)
}

// A profile as Chromium leaves it: essentials among caches and logs.
var sampleProfile = map[string]string{
	"Default/IndexedDB/https_web.whatsapp.com_0.indexeddb.leveldb/000003.log": "idb-login",
	"Default/IndexedDB/https_web.whatsapp.com_0.indexeddb.leveldb/CURRENT":    "MANIFEST-000001\n",
	"Default/IndexedDB/https_web.whatsapp.com_0.indexeddb.leveldb/LOCK":       "",
	"Default/IndexedDB/https_web.whatsapp.com_0.indexeddb.leveldb/LOG":        "text log",
	"Default/Local Storage/leveldb/000003.log":                                "ls-login",
	"Default/Cookies":                 "sqlite",
	"Default/Cache/Cache_Data/data_0": "cache, not state",
	"Default/Preferences":             "{}",
	"SingletonCookie":                 "1",
}

func TestProfileSnapshotRestore(t *testing.T) {
	src := Profile{Dir: t.TempDir(), Essentials: DefaultEssentials}
	writeFiles(t, src.Dir, sampleProfile)
	if !src.hasEssentials() {
		t.Fatal("hasEssentials = false on a profile with a login")
	}
	a, err := src.snapshot(1 << 20)
	if err != nil {
		t.Fatal(err)
	}
	if a.Files != 4 {
		t.Fatalf("snapshot has %d files, want the 4 essential ones (no LOCK, LOG, cache or preferences)", a.Files)
	}

	// Restore over a stale profile: its essentials are replaced, the rest
	// is left alone.
	dst := Profile{Dir: t.TempDir(), Essentials: DefaultEssentials}
	writeFiles(t, dst.Dir, map[string]string{
		"Default/Local Storage/leveldb/000009.log": "an older login",
		"Default/Preferences":                      "kept",
	})
	if _, err := dst.restore(a.Data, 1<<20); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{
		"Default/Local Storage/leveldb/000003.log":                                "ls-login",
		"Default/IndexedDB/https_web.whatsapp.com_0.indexeddb.leveldb/000003.log": "idb-login",
		"Default/Cookies":     "sqlite",
		"Default/Preferences": "kept",
	} {
		if got := readFile(t, filepath.Join(dst.Dir, filepath.FromSlash(name))); got != want {
			t.Errorf("%s = %q after restore, want %q", name, got, want)
		}
	}
	if _, err := os.Stat(filepath.Join(dst.Dir, "Default/Local Storage/leveldb/000009.log")); err == nil {
		t.Error("the stale Local Storage survived the restore")
	}
	fa, _ := src.fingerprint()
	fb, _ := dst.fingerprint()
	if fa == "" || fb == "" {
		t.Fatal("empty fingerprint")
	}
	leftovers, _ := filepath.Glob(filepath.Join(dst.Dir, ".restore-*"))
	if len(leftovers) > 0 {
		t.Fatalf("restore left %v", leftovers)
	}
}

func TestProfileFingerprintChanges(t *testing.T) {
	p := Profile{Dir: t.TempDir(), Essentials: DefaultEssentials}
	writeFiles(t, p.Dir, sampleProfile)
	before, _ := p.fingerprint()
	writeFiles(t, p.Dir, map[string]string{"Default/Cache/Cache_Data/data_1": "more cache"})
	if same, _ := p.fingerprint(); same != before {
		t.Fatal("a cache write changed the fingerprint")
	}
	writeFiles(t, p.Dir, map[string]string{"Default/Local Storage/leveldb/000003.log": "ls-login, longer"})
	if after, _ := p.fingerprint(); after == before {
		t.Fatal("a Local Storage write did not change the fingerprint")
	}
}

func TestProfileRestoreRefusesForeignEntries(t *testing.T) {
	archiveOf := func(hdrs ...*tar.Header) []byte {
		var buf bytes.Buffer
		zw := gzip.NewWriter(&buf)
		tw := tar.NewWriter(zw)
		for _, h := range hdrs {
			_ = tw.WriteHeader(h)
			if h.Typeflag == tar.TypeReg {
				_, _ = tw.Write(make([]byte, h.Size))
			}
		}
		_ = tw.Close()
		_ = zw.Close()
		return buf.Bytes()
	}
	reg := func(name string) *tar.Header {
		return &tar.Header{Name: name, Typeflag: tar.TypeReg, Size: 1, Mode: 0o600}
	}
	for name, data := range map[string][]byte{
		"parent dir":        archiveOf(reg("../escape")),
		"absolute":          archiveOf(reg("/etc/passwd")),
		"through essential": archiveOf(reg("Default/IndexedDB/../../escape")),
		"not essential":     archiveOf(reg("Default/Preferences")),
		"symlink":           archiveOf(&tar.Header{Name: "Default/Cookies", Typeflag: tar.TypeSymlink, Linkname: "/etc/shadow"}),
		"too large":         archiveOf(&tar.Header{Name: "Default/Cookies", Typeflag: tar.TypeReg, Size: 2048, Mode: 0o600}),
		"not gzip":          []byte("plain"),
	} {
		t.Run(name, func(t *testing.T) {
			parent := t.TempDir()
			p := Profile{Dir: filepath.Join(parent, "profile"), Essentials: DefaultEssentials}
			writeFiles(t, p.Dir, map[string]string{"Default/Cookies": "current"})
			if _, err := p.restore(data, 1024); err == nil {
				t.Fatal("restore accepted it")
			}
			if got := readFile(t, filepath.Join(p.Dir, "Default/Cookies")); got != "current" {
				t.Fatalf("a refused restore changed the profile: Cookies = %q", got)
			}
			if entries, _ := os.ReadDir(parent); len(entries) != 1 {
				t.Fatalf("something was written next to the profile: %v", entries)
			}
		})
	}
}

func TestProfileRemoveLocks(t *testing.T) {
	p := Profile{Dir: t.TempDir()}
	// SingletonLock is a symlink to "host-pid" that dangles after a crash.
	if err := os.Symlink("oldhost-4242", filepath.Join(p.Dir, "SingletonLock")); err != nil {
		t.Fatal(err)
	}
	writeFiles(t, p.Dir, map[string]string{"SingletonCookie": "1", "SingletonSocket": "", "Local State": "{}"})
	removed, err := p.removeLocks()
	if err != nil || len(removed) != 3 {
		t.Fatalf("removeLocks = %v, %v; want the three Singleton files", removed, err)
	}
	if _, err := os.Stat(filepath.Join(p.Dir, "Local State")); err != nil {
		t.Fatal("removeLocks removed more than the locks")
	}
}

// TestSnapshotRestoreRules checks which copy wins at start, against the real
// database: the local profile unless it is empty or older than the stored
// snapshot (a profile left on a node by an earlier placement).
func TestSnapshotRestoreRules(t *testing.T) {
	pool, err := OpenPool(testsupport.NewDatabase(t), "42")
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	if err := NewCRM(pool).Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	store := NewSnapshotStore(pool)
	connected := NewStateHolder()
	_ = connected.Set(slicehub.WAConnected)
	ctx := context.Background()
	lsFile := "Default/Local Storage/leveldb/000003.log"
	node := func(content string) (*snapshotter, Profile) {
		p := Profile{Dir: t.TempDir(), Essentials: DefaultEssentials}
		if content != "" {
			writeFiles(t, p.Dir, map[string]string{lsFile: content})
		}
		return newSnapshotter(p, store, connected, SnapshotPolicy{}, "alloc", quietLog()), p
	}
	content := func(p Profile) string { return readFile(t, filepath.Join(p.Dir, filepath.FromSlash(lsFile))) }

	// Nothing stored yet: nothing to restore.
	a, pa := node("login v1")
	if err := a.restore(ctx); err != nil || a.Stats().Restored {
		t.Fatalf("restore with an empty store: %v %+v", err, a.Stats())
	}
	if err := a.save(ctx); err != nil {
		t.Fatal(err)
	}
	if m, _ := pa.readMarker(); m.Generation != 1 {
		t.Fatalf("marker after the first save = %+v, want generation 1", m)
	}

	// Another node, empty: restores generation 1, then saves generation 2.
	b, pb := node("")
	if err := b.restore(ctx); err != nil || !b.Stats().Restored || content(pb) != "login v1" {
		t.Fatalf("restore on an empty profile: %v %+v %q", err, b.Stats(), content(pb))
	}
	writeFiles(t, pb.Dir, map[string]string{lsFile: "login v2"})
	if err := b.save(ctx); err != nil {
		t.Fatal(err)
	}

	// Back on the first node, whose copy is generation 1: it is stale.
	a2 := newSnapshotter(pa, store, connected, SnapshotPolicy{}, "alloc", quietLog())
	if err := a2.restore(ctx); err != nil || !a2.Stats().Restored || content(pa) != "login v2" {
		t.Fatalf("restore over a stale profile: %v %+v %q", err, a2.Stats(), content(pa))
	}

	// The second node changed its profile after its last save: its local
	// copy is the newest, and stays.
	writeFiles(t, pb.Dir, map[string]string{lsFile: "login v3, not saved yet"})
	b2 := newSnapshotter(pb, store, connected, SnapshotPolicy{}, "alloc", quietLog())
	if err := b2.restore(ctx); err != nil || b2.Stats().Restored || content(pb) != "login v3, not saved yet" {
		t.Fatalf("restore over a current profile: %v %+v %q", err, b2.Stats(), content(pb))
	}

	// A profile that shows a QR code is never saved: it would overwrite the
	// login.
	qr := NewStateHolder()
	_ = qr.Set(slicehub.WAQR)
	c := newSnapshotter(pb, store, qr, SnapshotPolicy{}, "alloc", quietLog())
	if err := c.maybeSave(ctx, true); err != nil {
		t.Fatal(err)
	}
	if st, _, _ := store.Latest(ctx, false); st.Generation != 2 {
		t.Fatalf("generation %d after a save in state qr, want it unchanged (2)", st.Generation)
	}
}

func TestSnapshotDebounce(t *testing.T) {
	pool, err := OpenPool(testsupport.NewDatabase(t), "42")
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	if err := NewCRM(pool).Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	state := NewStateHolder()
	_ = state.Set(slicehub.WAConnected)
	p := Profile{Dir: t.TempDir(), Essentials: DefaultEssentials}
	writeFiles(t, p.Dir, sampleProfile)
	s := newSnapshotter(p, NewSnapshotStore(pool), state, SnapshotPolicy{Debounce: time.Minute, MinInterval: time.Hour, Settle: time.Hour}, "alloc", quietLog())
	now := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	s.now = func() time.Time { return now }
	s.connectedAt = now
	ctx := context.Background()
	step := func(d time.Duration, wantSaves int) {
		t.Helper()
		now = now.Add(d)
		if err := s.maybeSave(ctx, false); err != nil {
			t.Fatal(err)
		}
		if got := s.Stats().Saves; got != wantSaves {
			t.Fatalf("at +%v: %d saves, want %d", d, got, wantSaves)
		}
	}
	step(0, 0)              // first sight of the change
	step(30*time.Second, 0) // not quiet long enough
	step(31*time.Second, 1) // quiet for a minute, within the settle window
	step(time.Minute, 1)    // nothing changed since
	writeFiles(t, p.Dir, map[string]string{"Default/Cookies": "a new cookie"})
	s.connectedAt = now.Add(-2 * time.Hour) // settled long ago
	step(0, 1)
	step(2*time.Minute, 1) // quiet, but the last save is less than MinInterval ago
	step(time.Hour, 2)
	// The final snapshot skips debounce and interval.
	writeFiles(t, p.Dir, map[string]string{"Default/Cookies": "closing cookie"})
	if err := s.maybeSave(ctx, true); err != nil || s.Stats().Saves != 3 {
		t.Fatalf("final save: %v, %d saves, want 3", err, s.Stats().Saves)
	}
}

func TestChromiumSeccompProfile(t *testing.T) {
	docker := []byte(`{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":1,
		"syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW","args":[],"comment":"","includes":{},"excludes":{}}]}`)
	out, err := ChromiumSeccompProfile(docker)
	if err != nil {
		t.Fatal(err)
	}
	var p struct {
		DefaultAction string `json:"defaultAction"`
		Syscalls      []struct {
			Names  []string
			Action string
			Args   []struct {
				Index    int
				Value    uint64
				ValueTwo uint64 `json:"valueTwo"`
				Op       string
			}
		}
	}
	if err := json.Unmarshal(out, &p); err != nil {
		t.Fatal(err)
	}
	if p.DefaultAction != "SCMP_ACT_ERRNO" || len(p.Syscalls) != 2 {
		t.Fatalf("profile %+v: want Docker's rules kept and one added", p)
	}
	r := p.Syscalls[1]
	if strings.Join(r.Names, ",") != "clone,unshare" || r.Action != "SCMP_ACT_ALLOW" || len(r.Args) != 1 {
		t.Fatalf("added rule %+v", r)
	}
	// Mount and the other namespace kinds stay refused.
	const newNS, newUser, newPID, newNet = 0x00020000, 0x10000000, 0x20000000, 0x40000000
	if a := r.Args[0]; a.Op != "SCMP_CMP_MASKED_EQ" || a.Value&newNS == 0 || a.Value&(newUser|newPID|newNet) != 0 || a.ValueTwo != 0 {
		t.Fatalf("clone/unshare filter %+v: must refuse CLONE_NEWNS and allow user, pid and net namespaces", a)
	}
	if _, err := ChromiumSeccompProfile([]byte(`{"syscalls":"no"}`)); err == nil {
		t.Fatal("accepted something that is not a Docker profile")
	}
}

func TestWhatsAppConfig(t *testing.T) {
	c := WhatsAppConfig{ConnectedSelector: `div[title="it's \"me\""]`}.withDefaults()
	if c.URL != DefaultWhatsApp.URL || c.QRSelector != DefaultWhatsApp.QRSelector {
		t.Fatalf("defaults not applied: %+v", c)
	}
	if s := c.detectScript(); !strings.Contains(s, `"div[title=\"it's \\\"me\\\"\"]"`) {
		t.Fatalf("the selector is not quoted as a JS string:\n%s", s)
	}
	if err := (WhatsAppConfig{URL: "web.whatsapp.com"}).withDefaults().validate(); err == nil {
		t.Fatal("a URL without a scheme was accepted")
	}
}

func TestConfigFromEnvWhatsApp(t *testing.T) {
	base := []string{"SLICE_ID", "42", "NOMAD_PORT_http", "1", "SLICEHUB_BOOTSTRAP_URL", "http://gw"}
	env := func(kv ...string) func(string) string {
		m := map[string]string{}
		kv = append(append([]string{}, base...), kv...)
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return func(k string) string { return m[k] }
	}
	c, err := ConfigFromEnv(env("SLICE_PROFILE_DIR", "/profiles/42", "SLICE_WA_URL", "http://127.0.0.1:9/",
		"SLICE_WA_CONNECTED_SELECTOR", "#chats", "SLICE_CHROMIUM_SANDBOX", "off", "SLICE_CHROMIUM_FLAGS", "--a --b=c",
		"SLICE_CHROMIUM_MAX_RESTARTS", "3", "SLICE_SNAPSHOT", "off"))
	if err != nil {
		t.Fatal(err)
	}
	if !c.runsChromium() || c.WhatsApp.URL != "http://127.0.0.1:9/" || c.WhatsApp.ConnectedSelector != "#chats" ||
		!c.Chromium.NoSandbox || len(c.Chromium.ExtraFlags) != 2 || c.Chromium.MaxRestarts != 3 || !c.Snapshot.Disabled {
		t.Fatalf("ConfigFromEnv = %+v", c)
	}
	c, err = ConfigFromEnv(env("SLICE_PROFILE_DIR", "/p", "SLICE_CHROMIUM", "off", "SLICE_WA_STANDIN", "on"))
	if err != nil || c.runsChromium() || !c.StandIn || c.Chromium.NoSandbox {
		t.Fatalf("ConfigFromEnv = %+v, %v; want no Chromium, stand-in on, sandbox on by default", c, err)
	}
	for name, e := range map[string]func(string) string{
		"bad switch":          env("SLICE_CHROMIUM_SANDBOX", "maybe"),
		"bad url":             env("SLICE_WA_URL", "ftp://x"),
		"stand-in and url":    env("SLICE_WA_STANDIN", "on", "SLICE_WA_URL", "http://x/"),
		"bad restarts":        env("SLICE_CHROMIUM_MAX_RESTARTS", "0"),
		"bad snapshot switch": env("SLICE_SNAPSHOT", "sometimes"),
	} {
		if _, err := ConfigFromEnv(e); err == nil {
			t.Errorf("%s: ConfigFromEnv = nil error, want one", name)
		}
	}
}

func TestQRHolder(t *testing.T) {
	h := NewQRHolder()
	var got []int64
	cancel := h.SubscribeQR(func(c QRCode) { got = append(got, c.Seq) })
	defer cancel()
	if _, ok := h.QR(); ok {
		t.Fatal("a new holder has a code")
	}
	for _, p := range []string{"one", "one", "two"} {
		if err := h.SetPayload(p); err != nil {
			t.Fatal(err)
		}
	}
	c, ok := h.QR()
	if !ok || c.Seq != 2 || c.Payload != "two" || !bytes.HasPrefix(c.PNG, []byte("\x89PNG")) {
		t.Fatalf("QR() = %+v, %v; want the second code as a PNG", c.Seq, ok)
	}
	if len(got) != 2 {
		t.Fatalf("subscribers saw %v, want two new codes (a repeat is not news)", got)
	}
	h.Clear()
	if _, ok := h.QR(); ok {
		t.Fatal("Clear left a code")
	}
	h.SetScreenshot([]byte("\x89PNG fake"))
	if c, _ := h.QR(); c.Seq != 3 || c.Payload != "" {
		t.Fatalf("screenshot code %+v", c)
	}
}

func quietLog() *slog.Logger { return slog.New(slog.DiscardHandler) }

func TestUsesProfile(t *testing.T) {
	for _, c := range []struct {
		cmdline string
		want    bool
	}{
		{"/usr/lib/chromium/chromium\x00--user-data-dir=/profiles/4\x00about:blank\x00", true},
		// A child process: its command line rewritten with spaces.
		{"/usr/lib/chromium/chromium --type=renderer --user-data-dir=/profiles/4 --lang=en-US", true},
		{"/usr/lib/chromium/chromium --type=zygote --user-data-dir=/profiles/4", true},
		{"/usr/lib/chromium/chromium --user-data-dir=/profiles/44 --type=renderer", false},
		{"/usr/lib/chromium/chromium\x00--user-data-dir=/profiles/44\x00", false},
		{"bash\x00-c\x00echo\x00", false},
	} {
		if got := usesProfile([]byte(c.cmdline), "/profiles/4"); got != c.want {
			t.Errorf("usesProfile(%q) = %v, want %v", c.cmdline, got, c.want)
		}
	}
}
