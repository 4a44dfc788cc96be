package slicehub

import (
	"strconv"
	"testing"
)

// FuzzParseSliceID checks that ParseSliceID accepts exactly the canonical
// decimal spelling of a positive int64: slice ids come from Nomad and
// Consul meta, and two spellings of one id (leading zeros, a sign, spaces)
// could make two route-table entries or two bootstrap claims of one slice.
func FuzzParseSliceID(f *testing.F) {
	for _, s := range []string{"", "0", "1", "42", "007", "-1", "+1", " 1", "1 ", "1e3", "0x10",
		"９", "999999999999999999", "1000000000000000000", "9223372036854775807", "9223372036854775808",
		"١٢", "1\x00", "18446744073709551617"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, ok := ParseSliceID(s)
		if !ok {
			if id != 0 {
				t.Fatalf("ParseSliceID(%q) refused but returned %d", s, id)
			}
			return
		}
		if id <= 0 {
			t.Fatalf("ParseSliceID(%q) = %d, accepted a non-positive id", s, id)
		}
		if canon := strconv.FormatInt(id, 10); canon != s {
			t.Fatalf("ParseSliceID(%q) = %d, accepted a non-canonical spelling of %s", s, id, canon)
		}
	})
}
