package slice_test

import (
	"bytes"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/slicehub/slicehub"
	"github.com/slicehub/slicehub/slice"
	"github.com/slicehub/slicehub/slice/standin"
	"github.com/slicehub/slicehub/testsupport"
)

// chromiumRSS sums the resident anonymous + shmem memory (RssAnon +
// RssShmem) of the Chromium processes on the profile dir: the test's
// stand-in for the slice's cgroup, which here is the whole test host's.
func chromiumRSS(dir string) (slice.MemoryUsage, error) {
	want := "--user-data-dir=" + dir + " "
	entries, _ := os.ReadDir("/proc")
	var u slice.MemoryUsage
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || !strings.Contains(string(bytes.ReplaceAll(b, []byte{0}, []byte{' '}))+" ", want) {
			continue
		}
		st, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "status"))
		for _, l := range strings.Split(string(st), "\n") {
			f := strings.Fields(l)
			if len(f) < 2 {
				continue
			}
			kb, _ := strconv.ParseUint(f[1], 10, 64)
			switch f[0] {
			case "RssAnon:":
				u.Anon += kb << 10
			case "RssShmem:":
				u.Shmem += kb << 10
			}
		}
	}
	return u, nil
}

// TestGovernorRestart runs the memory governor on a real slice whose
// stand-in page carries a weight profile: over the soft threshold, the
// governor restarts Chromium on the same profile; the session stays linked
// (no new QR code), the page reads its models back from IndexedDB, and a
// message that arrives during the restart reaches the CRM. The threshold
// (200 MiB of Chromium's anon+shmem) sits below what the modelled page
// uses, so that the first armed reading is over it: the test proves the
// mechanism, not a sizing.
func TestGovernorRestart(t *testing.T) {
	profileName := os.Getenv("SLICEHUB_GOVERNOR_PROFILE") // heavy takes minutes to build
	if profileName == "" {
		profileName = "typical"
	}
	w := standin.Weights[profileName]
	sv := standin.New(standin.Options{Codes: 3, Refresh: 5 * time.Second, Logger: quietLogger(), Weight: w})
	ts := httptest.NewServer(sv)
	t.Cleanup(ts.Close)
	profile := filepath.Join(t.TempDir(), "42")
	cfg := waConfig(testsupport.NewDatabase(t), profile, ts.URL+"/")
	var armed atomic.Bool
	cfg.Governor = slice.GovernorConfig{Soft: 200 << 20, Every: 500 * time.Millisecond, MinInterval: time.Hour,
		Read: func() (slice.MemoryUsage, error) {
			if !armed.Load() {
				return slice.MemoryUsage{}, nil
			}
			return chromiumRSS(profile)
		}}
	rs := startSlice(t, cfg)
	testsupport.Eventually(t, time.Minute, "a scan", func() (bool, error) { return sv.Scan("") == nil, nil })
	rs.waitState(t, slicehub.WAConnected, 30*time.Second)
	testsupport.Eventually(t, 10*time.Minute, "the weight model built", func() (bool, error) {
		st := sv.WeightStatus()
		return st.Loads == 1 && st.State == "ready", fmt.Errorf("%+v", st)
	})
	u, _ := chromiumRSS(profile)
	t.Logf("modelled %s profile: Chromium anon %d MiB, shmem %d MiB; weight %+v", profileName, u.Anon>>20, u.Shmem>>20, sv.WeightStatus())
	pairings, launches := sv.Stats().Pairings, rs.slice.BrowserLaunches()

	armed.Store(true)
	testsupport.Eventually(t, time.Minute, "a governor restart", func() (bool, error) {
		return len(rs.slice.Governor().Events()) >= 1, nil
	})
	// A message from the phone while the browser restarts.
	if _, err := sv.Deliver("+49 151 5550017", "Governor", "sent during the restart"); err != nil {
		t.Fatal(err)
	}
	testsupport.Eventually(t, time.Minute, "a new Chromium", func() (bool, error) {
		return rs.slice.BrowserLaunches() == launches+1, nil
	})
	rs.waitState(t, slicehub.WAConnected, time.Minute)
	testsupport.Eventually(t, time.Minute, "the message caught up", func() (bool, error) {
		c, ok := rs.chatByPhone(t, "+491515550017")
		if !ok {
			var cr chatsResp
			rs.call(t, "GET", "/api/chats", "", &cr)
			return false, fmt.Errorf("no chat +491515550017 among %+v", cr.Chats)
		}
		for _, m := range rs.allMessages(t, c.ID) {
			if m.Body == "sent during the restart" {
				return true, nil
			}
		}
		return false, nil
	})
	testsupport.Eventually(t, 5*time.Minute, "the weight model read back", func() (bool, error) {
		st := sv.WeightStatus()
		return st.Loads == 2 && st.State == "ready", fmt.Errorf("%+v", st)
	})
	if st := sv.Stats(); st.Pairings != pairings {
		t.Fatalf("%d new pairings: the restart cost a re-link", st.Pairings-pairings)
	}
	ev := rs.slice.Governor().Events()
	if len(ev) != 1 || ev[0].Error != "" {
		t.Fatalf("governor events %+v, want one clean restart (the loop guard holds the rest)", ev)
	}
	// The page read back from IndexedDB is what a governor restart leaves:
	// a soft threshold under it would restart in a loop (jobs/soak_test.go
	// sizes the heavy budget from these two figures).
	after, _ := chromiumRSS(profile)
	t.Logf("governor restart: %+v; weight after: %+v", ev[0], sv.WeightStatus())
	t.Logf("modelled %s profile after the restart (read back): Chromium anon %d MiB, shmem %d MiB (before: anon %d MiB, shmem %d MiB)",
		profileName, after.Anon>>20, after.Shmem>>20, u.Anon>>20, u.Shmem>>20)
}
