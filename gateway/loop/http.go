package loop

import (
	"bytes"
	"errors"
	"net"

	"github.com/valyala/fasthttp"
)

// The HTTP/1.1 framing the loop needs beyond fasthttp's parser: where a
// request head ends, where a chunked body ends, and the request target.

// HeadEnd is the length of the request head at the start of b, ending
// where fasthttp's parser ends it, or -1 while it is incomplete: empty
// lines before the request line are skipped, and the head ends at the
// first empty line after it, "\r\n" or a bare "\n" (fasthttp accepts bare
// LF line ends). The splitter and the event loop both split heads with
// it, so that neither waits for a "\r\n\r\n" that fasthttp does not need,
// nor reads a pipelined request into another's head; the loop also checks
// that fasthttp's parser used exactly these bytes.
func HeadEnd(b []byte) int {
	requestLine := false
	for i := 0; ; {
		j := bytes.IndexByte(b[i:], '\n')
		if j < 0 {
			return -1
		}
		empty := j == 0 || j == 1 && b[i] == '\r'
		i += j + 1
		switch {
		case !empty:
			requestLine = true
		case requestLine:
			return i
		}
	}
}

// chunkScanner follows a chunked body (RFC 9112 7.1) as it passes through
// unchanged, to find where it ends: the loop relays a slice's chunks as
// they come and must know when the answer is over and the connection free.
type chunkScanner struct {
	state   uint8
	digits  uint8
	size    int64 // bytes left in the current chunk, once its size is read
	trailer int   // bytes of trailer fields so far
}

const (
	chSize = iota
	chExt
	chSizeLF
	chData
	chDataCR
	chDataLF
	chTrailer
	chTrailerLine
	chTrailerLF
	chEndLF
)

var errBadChunk = errors.New("malformed chunked body")

// scan reads p, the next bytes of the body, and returns how many belong to
// it (all of p unless the body ends inside it) and whether it has ended.
// Trailers may take maxTrailer bytes.
func (s *chunkScanner) scan(p []byte, maxTrailer int) (n int, done bool, err error) {
	for n < len(p) {
		if s.state == chData {
			k := min(int64(len(p)-n), s.size)
			n += int(k)
			if s.size -= k; s.size == 0 {
				s.state = chDataCR
			}
			continue
		}
		b := p[n]
		n++
		switch s.state {
		case chSize:
			switch v := unhex(b); {
			case v >= 0:
				if s.digits == 15 { // 16 hex digits would overflow int64
					return n, false, errBadChunk
				}
				s.size = s.size<<4 | int64(v)
				s.digits++
			case s.digits == 0:
				return n, false, errBadChunk
			case b == ';' || b == ' ' || b == '\t':
				s.state = chExt
			case b == '\r':
				s.state = chSizeLF
			default:
				return n, false, errBadChunk
			}
		case chExt:
			switch b {
			case '\r':
				s.state = chSizeLF
			case '\n':
				return n, false, errBadChunk
			}
		case chSizeLF:
			if b != '\n' {
				return n, false, errBadChunk
			}
			s.digits = 0
			if s.size == 0 {
				s.state = chTrailer
			} else {
				s.state = chData
			}
		case chDataCR:
			if b != '\r' {
				return n, false, errBadChunk
			}
			s.state = chDataLF
		case chDataLF:
			if b != '\n' {
				return n, false, errBadChunk
			}
			s.state, s.size = chSize, 0
		case chTrailer, chTrailerLine:
			if b == '\r' {
				if s.state == chTrailer {
					s.state = chEndLF
				} else {
					s.state = chTrailerLF
				}
				break
			}
			if b == '\n' {
				return n, false, errBadChunk
			}
			s.state = chTrailerLine
			if s.trailer++; s.trailer > maxTrailer {
				return n, false, errBadChunk
			}
		case chTrailerLF:
			if b != '\n' {
				return n, false, errBadChunk
			}
			s.state = chTrailer
		case chEndLF:
			if b != '\n' {
				return n, false, errBadChunk
			}
			*s = chunkScanner{}
			return n, true, nil
		}
	}
	return n, false, nil
}

func unhex(b byte) int {
	switch {
	case '0' <= b && b <= '9':
		return int(b - '0')
	case 'a' <= b && b <= 'f':
		return int(b-'a') + 10
	case 'A' <= b && b <= 'F':
		return int(b-'A') + 10
	}
	return -1
}

// OriginPath is the path of an origin-form request target ("/api/x?q"),
// which is what front's URI().PathOriginal() is for it, without parsing a
// URI; nil for any other form (absolute, authority, "*"), which the loop
// leaves to the server.
func OriginPath(target []byte) []byte {
	if len(target) == 0 || target[0] != '/' {
		return nil
	}
	if i := bytes.IndexAny(target, "?#"); i >= 0 {
		return target[:i]
	}
	return target
}

// sliceTarget is the request target the server path sends a slice for the
// origin-form target t: fasthttp writes URI().RequestURI(), the raw path
// (path normalising is off, gateway/proxy) and the query, so the fragment
// goes, and so does a '?' that begins an empty query. The loop forwards
// the same.
func sliceTarget(t []byte) []byte {
	if i := bytes.IndexByte(t, '#'); i >= 0 {
		t = t[:i]
	}
	if n := len(t); n > 0 && bytes.IndexByte(t, '?') == n-1 {
		t = t[:n-1]
	}
	return t
}

var crlfcrlf = []byte("\r\n\r\n")

var (
	prefixAPI      = []byte("/api")
	prefixSocketIO = []byte("/socket.io")
)

// isTimeout: the loop's own timeouts, and a socket's.
func isTimeout(err error) bool {
	if errors.Is(err, fasthttp.ErrTimeout) || errors.Is(err, fasthttp.ErrDialTimeout) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
