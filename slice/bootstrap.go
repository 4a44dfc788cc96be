package slice

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/slicehub/slicehub"
)

// Backoff is a capped exponential retry policy with jitter. Hundreds of
// slices start together after a host reboot; the jitter keeps them from
// hitting the gateway and PostgreSQL in lockstep.
type Backoff struct {
	Min, Max time.Duration
}

// DefaultBackoff starts at a quarter second and settles at 15 s: quick when
// the gateway is a moment late, gentle when it is down.
var DefaultBackoff = Backoff{Min: 250 * time.Millisecond, Max: 15 * time.Second}

// delay returns the wait before retry number attempt (0-based): the capped
// exponential value, scaled by a random factor in [0.5, 1].
func (b Backoff) delay(attempt int) time.Duration {
	if b.Min <= 0 {
		b = DefaultBackoff
	}
	d := b.Min
	for i := 0; i < attempt && d < b.Max; i++ {
		d *= 2
	}
	d = min(d, b.Max)
	return d/2 + rand.N(d/2+1)
}

// wait blocks for the delay of attempt or until ctx ends.
func (b Backoff) wait(ctx context.Context, attempt int) error {
	t := time.NewTimer(b.delay(attempt))
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// cachedCredentials is the file kept in the allocation's secrets directory.
// It names the allocation and slice it belongs to, so that a file that
// somehow outlived its allocation is not trusted.
type cachedCredentials struct {
	SliceID     string                    `json:"slice_id"`
	AllocID     string                    `json:"alloc_id"`
	Credentials slicehub.SliceCredentials `json:"credentials"`
}

// bootstrapper fetches the slice's credentials from the gateway.
type bootstrapper struct {
	url       string // BootstrapURL + BootstrapPath
	sliceID   string
	allocID   string
	cachePath string
	identity  string // file of the workload identity; "" for none
	client    *http.Client
	backoff   Backoff
	log       *slog.Logger
}

func newBootstrapper(c *Config, log *slog.Logger) *bootstrapper {
	client := c.HTTPClient
	if client == nil {
		client = &http.Client{Timeout: 10 * time.Second}
	}
	return &bootstrapper{
		url:       strings.TrimRight(c.BootstrapURL, "/") + slicehub.BootstrapPath,
		sliceID:   c.SliceID,
		allocID:   c.AllocID,
		cachePath: c.CredentialsFile,
		identity:  c.IdentityFile,
		client:    client,
		backoff:   c.Backoff,
		log:       log.With("component", "bootstrap"),
	}
}

// retryable reports whether the gateway asked us to come back later:
// 409 (the claim is being processed or the slice row is not ready), 425 (too
// early: the scheduler has not finished provisioning), 429, and any 5xx.
// Every other status is a refusal that a human must look at, but retrying
// still makes sense (the gateway may be fixed), so it only changes how loudly
// we log.
func retryable(status int) bool {
	switch status {
	case http.StatusConflict, http.StatusTooEarly, http.StatusTooManyRequests, http.StatusServiceUnavailable:
		return true
	}
	return status >= 500
}

// Credentials returns the cached credentials of this allocation, or claims
// them from the gateway, retrying until it answers 200 or ctx ends.
func (b *bootstrapper) Credentials(ctx context.Context) (slicehub.SliceCredentials, error) {
	const op = "slice.bootstrap"
	if creds, ok := b.readCache(); ok {
		b.log.Info("reusing the credentials cached for this allocation")
		return creds, nil
	}
	b.log.Info("claiming credentials", "url", redactURL(b.url))
	for attempt := 0; ; attempt++ {
		creds, status, err := b.claim(ctx)
		if err == nil {
			if err := b.writeCache(creds); err != nil {
				// Without the cache a restart of this task would claim again
				// and be refused with 409; say so loudly, but run.
				b.log.Error("could not cache the credentials; a task restart will not get them again", "err", err)
			}
			b.log.Info("credentials claimed", "attempts", attempt+1)
			return creds, nil
		}
		if ctx.Err() != nil {
			return slicehub.SliceCredentials{}, fmt.Errorf("%s: %w", op, ctx.Err())
		}
		switch {
		case status == 0:
			b.log.Warn("bootstrap request failed; retrying", "attempt", attempt+1, "err", err)
		case retryable(status):
			b.log.Info("gateway not ready to hand out credentials; retrying", "attempt", attempt+1, "status", status)
		default:
			b.log.Error("gateway refused the bootstrap; retrying", "attempt", attempt+1, "status", status, "err", err)
		}
		if err := b.backoff.wait(ctx, attempt); err != nil {
			return slicehub.SliceCredentials{}, fmt.Errorf("%s: %w", op, err)
		}
	}
}

// claim makes one bootstrap request. status is 0 when no HTTP answer came.
// Errors never contain the response body: a misbehaving gateway could echo
// secrets into it.
func (b *bootstrapper) claim(ctx context.Context) (slicehub.SliceCredentials, int, error) {
	var creds slicehub.SliceCredentials
	body, _ := json.Marshal(slicehub.BootstrapRequest{SliceID: b.sliceID, AllocID: b.allocID})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, b.url, bytes.NewReader(body))
	if err != nil {
		return creds, 0, errors.New("invalid bootstrap url")
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	if jwt := b.readIdentity(); jwt != "" {
		req.Header.Set("Authorization", "Bearer "+jwt)
	}
	resp, err := b.client.Do(req)
	if err != nil {
		return creds, 0, redactErr(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		return creds, resp.StatusCode, fmt.Errorf("status %d", resp.StatusCode)
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&creds); err != nil {
		return creds, resp.StatusCode, errors.New("the bootstrap answer is not valid JSON")
	}
	if creds.DatabaseURL == "" || creds.GatewayToken == "" {
		return slicehub.SliceCredentials{}, resp.StatusCode, errors.New("the bootstrap answer lacks database_url or gateway_token")
	}
	return creds, resp.StatusCode, nil
}

// readIdentity returns the workload identity Nomad wrote for this task, or
// "" when there is none (a Nomad without identities, a manual run): the
// gateway then decides whether the allocation id alone will do.
func (b *bootstrapper) readIdentity() string {
	if b.identity == "" {
		return ""
	}
	data, err := os.ReadFile(b.identity)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			b.log.Warn("cannot read the workload identity", "err", err)
		}
		return ""
	}
	return strings.TrimSpace(string(data))
}

