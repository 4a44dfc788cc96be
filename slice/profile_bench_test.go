package slice

import (
	"context"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/slicehub/slicehub"
	"github.com/slicehub/slicehub/slice/standin"
	"github.com/slicehub/slicehub/testsupport"
)

var (
	loggedInOnce    sync.Once
	loggedInArchive []byte
	loggedInErr     error
)

// loggedInEssentials makes, once per test binary, a Chromium profile logged
// in to the stand-in page by the real supervisor, closed gracefully (so
// that Local Storage is on disk), and returns its essentials as an archive.
func loggedInEssentials(b *testing.B) []byte {
	loggedInOnce.Do(func() {
		sv := standin.New(standin.Options{Codes: 3, Refresh: 5 * time.Second, Logger: quietLog()})
		ts := httptest.NewServer(sv)
		defer ts.Close()
		dir, err := os.MkdirTemp("", "slice-bench-profile-")
		if err != nil {
			loggedInErr = err
			return
		}
		defer os.RemoveAll(dir)
		state, qr := NewStateHolder(), NewQRHolder()
		sup := NewSupervisor(ChromiumConfig{NoSandbox: os.Geteuid() == 0}, WhatsAppConfig{URL: ts.URL + "/"},
			Profile{Dir: dir, Essentials: DefaultEssentials}, state, qr, quietLog())
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- sup.Run(ctx) }()
		testsupport.Eventually(b, time.Minute, "a QR code", func() (bool, error) {
			c, ok := qr.QR()
			if !ok {
				return false, nil
			}
			id, _ := standin.SessionFromPayload(c.Payload)
			return sv.Scan(id) == nil, nil
		})
		testsupport.Eventually(b, 30*time.Second, "connected", func() (bool, error) {
			return state.State() == slicehub.WAConnected, nil
		})
		cancel()
		if loggedInErr = <-done; loggedInErr != nil {
			return
		}
		a, err := Profile{Dir: dir, Essentials: DefaultEssentials}.snapshot(256 << 20)
		loggedInArchive, loggedInErr = a.Data, err
	})
	if loggedInErr != nil {
		b.Fatal(loggedInErr)
	}
	return loggedInArchive
}

// BenchmarkProfileSnapshot measures the snapshot of a profile logged in to
// the stand-in page: its size, the time to copy and save it to the slice's
// database, and the time to read it back and restore it into an empty
// profile directory (what a slice placed on another node does before
// starting Chromium). Real WhatsApp keeps more in IndexedDB (its message
// cache) than the stand-in, so production snapshots are larger; the
// snapshotter logs their size with each save.
func BenchmarkProfileSnapshot(b *testing.B) {
	src := Profile{Dir: filepath.Join(b.TempDir(), "logged-in"), Essentials: DefaultEssentials}
	if _, err := src.restore(loggedInEssentials(b), 256<<20); err != nil {
		b.Fatal(err)
	}
	pool, err := OpenPool(testsupport.NewDatabase(b), "bench")
	if err != nil {
		b.Fatal(err)
	}
	defer pool.Close()
	if err := NewCRM(pool).Migrate(context.Background()); err != nil {
		b.Fatal(err)
	}
	store := NewSnapshotStore(pool)
	ctx := context.Background()
	var save, restore time.Duration
	var a archive
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		dst := Profile{Dir: filepath.Join(b.TempDir(), "profile"), Essentials: DefaultEssentials}
		t0 := time.Now()
		a, err = src.snapshot(256 << 20)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := store.Save(ctx, a, "bench"); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		snap, _, err := store.Latest(ctx, true)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := dst.restore(snap.Data, 256<<20); err != nil {
			b.Fatal(err)
		}
		t2 := time.Now()
		save += t1.Sub(t0)
		restore += t2.Sub(t1)
	}
	b.StopTimer()
	n := float64(b.N)
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(float64(len(a.Data)), "B-snapshot")
	b.ReportMetric(float64(a.Bytes), "B-raw")
	b.ReportMetric(float64(a.Files), "files")
	b.ReportMetric(float64(save.Microseconds())/n/1000, "ms-save")
	b.ReportMetric(float64(restore.Microseconds())/n/1000, "ms-restore")
}
