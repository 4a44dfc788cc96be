// Package sliceclient is the one client of a slice's status API
// (GET /api/status/state and /api/status/qr, and the development
// platform's POST /api/dev/scan), asked on the platform's behalf with the
// slice's gateway token. The gateway's workspace page, the admin
// dashboard and telemetry all ask through it, so that the paths, the
// headers, the size limits and what counts as an answer are written once.
//
// It imports only the standard library and the root package: the caller
// finds the slice's address and token (the route table, the scheduler)
// and chooses the transport (an *http.Client, or the gateway's own pool).
package sliceclient

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/slicehub/slicehub"
)

// The status API's paths, served by package slice.
const (
	PathState   = "/api/status/state"
	PathQR      = "/api/status/qr"
	PathDevScan = "/api/dev/scan"
)

// Limits on what is read of an answer.
const (
	MaxStateBytes = 4 << 10
	MaxQRBytes    = 1 << 20
)

// HeaderQRSeq numbers the slice's QR codes (package slice), so that a
// poller can tell a new code from the one it has.
const HeaderQRSeq = "X-Slicehub-QR-Seq"

// DefaultTimeout bounds one call when the context has no earlier deadline.
const DefaultTimeout = 5 * time.Second

// Doer sends a request: an *http.Client, or an adapter over another pool.
type Doer interface {
	Do(*http.Request) (*http.Response, error)
}

// Client asks slices. The zero value uses an http.Client of its own.
type Client struct {
	HTTP Doer
	// Timeout bounds one call (DefaultTimeout).
	Timeout time.Duration
}

// Slice is whom to ask and as whom.
type Slice struct {
	ID    int64
	Addr  string // ip:port
	Token string // the slice's gateway token
	// UserID, when not 0, goes as X-Slicehub-User-Id: the slice's own user
	// asks, through the gateway. 0: the platform asks, acting for no user.
	UserID int64
}

// Answer is a slice's answer, its body read whole.
type Answer struct {
	Status int
	Header http.Header
	Body   []byte
}

var defaultHTTP = &http.Client{Timeout: DefaultTimeout}

// Do sends method path to s and reads at most limit bytes of the answer.
// A slice that does not answer is KindBadGateway "slice_unreachable" (the
// transport's error is the cause); an answer over limit, or cut short, is
// KindBadGateway "slice_answer".
func (c *Client) Do(ctx context.Context, s Slice, method, path string, limit int64) (Answer, error) {
	const op = "sliceclient.do"
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, "http://"+s.Addr+path, nil)
	if err != nil {
		return Answer{}, slicehub.Wrap(op, slicehub.KindInternal, err)
	}
	req.Header.Set(slicehub.HeaderGatewayToken, s.Token)
	if s.UserID != 0 {
		req.Header.Set(slicehub.HeaderUserID, strconv.FormatInt(s.UserID, 10))
	}
	hc := c.HTTP
	if hc == nil {
		hc = defaultHTTP
	}
	resp, err := hc.Do(req)
	if err != nil {
		return Answer{}, &slicehub.Error{Op: op, Kind: slicehub.KindBadGateway, Code: "slice_unreachable",
			Message: "the slice did not answer", Err: err}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil || int64(len(body)) > limit {
		return Answer{}, &slicehub.Error{Op: op, Kind: slicehub.KindBadGateway, Code: "slice_answer",
			Message: "the slice's answer was cut short or too large", Err: err}
	}
	return Answer{Status: resp.StatusCode, Header: resp.Header, Body: body}, nil
}

// WhatsAppState is the slice's WhatsApp state (slicehub.WAConnected and
// the others). Anything but a 200 with a state is KindBadGateway
// "slice_answer".
func (c *Client) WhatsAppState(ctx context.Context, s Slice) (string, error) {
	st, err := c.WhatsAppStatus(ctx, s)
	return st.State, err
}

// Status is what a slice says of its WhatsApp session.
type Status struct {
	State string `json:"state"`
	// Importing is true while the slice imports the linked account's
	// history (admission control holds an import permit meanwhile).
	Importing bool `json:"importing"`
}

// WhatsAppStatus is the slice's WhatsApp state and whether its history
// import runs; errors as WhatsAppState.
func (c *Client) WhatsAppStatus(ctx context.Context, s Slice) (Status, error) {
	a, err := c.Do(ctx, s, http.MethodGet, PathState, MaxStateBytes)
	if err != nil {
		return Status{}, err
	}
	var v Status
	if a.Status != http.StatusOK || json.Unmarshal(a.Body, &v) != nil || v.State == "" {
		return Status{}, slicehub.Errorf("sliceclient.whatsapp_state", slicehub.KindBadGateway, "slice_answer",
			"the slice answered %d", a.Status)
	}
	return v, nil
}

// QR is a QR code the slice shows.
type QR struct {
	PNG []byte
	// Seq numbers the code (HeaderQRSeq); 0 when the slice does not say.
	Seq int64
}

// QR is the slice's current QR code; KindNotFound "no_qr" when it shows
// none (or answers anything but a PNG).
func (c *Client) QR(ctx context.Context, s Slice) (QR, error) {
	a, err := c.Do(ctx, s, http.MethodGet, PathQR, MaxQRBytes)
	if err != nil {
		return QR{}, err
	}
	if a.Status != http.StatusOK || len(a.Body) == 0 || !strings.HasPrefix(a.Header.Get("Content-Type"), "image/png") {
		return QR{}, slicehub.Errorf("sliceclient.qr", slicehub.KindNotFound, "no_qr", "the slice shows no QR code now")
	}
	seq, err := strconv.ParseInt(a.Header.Get(HeaderQRSeq), 10, 64)
	if err != nil || seq < 0 {
		seq = 0
	}
	return QR{PNG: a.Body, Seq: seq}, nil
}
