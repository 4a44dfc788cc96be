package ops

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"time"
)

// Exit codes of slicectl. Scripts branch on them, so they are part of the
// interface: 3 lets a cron job tell "the platform is unwell / no such
// thing" from "slicectl or the request went wrong".
const (
	ExitOK        = 0
	ExitError     = 1 // the operation failed (refused, conflict, unreachable)
	ExitUsage     = 2 // bad flags or arguments, or input the API refused as invalid
	ExitUnhealthy = 3 // not found, or a check (doctor, status, --wait) failed
)

// exitError carries an exit code with its message.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func withCode(code int, err error) error {
	if err == nil {
		return nil
	}
	return &exitError{code: code, err: err}
}

func usageErrorf(format string, args ...any) error {
	return withCode(ExitUsage, fmt.Errorf(format, args...))
}

// ExitCode maps an error returned by the command tree to slicectl's exit
// code. Cobra's own argument and flag errors are usage errors.
func ExitCode(err error) int {
	if err == nil {
		return ExitOK
	}
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	var ae *APIError
	if errors.As(err, &ae) {
		return ae.exitCode()
	}
	msg := err.Error()
	for _, p := range []string{"unknown command", "unknown flag", "unknown shorthand flag", "accepts ", "requires ",
		"invalid argument", "flag needs an argument", "required flag"} {
		if strings.HasPrefix(msg, p) {
			return ExitUsage
		}
	}
	return ExitError
}

// Execute runs slicectl with args and returns its exit code, having
// printed any error on stderr.
func Execute(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := NewRoot(stdout, stderr)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err != nil {
		fmt.Fprintln(stderr, "slicectl:", err)
	}
	return ExitCode(err)
}

// APIError is an error answer of the admin API: {"error","code"}.
type APIError struct {
	Status  int
	Code    string `json:"code"`
	Message string `json:"error"`
}

func (e *APIError) Error() string {
	if e.Message == "" {
		return fmt.Sprintf("gateway answered %d %s", e.Status, http.StatusText(e.Status))
	}
	return fmt.Sprintf("%s (%s, %d)", e.Message, e.Code, e.Status)
}

func (e *APIError) exitCode() int {
	switch e.Status {
	case http.StatusNotFound:
		return ExitUnhealthy
	case http.StatusBadRequest:
		return ExitUsage
	}
	return ExitError
}

// permanentUnavailable are the 503 codes of the admin API that describe
// the gateway rather than a moment: a gateway without them will not gain
// them by being asked again.
var permanentUnavailable = map[string]bool{
	"drain_unsupported":   true,
	"logs_unavailable":    true,
	"backups_unavailable": true,
}

// transient reports whether a failed call of do may succeed if made
// again: the gateway restarting or a replica going away (connection
// refused, reset or dropped before the answer, a timeout), or the gateway
// or a proxy in front of it answering 502, 503 or 504 while it or Nomad or
// Consul behind it is briefly down. Any other answer (4xx, 500) is the
// gateway's word and stays an error. Whether a call may be repeated at all
// is the caller's to know; the caller also checks its own context first,
// since an operator's ^C is no blip.
func transient(err error) bool {
	var ae *APIError
	if errors.As(err, &ae) {
		switch ae.Status {
		case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
			return !permanentUnavailable[ae.Code]
		}
		return false
	}
	var ne net.Error
	return errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}

// client calls the gateway's admin API with an admin key.
type client struct {
	base string
	key  string
	http *http.Client
}

func newClient(base, key string) (*client, error) {
	if key == "" {
		return nil, usageErrorf("no admin key: set --key or SLICEHUB_ADMIN_KEY (make one with `slicectl users create-admin`)")
	}
	if base == "" {
		return nil, usageErrorf("no gateway: set --gateway or SLICEHUB_GATEWAY_URL")
	}
	return &client{base: strings.TrimRight(base, "/"), key: key, http: &http.Client{Timeout: 30 * time.Second}}, nil
}

// stream sends a request whose answer is a stream (logs, a dump) or whose
// body is one (a restore), without the 30-second bound of do: ctx bounds
// it, and a follow runs until the operator stops it. contentLength < 0 is
// unknown. An error answer comes back as *APIError; otherwise the caller
// reads and closes the body.
func (c *client) stream(ctx context.Context, method, path string, body io.Reader, contentLength int64) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return nil, withCode(ExitUsage, fmt.Errorf("gateway URL %q: %w", c.base, err))
	}
	req.Header.Set("Authorization", "Bearer "+c.key)
	if body != nil {
		req.Header.Set("Content-Type", "application/octet-stream")
		req.ContentLength = contentLength
	}
	// No client timeout: a follow or a big dump lasts as long as it lasts.
	hc := &http.Client{Transport: c.http.Transport}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("gateway %s unreachable: %w", c.base, err)
	}
	if resp.StatusCode >= 300 {
		defer resp.Body.Close()
		ae := &APIError{Status: resp.StatusCode}
		raw, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		_ = json.Unmarshal(raw, ae)
		return nil, ae
	}
	return resp, nil
}

// do sends in (if any) as JSON and decodes the answer into out (if any).
func (c *client) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return withCode(ExitUsage, fmt.Errorf("gateway URL %q: %w", c.base, err))
	}
	if c.key != "" {
		req.Header.Set("Authorization", "Bearer "+c.key)
	}
	req.Header.Set("Accept", "application/json")
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("gateway %s unreachable: %w", c.base, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("%s %s: reading the answer: %w", method, path, err)
	}
	if resp.StatusCode >= 300 {
		ae := &APIError{Status: resp.StatusCode}
		_ = json.Unmarshal(raw, ae) // a non-JSON error keeps the status text
		return ae
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			return fmt.Errorf("%s %s: the answer is not the expected JSON: %w", method, path, err)
		}
	}
	return nil
}
