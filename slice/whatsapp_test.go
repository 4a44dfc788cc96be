package slice_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"image/png"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/slicehub/slicehub"
	"github.com/slicehub/slicehub/slice"
	"github.com/slicehub/slicehub/slice/standin"
	"github.com/slicehub/slicehub/testsupport"
)

// These tests run the real Chromium on this host against the stand-in page.
// The test process is root here, and Chromium refuses its sandbox as root,
// so they run it with NoSandbox; the sandbox is tested in the container
// (jobs tests).

// waConfig is a slice with Chromium on profileDir, pointed at the stand-in,
// with quick restarts and snapshots.
func waConfig(dbURL, profileDir, waURL string) slice.Config {
	return slice.Config{
		SliceID: "42", AllocID: "alloc-wa", DatabaseURL: dbURL, GatewayToken: itToken,
		ProfileDir: profileDir,
		WhatsApp:   slice.WhatsAppConfig{URL: waURL},
		Chromium: slice.ChromiumConfig{
			NoSandbox: os.Geteuid() == 0,
			Backoff:   slice.Backoff{Min: 100 * time.Millisecond, Max: time.Second},
		},
		Snapshot: slice.SnapshotPolicy{Poll: 200 * time.Millisecond, Debounce: 600 * time.Millisecond},
	}
}

func newStandIn(t *testing.T) (*standin.Server, *httptest.Server) {
	sv := standin.New(standin.Options{Codes: 3, Refresh: 1500 * time.Millisecond, Logger: quietLogger()})
	ts := httptest.NewServer(sv)
	t.Cleanup(ts.Close)
	return sv, ts
}

// waState reads /api/status/state as the gateway would.
func (rs *runningSlice) waState(t *testing.T) string {
	t.Helper()
	var st struct{ State string }
	if code := rs.call(t, "GET", "/api/status/state", "", &st); code != 200 {
		t.Fatalf("GET /api/status/state = %d", code)
	}
	return st.State
}

func (rs *runningSlice) waitState(t *testing.T, want string, timeout time.Duration) {
	t.Helper()
	testsupport.Eventually(t, timeout, "WhatsApp state "+want, func() (bool, error) {
		got := rs.waState(t)
		return got == want, fmt.Errorf("state %s", got)
	})
}

// qrJSON reads the current QR code's payload; ok is false on 404.
func (rs *runningSlice) qrJSON(t *testing.T) (slice.QRStatus, bool) {
	t.Helper()
	var q slice.QRStatus
	code := rs.call(t, "GET", "/api/status/qr?format=json", "", &q)
	return q, code == 200
}

// chromiumProcs counts the processes running Chromium on dir. (Chromium's
// children rewrite their command line with spaces between the arguments.)
func chromiumProcs(dir string) int {
	want := "--user-data-dir=" + dir + " "
	entries, _ := os.ReadDir("/proc")
	n := 0
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && strings.Contains(string(bytes.ReplaceAll(b, []byte{0}, []byte{' '}))+" ", want) {
			n++
		}
	}
	return n
}

// snapshotHolds reports whether the stored snapshot has needle in a file
// under Local Storage and in one under IndexedDB: the stand-in's login lives
// in both.
func snapshotHolds(t *testing.T, dbURL string, needle []byte) (bool, error) {
	t.Helper()
	pool, err := slice.OpenPool(dbURL, "42-test")
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	snap, ok, err := slice.NewSnapshotStore(pool).Latest(context.Background(), true)
	if err != nil || !ok {
		return false, fmt.Errorf("no snapshot yet (%v)", err)
	}
	zr, err := gzip.NewReader(bytes.NewReader(snap.Data))
	if err != nil {
		return false, err
	}
	tr := tar.NewReader(zr)
	var inLS, inIDB bool
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return false, err
		}
		b, _ := io.ReadAll(tr)
		if bytes.Contains(b, needle) {
			inLS = inLS || strings.HasPrefix(h.Name, "Default/Local Storage/")
			inIDB = inIDB || strings.HasPrefix(h.Name, "Default/IndexedDB/")
		}
	}
	return inLS && inIDB, fmt.Errorf("generation %d: login in Local Storage %v, in IndexedDB %v", snap.Generation, inLS, inIDB)
}