func (b *bootstrapper) readCache() (slicehub.SliceCredentials, bool) {
	if b.cachePath == "" {
		return slicehub.SliceCredentials{}, false
	}
	data, err := os.ReadFile(b.cachePath)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			b.log.Warn("cannot read the credentials cache; claiming again", "err", err)
		}
		return slicehub.SliceCredentials{}, false
	}
	var c cachedCredentials
	if err := json.Unmarshal(data, &c); err != nil ||
		c.Credentials.DatabaseURL == "" || c.Credentials.GatewayToken == "" {
		b.log.Warn("the credentials cache is damaged; claiming again")
		return slicehub.SliceCredentials{}, false
	}
	if c.SliceID != b.sliceID || c.AllocID != b.allocID {
		b.log.Warn("the credentials cache belongs to another slice or allocation; claiming again")
		return slicehub.SliceCredentials{}, false
	}
	return c.Credentials, true
}

// writeCache writes the file atomically (temporary file, fsync, rename), so
// that a crash in the middle never leaves half a secret behind, and with mode
// 0600 from the first byte.
func (b *bootstrapper) writeCache(creds slicehub.SliceCredentials) error {
	if b.cachePath == "" {
		return nil
	}
	data, err := json.Marshal(cachedCredentials{SliceID: b.sliceID, AllocID: b.allocID, Credentials: creds})
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(b.cachePath), ".credentials-*.json")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // a no-op after the rename
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, b.cachePath)
}

// redactURL drops the password of a URL for logging.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(invalid url)"
	}
	return u.Redacted()
}

// redactErr keeps a transport error's meaning but replaces the URL it quotes
// by its redacted form.
func redactErr(err error) error {
	var uerr *url.Error
	if errors.As(err, &uerr) {
		return fmt.Errorf("%s %s: %w", uerr.Op, redactURL(uerr.URL), uerr.Err)
	}
	return err
}
