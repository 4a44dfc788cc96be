package proxy

import (
	"bufio"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"
)

// BenchmarkStripResponse is the per-answer cost of making a slice's answer
// head fit for the browser, as both proxy paths do once per answer.
func BenchmarkStripResponse(b *testing.B) {
	const head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 17\r\nDate: Mon, 07 Dec 2026 21:00:00 GMT\r\n\r\n"
	var h fasthttp.ResponseHeader
	src := strings.NewReader(head)
	br := bufio.NewReader(src)
	out := make([]byte, 0, 1024) // as the loop's wbuf, reused
	b.ReportAllocs()
	for b.Loop() {
		h.Reset()
		src.Reset(head)
		br.Reset(src)
		if err := h.Read(br); err != nil {
			b.Fatal(err)
		}
		StripResponse(&h)
		out = h.AppendBytes(out[:0])
	}
}
