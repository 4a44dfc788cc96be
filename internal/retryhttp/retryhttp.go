// Package retryhttp builds the one HTTP client that sits under both the Nomad
// and the Consul API clients: pooled connections, bounded retries with
// exponential backoff on connection errors and 5xx, and no retry once the
// caller's context is done.
package retryhttp

import (
	"log/slog"
	"net/http"
	"time"

	"github.com/hashicorp/go-cleanhttp"
	"github.com/hashicorp/go-retryablehttp"
)

// Options bound the retries. Zero values take the defaults.
type Options struct {
	RetryMax     int           // default 4
	RetryWaitMin time.Duration // default 100ms
	RetryWaitMax time.Duration // default 2s
}

// New returns an *http.Client whose transport retries through
// go-retryablehttp. It sets no overall timeout, because Consul and Nomad
// blocking queries hold a request open for minutes; callers bound each call
// with a context deadline instead.
func New(log *slog.Logger, o Options) *http.Client {
	rc := retryablehttp.NewClient()
	rc.HTTPClient = cleanhttp.DefaultPooledClient()
	rc.RetryMax = 4
	rc.RetryWaitMin = 100 * time.Millisecond
	rc.RetryWaitMax = 2 * time.Second
	if o.RetryMax > 0 {
		rc.RetryMax = o.RetryMax
	}
	if o.RetryWaitMin > 0 {
		rc.RetryWaitMin = o.RetryWaitMin
	}
	if o.RetryWaitMax > 0 {
		rc.RetryWaitMax = o.RetryWaitMax
	}
	if log != nil {
		rc.Logger = quietLogger{log}
	} else {
		rc.Logger = nil
	}
	// The API clients read error bodies themselves; hand them the last
	// response instead of retryablehttp's generic "giving up" error.
	rc.ErrorHandler = retryablehttp.PassthroughErrorHandler
	return rc.StandardClient()
}

// quietLogger keeps retry attempts at debug level: every request would
// otherwise log a line, and an agent restart is an expected event.
type quietLogger struct{ l *slog.Logger }

func (q quietLogger) Error(msg string, kv ...any) { q.l.Warn(msg, kv...) }
func (q quietLogger) Info(msg string, kv ...any)  { q.l.Debug(msg, kv...) }
func (q quietLogger) Debug(msg string, kv ...any) { q.l.Debug(msg, kv...) }
func (q quietLogger) Warn(msg string, kv ...any)  { q.l.Debug(msg, kv...) }