// TestWhatsAppSession follows one WhatsApp session through the slice's life
// on one host: QR codes, the scan, a Chromium crash, a restart of the slice
// on the same profile, and a restart on an empty profile (another node)
// that restores the snapshot. After the scan, the stand-in must never hand
// out another QR code.
func TestWhatsAppSession(t *testing.T) {
	sv, ts := newStandIn(t)
	dbURL := testsupport.NewDatabase(t)
	profile := filepath.Join(t.TempDir(), "profiles", "42")
	cfg := waConfig(dbURL, profile, ts.URL+"/")
	rs := startSlice(t, cfg)

	// Subscribe before the first code so that the socket.io push is seen.
	h := http.Header{}
	h.Set(slicehub.HeaderGatewayToken, itToken)
	sock := &pollClient{t: t, base: rs.base, header: h}
	if st, open := sock.do("GET", "", h); st != 200 || !strings.HasPrefix(open, "0{") {
		t.Fatalf("socket.io handshake = %d %q", st, open)
	} else {
		var hs struct{ Sid string }
		_ = json.Unmarshal([]byte(open[1:]), &hs)
		sock.sid = hs.Sid
	}
	sock.send("40")

	var session string
	t.Run("qr codes", func(t *testing.T) {
		rs.waitState(t, slicehub.WAQR, time.Minute)
		var first slice.QRStatus
		testsupport.Eventually(t, 10*time.Second, "a QR payload", func() (bool, error) {
			var ok bool
			first, ok = rs.qrJSON(t)
			return ok && first.QR != "", fmt.Errorf("qr %+v", first)
		})
		var ok bool
		if session, ok = standin.SessionFromPayload(first.QR); !ok {
			t.Fatalf("payload %q is not the stand-in's", first.QR)
		}
		// The PNG is a QR code image of a scannable size.
		req, _ := http.NewRequest("GET", rs.base+"/api/status/qr", nil)
		req.Header.Set(slicehub.HeaderGatewayToken, itToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		img, err := png.Decode(resp.Body)
		resp.Body.Close()
		if err != nil || resp.Header.Get("Content-Type") != "image/png" {
			t.Fatalf("GET /api/status/qr: %v %s", err, resp.Header.Get("Content-Type"))
		}
		if b := img.Bounds(); b.Dx() < 200 || b.Dx() != b.Dy() {
			t.Fatalf("QR image %v, want a square of at least 200 px", b)
		}
		// The code changes ("code 2 of 3"), and socket.io pushes it.
		testsupport.Eventually(t, 10*time.Second, "a new QR code", func() (bool, error) {
			q, _ := rs.qrJSON(t)
			return q.Seq > first.Seq && q.QR != first.QR, fmt.Errorf("seq %d", q.Seq)
		})
		sawQR := false
		for i := 0; i < 20 && !sawQR; i++ {
			sawQR = strings.HasPrefix(sock.next(), `42["qr",{`)
		}
		if !sawQR {
			t.Fatal("socket.io pushed no qr event")
		}
		// Without the token there is no QR code for anyone.
		resp, err = http.Get(rs.base + "/api/status/qr")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("GET /api/status/qr without token = %d, want 401", resp.StatusCode)
		}
	})
	if session == "" {
		t.FailNow()
	}

	var pairings int
	t.Run("scan", func(t *testing.T) {
		if err := sv.Scan(session); err != nil {
			t.Fatal(err)
		}
		rs.waitState(t, slicehub.WAConnected, 15*time.Second)
		if _, ok := rs.qrJSON(t); ok {
			t.Fatal("a QR code is still served once connected")
		}
		// The login reaches the disk (Local Storage is written a few
		// seconds late) and the database.
		testsupport.Eventually(t, 30*time.Second, "the login in the stored snapshot", func() (bool, error) {
			return snapshotHolds(t, dbURL, []byte(session))
		})
		pairings = sv.Stats().Pairings
	})
	noNewQR := func(t *testing.T, resumesBefore int) {
		t.Helper()
		st := sv.Stats()
		if st.Pairings != pairings {
			t.Fatalf("the stand-in started %d new pairings: a new QR code was needed", st.Pairings-pairings)
		}
		if st.Resumes <= resumesBefore {
			t.Fatalf("resumes %d, want more than %d: the page did not come back from its storage", st.Resumes, resumesBefore)
		}
	}

	t.Run("chromium crash", func(t *testing.T) {
		resumes := sv.Stats().Resumes
		pid := rs.slice.BrowserPID()
		if pid == 0 {
			t.Fatal("no browser pid")
		}
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		testsupport.Eventually(t, 30*time.Second, "Chromium restarted", func() (bool, error) {
			return rs.slice.BrowserLaunches() == 2 && rs.slice.BrowserPID() != 0, nil
		})
		rs.waitState(t, slicehub.WAConnected, 30*time.Second)
		noNewQR(t, resumes)
	})

	t.Run("graceful stop and restart on the same profile", func(t *testing.T) {
		resumes := sv.Stats().Resumes
		t0 := time.Now()
		if err := rs.stop(); err != nil {
			t.Fatal(err)
		}
		t.Logf("stop (Chromium close + final snapshot) took %v", time.Since(t0).Round(time.Millisecond))
		if n := chromiumProcs(profile); n != 0 {
			t.Fatalf("%d Chromium processes outlived the slice", n)
		}
		rs = startSlice(t, cfg)
		rs.waitState(t, slicehub.WAConnected, time.Minute)
		noNewQR(t, resumes)
		if st := rs.slice.SnapshotStats(); st.Restored {
			t.Fatalf("restored a snapshot over a current local profile (%+v)", st)
		}
		if err := rs.stop(); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("another node: empty profile, restored from the database", func(t *testing.T) {
		resumes := sv.Stats().Resumes
		other := waConfig(dbURL, filepath.Join(t.TempDir(), "elsewhere", "42"), ts.URL+"/")
		rs2 := startSlice(t, other)
		rs2.waitState(t, slicehub.WAConnected, time.Minute)
		noNewQR(t, resumes)
		st := rs2.slice.SnapshotStats()
		if !st.Restored {
			t.Fatalf("no restore on an empty profile (%+v)", st)
		}
		t.Logf("snapshot: %d bytes compressed, %d files; restore took %v", st.LastBytes, st.LastFiles, st.RestoreTook.Round(time.Microsecond))
	})
}

// TestStandInMode is the development platform's path: the slice serves the
// stand-in itself, and POST /api/dev/scan plays the phone.
func TestStandInMode(t *testing.T) {
	cfg := waConfig(testsupport.NewDatabase(t), filepath.Join(t.TempDir(), "42"), "")
	cfg.StandIn = true
	rs := startSlice(t, cfg)
	rs.waitState(t, slicehub.WAQR, time.Minute)
	testsupport.Eventually(t, 10*time.Second, "a QR payload", func() (bool, error) {
		q, ok := rs.qrJSON(t)
		return ok && strings.HasPrefix(q.QR, standin.PayloadPrefix), fmt.Errorf("qr %+v", q)
	})
	if st := rs.call(t, "POST", "/api/dev/scan", "", nil); st != http.StatusNoContent {
		t.Fatalf("POST /api/dev/scan = %d, want 204", st)
	}
	rs.waitState(t, slicehub.WAConnected, 15*time.Second)
}

// TestDevScanOutsideStandIn: the phone hook does not exist in production.
func TestDevScanOutsideStandIn(t *testing.T) {
	h := slice.NewHandler("42", slice.NewStateHolder(), quietLogger())
	h.SetReady(itToken, nil)
	req := httptest.NewRequest("POST", "/api/dev/scan", nil)
	req.Header.Set(slicehub.HeaderGatewayToken, itToken)
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	if w.Code != http.StatusNotFound {
		t.Fatalf("POST /api/dev/scan without the stand-in = %d, want 404", w.Code)
	}
}

// TestChromiumRestartCap: a browser that cannot start is retried with
// backoff, then the slice reports "failed" instead of spinning.
func TestChromiumRestartCap(t *testing.T) {
	cfg := waConfig(testsupport.NewDatabase(t), filepath.Join(t.TempDir(), "42"), "http://127.0.0.1:9/")
	cfg.Chromium.Path = "/bin/false"
	cfg.Chromium.MaxRestarts = 2
	rs := startSlice(t, cfg)
	rs.waitState(t, slicehub.WAFailed, 30*time.Second)
}
