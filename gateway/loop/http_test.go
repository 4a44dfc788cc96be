package loop

import (
	"bytes"
	"net/http/httputil"
	"testing"
)

func TestChunkScanner(t *testing.T) {
	for _, tc := range []struct {
		in   string
		n    int
		done bool
		bad  bool
	}{
		{"0\r\n\r\n", 5, true, false},
		{"5\r\nhello\r\n0\r\n\r\nGET", 15, true, false},
		{"5;ext=1\r\nhello\r\n0\r\nX-Trailer: y\r\n\r\n", 35, true, false},
		{"A\r\n0123456789\r\n0\r\n\r\n", 20, true, false},
		{"5\r\nhello\r\n", 10, false, false},
		{"z\r\n", 1, false, true},
		{"5\r\nhelloXX", 9, false, true},
		{"\r\n", 1, false, true},
		{"ffffffffffffffff\r\n", 16, false, true},
		{"5\nhello", 2, false, true},
	} {
		var s chunkScanner
		n, done, err := s.scan([]byte(tc.in), 100)
		if n != tc.n || done != tc.done || (err != nil) != tc.bad {
			t.Errorf("%q: n %d done %v err %v; want %d %v bad %v", tc.in, n, done, err, tc.n, tc.done, tc.bad)
		}
	}
}

// FuzzChunkScanner: whatever Go's chunked writer makes of a body, split
// anywhere, the scanner ends it exactly where it ends.
func FuzzChunkScanner(f *testing.F) {
	f.Add([]byte("hello world"), uint8(3), uint16(7))
	f.Add([]byte{}, uint8(1), uint16(0))
	f.Fuzz(func(t *testing.T, body []byte, pieces uint8, cut uint16) {
		var enc bytes.Buffer
		w := httputil.NewChunkedWriter(&enc)
		for len(body) > 0 {
			k := min(len(body), int(pieces)+1)
			w.Write(body[:k])
			body = body[k:]
		}
		w.Close()
		enc.WriteString("\r\n")
		wire := enc.Bytes()
		extra := append(bytes.Clone(wire), "GET /next"...)
		at := int(cut) % (len(extra) + 1)
		var s chunkScanner
		n1, done, err := s.scan(extra[:at], 0)
		if err != nil {
			t.Fatalf("scan: %v", err)
		}
		total := n1
		if !done {
			n2, done2, err := s.scan(extra[at:], 0)
			if err != nil || !done2 {
				t.Fatalf("not done after all of it: %v", err)
			}
			total += n2
		}
		if total != len(wire) {
			t.Fatalf("ended at %d, want %d", total, len(wire))
		}
	})
}

// metricValue reads a gauge or counter.
