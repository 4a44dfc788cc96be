package nomad

import "testing"

func TestParseChild(t *testing.T) {
	cases := []struct {
		id, meta string
		slice    int64
		gen      int
	}{
		{"slice/dispatch-s12g3-1700000000-0a1b2c3d", "12", 12, 3},
		{"slice/dispatch-1700000000-0a1b2c3d", "12", 12, -1},        // by hand
		{"slice/dispatch-s12g3-1700000000-0a1b2c3d", "13", 13, -1},  // meta disagrees with the ID
		{"slice/dispatch-s012g3-1700000000-0a1b2c3d", "12", 12, -1}, // not the scheduler's spelling
		{"slice/dispatch-s12g3-1700000000-0a1b2c3d", "x", 0, -1},    // bad meta
	}
	for _, c := range cases {
		got := parseChild(c.id, c.meta, "running", false)
		if got.SliceID != c.slice || got.Generation != c.gen {
			t.Errorf("parseChild(%q, %q) = slice %d gen %d; want %d, %d", c.id, c.meta, got.SliceID, got.Generation, c.slice, c.gen)
		}
	}
}
