package slice_test

import (
	"fmt"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/slicehub/slicehub"
	"github.com/slicehub/slicehub/slice/standin"
	"github.com/slicehub/slicehub/testsupport"
)

// TestWeightModel runs the light weight profile in the real Chromium: once
// linked, the page builds its models, IndexedDB store and chat list, and a
// slice restarted on the same profile reads them back from IndexedDB.
func TestWeightModel(t *testing.T) {
	w := standin.Weights["light"]
	sv := standin.New(standin.Options{Codes: 3, Refresh: 1500 * time.Millisecond, Logger: quietLogger(), Weight: w})
	ts := httptest.NewServer(sv)
	t.Cleanup(ts.Close)
	cfg := waConfig(testsupport.NewDatabase(t), filepath.Join(t.TempDir(), "42"), ts.URL+"/")
	rs := startSlice(t, cfg)
	rs.waitState(t, slicehub.WAQR, time.Minute)
	testsupport.Eventually(t, 20*time.Second, "a scan", func() (bool, error) { return sv.Scan("") == nil, nil })
	rs.waitState(t, slicehub.WAConnected, 30*time.Second)
	want := func(loads int, source string) {
		t.Helper()
		testsupport.Eventually(t, 2*time.Minute, "weight model "+source, func() (bool, error) {
			st := sv.WeightStatus()
			return st.Loads == loads && st.State == "ready", fmt.Errorf("%+v", st)
		})
		st := sv.WeightStatus()
		if st.Source != source || st.Chats != w.Chats || st.Messages != w.Chats*w.MessagesPerChat || st.Contacts != w.Contacts {
			t.Fatalf("weight model %+v, want %s with %+v", st, source, w)
		}
		t.Logf("weight model %s: %d chats, %d messages in %d ms", st.Source, st.Chats, st.Messages, st.MS)
	}
	want(1, "built")
	// A slice restarted on the same profile (a crash right after the link
	// could lose the login itself, which Local Storage writes late: that is
	// TestWhatsAppSession's business).
	if err := rs.stop(); err != nil {
		t.Fatal(err)
	}
	rs = startSlice(t, cfg)
	rs.waitState(t, slicehub.WAConnected, time.Minute)
	want(2, "idb")
}
