package slice

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"sync"
	"time"

	qrcode "github.com/skip2/go-qrcode"
)

// QRCode is the QR code the WhatsApp page shows now.
type QRCode struct {
	// Seq counts the codes this process has seen, from 1. A client that
	// polls /api/status/qr compares it to know whether the picture changed.
	Seq int64
	// Payload is the text the code encodes, "" when the page did not expose
	// it and PNG is a screenshot.
	Payload string
	// PNG is the image served on GET /api/status/qr.
	PNG []byte
	// At is when this code appeared.
	At time.Time
}

// QRSource is what the HTTP and socket.io layers need to know about the QR
// code; *QRHolder implements it.
type QRSource interface {
	// QR returns the current code, and false when there is none (the state
	// is not qr).
	QR() (QRCode, bool)
	// SubscribeQR calls fn with every new code, in order, until cancel.
	// fn must not block for long.
	SubscribeQR(fn func(QRCode)) (cancel func())
}

// QRHolder holds the current QR code. The Chromium supervisor sets it; it is
// cleared whenever the page leaves the QR state, so that a stale code is
// never served after the phone linked.
type QRHolder struct {
	mu     sync.Mutex
	cur    *QRCode
	sum    [sha256.Size]byte // of the current payload or screenshot
	seq    int64
	next   int
	subs   map[int]func(QRCode)
	notify sync.Mutex
	now    func() time.Time
}

// NewQRHolder returns an empty holder.
func NewQRHolder() *QRHolder {
	return &QRHolder{subs: map[int]func(QRCode){}, now: time.Now}
}

// qrPNGSize is the side of the rendered image in pixels: large enough to scan
// from a screen, small enough to be a few kilobytes.
const qrPNGSize = 264

// SetPayload shows the code for payload, rendering it as a PNG. Setting the
// payload already shown does nothing.
func (h *QRHolder) SetPayload(payload string) error {
	sum := sha256.Sum256([]byte("payload\x00" + payload))
	if h.same(sum) {
		return nil
	}
	png, err := qrcode.Encode(payload, qrcode.Medium, qrPNGSize)
	if err != nil {
		return fmt.Errorf("slice.qr: rendering the payload: %w", err)
	}
	h.set(sum, QRCode{Payload: payload, PNG: png})
	return nil
}

// SetScreenshot shows a screenshot of the page's QR element, for pages that
// do not expose the payload.
func (h *QRHolder) SetScreenshot(png []byte) {
	sum := sha256.Sum256(append([]byte("png\x00"), png...))
	if h.same(sum) {
		return
	}
	h.set(sum, QRCode{PNG: bytes.Clone(png)})
}

func (h *QRHolder) same(sum [sha256.Size]byte) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.cur != nil && h.sum == sum
}

func (h *QRHolder) set(sum [sha256.Size]byte, c QRCode) {
	h.notify.Lock()
	defer h.notify.Unlock()
	h.mu.Lock()
	h.seq++
	c.Seq = h.seq
	c.At = h.now()
	h.cur = &c
	h.sum = sum
	fns := make([]func(QRCode), 0, len(h.subs))
	for _, fn := range h.subs {
		fns = append(fns, fn)
	}
	h.mu.Unlock()
	for _, fn := range fns {
		fn(c)
	}
}

// Clear removes the current code.
func (h *QRHolder) Clear() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.cur = nil
}

// QR implements QRSource.
func (h *QRHolder) QR() (QRCode, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.cur == nil {
		return QRCode{}, false
	}
	return *h.cur, true
}

// SubscribeQR implements QRSource.
func (h *QRHolder) SubscribeQR(fn func(QRCode)) (cancel func()) {
	h.mu.Lock()
	defer h.mu.Unlock()
	id := h.next
	h.next++
	h.subs[id] = fn
	return func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		delete(h.subs, id)
	}
}
