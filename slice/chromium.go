package slice

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"

	"github.com/slicehub/slicehub"
)

// ChromiumConfig configures the browser the slice supervises.
type ChromiumConfig struct {
	// Disabled runs no browser (SLICE_CHROMIUM=off): the WhatsApp state
	// stays "starting". Chromium also does not run when the slice has no
	// profile directory.
	Disabled bool
	// Path is the Chromium binary (SLICE_CHROMIUM_PATH). Default: Debian's
	// /usr/lib/chromium/chromium, called directly rather than through the
	// /usr/bin/chromium wrapper, which adds desktop flags (extensions, GPU
	// rasterization) that a headless slice does not want; then "chromium"
	// on PATH.
	Path string
	// NoSandbox runs Chromium without its sandbox (SLICE_CHROMIUM_SANDBOX=off).
	// Only for raw_exec (a root process, where Chromium refuses the sandbox)
	// and for tests on the host. In the container the sandbox works under
	// the seccomp profile of jobs/README.md.
	NoSandbox bool
	// ExtraFlags are appended to the slice's own (SLICE_CHROMIUM_FLAGS,
	// space-separated "--name" or "--name=value"); a flag given here wins.
	ExtraFlags []string
	// MaxRestarts is how many failed launches or crashes in a row the
	// supervisor absorbs before it reports "failed" and stops trying
	// (SLICE_CHROMIUM_MAX_RESTARTS); default 5. A browser that ran for
	// StableAfter resets the count.
	MaxRestarts int
	// StableAfter; default 2 minutes.
	StableAfter time.Duration
	// Backoff between restarts; zero means 500 ms doubling to 30 s.
	Backoff Backoff
	// CloseTimeout bounds the graceful close on shutdown (Chromium then
	// flushes Local Storage and the cookie store to the profile); default
	// 8 s, which with the final snapshot stays inside the job's
	// kill_timeout.
	CloseTimeout time.Duration
	// LaunchTimeout bounds the start of the browser; default 60 s.
	LaunchTimeout time.Duration
	// HostResolverRules is passed as --host-resolver-rules. The built-in
	// stand-in uses it to give its page a fixed origin whatever port it
	// listens on: the origin is where the browser keeps the login.
	HostResolverRules string
}

func (c ChromiumConfig) withDefaults() ChromiumConfig {
	if c.Path == "" {
		c.Path = defaultChromiumPath()
	}
	if c.MaxRestarts <= 0 {
		c.MaxRestarts = 5
	}
	if c.StableAfter <= 0 {
		c.StableAfter = 2 * time.Minute
	}
	if c.Backoff.Min <= 0 {
		c.Backoff = Backoff{Min: 500 * time.Millisecond, Max: 30 * time.Second}
	}
	if c.CloseTimeout <= 0 {
		c.CloseTimeout = 8 * time.Second
	}
	if c.LaunchTimeout <= 0 {
		c.LaunchTimeout = time.Minute
	}
	return c
}

func defaultChromiumPath() string {
	const debian = "/usr/lib/chromium/chromium"
	if _, err := os.Stat(debian); err == nil {
		return debian
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return "chromium"
}

// chromiumFlags are the slice's own flags, chosen for one headless page that
// idles for days in a few hundred megabytes. Measured on Chromium 156 with
// the stand-in page (see jobs/README.md), the ones that matter for memory
// are the first group; the rest turn off background work that a slice never
// needs and that would otherwise wake up, download and write to the profile.
var chromiumFlags = [][2]string{
	// One process fewer each: no GPU process (compositing runs in the
	// browser process, in software) and a single renderer.
	{"disable-gpu", ""},
	{"in-process-gpu", ""},
	{"disable-software-rasterizer", ""},
	{"renderer-process-limit", "1"},
	{"disable-features", "Translate,MediaRouter,OptimizationHints,AudioServiceOutOfProcess,BackForwardCache,SpareRendererForSitePerProcess,AutofillServerCommunication,CertificateTransparencyComponentUpdater"},
	// Bounded disk cache: WhatsApp's static files only, on the host volume.
	{"disk-cache-size", "33554432"},

	{"disable-background-networking", ""},
	{"disable-component-update", ""},
	{"disable-default-apps", ""},
	{"disable-extensions", ""},
	{"disable-sync", ""},
	{"disable-breakpad", ""},
	{"disable-client-side-phishing-detection", ""},
	{"disable-domain-reliability", ""},
	{"metrics-recording-only", ""},
	{"no-pings", ""},
	{"no-first-run", ""},
	{"no-default-browser-check", ""},
	// Cookies encrypted with the fixed "basic" key, not a desktop keyring
	// (there is none): a snapshot of them can be restored on any node.
	{"password-store", "basic"},
	{"headless", ""},
	{"hide-scrollbars", ""},
	{"mute-audio", ""},
	// WhatsApp Web lays out for a desktop; the QR code needs the room.
	{"window-size", "1280,800"},
}

// errSandbox is a launch failure that a restart cannot fix.
var errSandbox = errors.New("Chromium found no usable sandbox: run the container under the seccomp profile of jobs/README.md (job variable seccomp_profile), or set SLICE_CHROMIUM_SANDBOX=off")

// Supervisor runs Chromium on the slice's profile, keeps the WhatsApp page
// open in it, and drives the StateHolder and the QRHolder from what the page
// shows. A browser that dies is restarted with backoff; after
// ChromiumConfig.MaxRestarts failures in a row the state becomes "failed"
// and the supervisor waits for the slice to stop.
type Supervisor struct {
	cfg     ChromiumConfig
	wa      WhatsAppConfig
	profile Profile
	state   *StateHolder
	qr      *QRHolder
	log     *slog.Logger
	detect  string

	pid      atomic.Int64
	launches atomic.Int64

	hooks PageHooks // nil: nothing is injected into the page

	recycle chan struct{} // Recycle's requests (governor.go)
}

// errRecycle ends a browser session that Recycle asked to restart.
var errRecycle = errors.New("recycled on request")

// Recycle closes the running browser gracefully and starts a new one on
// the same profile at once, as a crash recovery does but without counting
// a failure: the memory governor's restart (governor.go). It returns at
// once; false when no browser runs or a recycle is already pending.
func (s *Supervisor) Recycle() bool {
	if s.pid.Load() == 0 {
		return false
	}
	select {
	case s.recycle <- struct{}{}:
		return true
	default:
		return false
	}
}

// PageHooks is what the WhatsApp adapter needs from the Supervisor: a
// chance to prepare every new browser's tab before the page opens, word
// that the browser is gone, and the last word on the state the page's
// markers show (the adapter turns "connected" into "degraded" when it
// cannot work). *Adapter implements it.
type PageHooks interface {
	Attach(bctx context.Context) error
	Detach()
	Adjust(state string) string
}

// SetHooks installs hooks; call it before Run.
func (s *Supervisor) SetHooks(h PageHooks) { s.hooks = h }

// NewSupervisor returns a supervisor; Run starts it.
func NewSupervisor(cfg ChromiumConfig, wa WhatsAppConfig, profile Profile, state *StateHolder, qr *QRHolder, log *slog.Logger) *Supervisor {
	wa = wa.withDefaults()
	return &Supervisor{
		cfg: cfg.withDefaults(), wa: wa, profile: profile, state: state, qr: qr,
		log:     log.With("component", "chromium"),
		detect:  wa.detectScript(),
		recycle: make(chan struct{}, 1),
	}
}

// BrowserPID is the pid of the running browser process, 0 when none runs.
func (s *Supervisor) BrowserPID() int { return int(s.pid.Load()) }

// Launches counts the browsers started so far.
func (s *Supervisor) Launches() int { return int(s.launches.Load()) }

// Run supervises Chromium until ctx ends, then closes it gracefully (within
// CloseTimeout) and returns. It returns an error only for a failure that
// will not go away by itself (no sandbox, restart cap reached), after
// setting the state to "failed".
func (s *Supervisor) Run(ctx context.Context) error {
	failures := 0
	for {
		if ctx.Err() != nil {
			return nil
		}
		s.prepareProfile()
		_ = s.state.Set(slicehub.WAStarting)
		started := time.Now()
		err := s.session(ctx)
		s.pid.Store(0)
		s.qr.Clear()
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, errRecycle) {
			continue
		}
		if errors.Is(err, errSandbox) {
			s.log.Error("Chromium cannot start; giving up", "err", err)
			_ = s.state.Set(slicehub.WAFailed)
			return err
		}
		if time.Since(started) >= s.cfg.StableAfter {
			failures = 0
		}
		failures++
		if failures > s.cfg.MaxRestarts {
			s.log.Error("Chromium keeps failing; giving up", "failures", failures, "err", err)
			_ = s.state.Set(slicehub.WAFailed)
			return fmt.Errorf("slice.chromium: %d failures in a row: %w", failures, err)
		}
		// Until the next browser shows the page, nobody can say: not
		// "connected" any more.
		_ = s.state.Set(slicehub.WAStarting)
		delay := s.cfg.Backoff.delay(failures - 1)
		s.log.Warn("Chromium stopped; restarting", "err", err, "failures", failures, "restart_in", delay.Round(time.Millisecond).String())
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// prepareProfile makes the profile usable after whatever happened to the
// previous browser: leftover processes killed, stale locks removed.
func (s *Supervisor) prepareProfile() {
	if err := os.MkdirAll(s.profile.Dir, 0o700); err != nil {
		s.log.Error("cannot create the profile directory", "dir", s.profile.Dir, "err", err)
	}
	if n := s.profile.killLeftovers(); n > 0 {
		s.log.Warn("killed leftover Chromium processes of this profile", "count", n)
	}
	removed, err := s.profile.removeLocks()
	if err != nil {
		s.log.Warn("cannot remove stale Chromium locks", "err", err)
	}
	if len(removed) > 0 {
		s.log.Info("removed stale Chromium locks", "files", removed)
	}
}

func (s *Supervisor) allocatorOptions(out *tailBuffer) []chromedp.ExecAllocatorOption {
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(s.cfg.Path),
		chromedp.UserDataDir(s.profile.Dir),
		chromedp.CombinedOutput(out),
	}
	for _, f := range chromiumFlags {
		opts = append(opts, flagOption(f[0], f[1]))
	}
	if s.cfg.NoSandbox {
		opts = append(opts, chromedp.Flag("no-sandbox", true))
	} else {
		// Said explicitly: as root, chromedp would add --no-sandbox by
		// itself.
		opts = append(opts, chromedp.Flag("no-sandbox", false))
	}
	if s.cfg.HostResolverRules != "" {
		opts = append(opts, chromedp.Flag("host-resolver-rules", s.cfg.HostResolverRules))
	}
	for _, f := range s.cfg.ExtraFlags {
		name, value, _ := strings.Cut(strings.TrimLeft(f, "-"), "=")
		opts = append(opts, flagOption(name, value))
	}
	return opts
}

func flagOption(name, value string) chromedp.ExecAllocatorOption {
	if value == "" {
		return chromedp.Flag(name, true)
	}
	return chromedp.Flag(name, value)
}

// session launches one browser and watches the page until the browser dies
// (the error says why) or ctx ends (the browser is closed gracefully and
// session returns nil).
func (s *Supervisor) session(ctx context.Context) error {
	out := newTailBuffer(16 << 10)
	// The browser's contexts do not derive from ctx: cancelling ctx would
	// kill Chromium at once, and on shutdown it must be closed gracefully
	// instead.
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), s.allocatorOptions(out)...)
	defer cancelAlloc()
	dbg := func(format string, args ...any) { s.log.Debug(fmt.Sprintf(format, args...)) }
	bctx, cancelBrowser := chromedp.NewContext(actx, chromedp.WithLogf(dbg), chromedp.WithErrorf(dbg))
	defer cancelBrowser()

	t0 := time.Now()
	ua, err := s.launch(ctx, bctx, cancelBrowser)
	if err != nil {
		for _, msg := range []string{"No usable sandbox", "Running as root without --no-sandbox"} {
			if strings.Contains(err.Error(), msg) || strings.Contains(out.String(), msg) {
				return fmt.Errorf("%w (%s)", errSandbox, msg)
			}
		}
		return fmt.Errorf("launch: %w (output: %s)", err, out.tail(600))
	}
	proc := chromedp.FromContext(bctx).Browser.Process()
	s.pid.Store(int64(proc.Pid))
	n := s.launches.Add(1)
	s.log.Info("Chromium started", "pid", proc.Pid, "launch", n, "sandbox", !s.cfg.NoSandbox,
		"took_ms", time.Since(t0).Milliseconds(), "user_agent", ua)
	if s.hooks != nil {
		if err := s.hooks.Attach(bctx); err != nil {
			// The page still opens and its state is still reported; the
			// adapter's absence shows as "degraded" once logged in.
			s.log.Error("cannot install the WhatsApp adapter in the page", "err", err)
		}
		defer s.hooks.Detach()
	}

	err = s.watch(ctx, bctx)
	if ctx.Err() != nil {
		s.close(bctx, proc.Pid)
		return nil
	}
	if errors.Is(err, errRecycle) {
		s.close(bctx, proc.Pid)
		s.log.Info("Chromium closed for a restart on the same profile", "pid", proc.Pid)
		return err
	}
	if err == nil {
		err = errors.New("the browser connection was lost")
	}
	if tail := out.tail(600); tail != "" {
		s.log.Warn("Chromium's last output", "output", tail)
	}
	return err
}

// launch starts the browser and sets the user agent. The first action run
// on bctx starts the browser and binds it to bctx, which must therefore
// carry no deadline; the launch is bounded here instead.
func (s *Supervisor) launch(ctx, bctx context.Context, cancelBrowser context.CancelFunc) (string, error) {
	type result struct {
		ua  string
		err error
	}
	done := make(chan result, 1)
	go func() {
		ua, err := chromedp.Run(bctx, func(ctx context.Context, t *chromedp.Target) (string, error) {
			v, err := cdp.Call(ctx, chromedp.FromContext(ctx).Browser, browser.GetVersion, cdp.Empty{})
			if err != nil {
				return "", err
			}
			ua := s.wa.UserAgent
			if ua == "" {
				ua = strings.Replace(v.UserAgent, "HeadlessChrome/", "Chrome/", 1)
			}
			_, err = cdp.Call(ctx, t, emulation.SetUserAgentOverride, emulation.SetUserAgentOverrideParams{UserAgent: ua})
			return ua, err
		})
		done <- result{ua, err}
	}()
	timer := time.NewTimer(s.cfg.LaunchTimeout)
	defer timer.Stop()
	select {
	case r := <-done:
		return r.ua, r.err
	case <-timer.C:
		cancelBrowser()
		<-done
		return "", fmt.Errorf("no answer within %s", s.cfg.LaunchTimeout)
	case <-ctx.Done():
		cancelBrowser()
		<-done
		return "", ctx.Err()
	}
}

// Poll intervals: quick while a QR code may change or a login is under way,
// slower once connected, where only a lost connection is news.
const (
	pollWaiting   = 500 * time.Millisecond
	pollConnected = 2 * time.Second
	// A page that answers nothing for this many polls in a row is hung (or
	// its renderer crashed): restart the browser.
	maxPollErrors = 10
	// A page that shows none of the known markers for this long is reloaded
	// (an update screen that never ends, an error page).
	unknownPageReload = 90 * time.Second
	// Screenshots of a QR element are costly; not more often than this.
	screenshotEvery = 2 * time.Second
)

// watch opens the WhatsApp page and reads its state until the browser dies
// or ctx ends.
func (s *Supervisor) watch(ctx, bctx context.Context) error {
	var (
		opened       bool
		openFailures int
		nextOpen     time.Time
		pollErrors   int
		lastKnown    = time.Now()
		lastShot     time.Time
		interval     = pollWaiting
	)
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-bctx.Done():
			return errors.New("the browser exited or its connection was lost")
		case <-s.recycle:
			return errRecycle
		case <-timer.C:
		}
		now := time.Now()
		switch {
		case !opened && now.Before(nextOpen):
		case !opened:
			if err := s.open(bctx); err != nil {
				if bctx.Err() != nil {
					return fmt.Errorf("opening %s: %w", s.wa.URL, err)
				}
				openFailures++
				d := Backoff{Min: 2 * time.Second, Max: time.Minute}.delay(openFailures - 1)
				nextOpen = now.Add(d)
				// The browser is fine; WhatsApp is out of reach.
				_ = s.state.Set(slicehub.WADisconnected)
				s.log.Warn("cannot open the WhatsApp page; retrying", "url", s.wa.URL, "err", err,
					"failures", openFailures, "retry_in", d.Round(time.Millisecond).String())
				break
			}
			opened, openFailures, lastKnown = true, 0, now
		default:
			st, err := s.look(bctx)
			if err != nil {
				if bctx.Err() != nil {
					return fmt.Errorf("reading the page: %w", err)
				}
				pollErrors++
				if pollErrors >= maxPollErrors {
					return fmt.Errorf("the page did not answer %d times in a row: %w", pollErrors, err)
				}
				break
			}
			pollErrors = 0
			if st.State == "" {
				if now.Sub(lastKnown) > unknownPageReload {
					s.log.Warn("the page shows none of the configured markers; reloading it", "for", now.Sub(lastKnown).Round(time.Second).String())
					opened = false
				}
				break
			}
			lastKnown = now
			s.apply(bctx, st, &lastShot)
		}
		interval = pollWaiting
		if st := s.state.State(); st == slicehub.WAConnected || st == slicehub.WADegraded {
			interval = pollConnected
		}
		timer.Reset(interval)
	}
}

// open navigates to the WhatsApp page.
func (s *Supervisor) open(bctx context.Context) error {
	ctx, cancel := context.WithTimeout(bctx, time.Minute)
	defer cancel()
	return chromedp.Do(ctx, chromedp.Navigate(s.wa.URL))
}

// look classifies the page.
func (s *Supervisor) look(bctx context.Context) (pageState, error) {
	ctx, cancel := context.WithTimeout(bctx, 5*time.Second)
	defer cancel()
	return chromedp.Run(ctx, chromedp.Evaluate[pageState](s.detect))
}

// apply moves the state and the QR code to what the page showed.
func (s *Supervisor) apply(bctx context.Context, st pageState, lastShot *time.Time) {
	prev := s.state.State()
	if st.State != slicehub.WAQR {
		s.qr.Clear()
	}
	if s.hooks != nil {
		st.State = s.hooks.Adjust(st.State)
	}
	if err := s.state.Set(st.State); err != nil {
		s.log.Error("page state", "err", err)
		return
	}
	if st.State != prev {
		s.log.Info("WhatsApp state", "from", prev, "to", st.State)
	}
	switch {
	case st.State != slicehub.WAQR:
	case st.Reloaded:
		s.log.Info("the QR codes expired; asked the page for new ones")
	case st.Payload != "":
		if err := s.qr.SetPayload(st.Payload); err != nil {
			s.log.Warn("cannot render the QR code", "err", err)
		}
	case time.Since(*lastShot) >= screenshotEvery:
		*lastShot = time.Now()
		ctx, cancel := context.WithTimeout(bctx, 5*time.Second)
		png, err := chromedp.Run(ctx, chromedp.Screenshot(chromedp.CSS(s.wa.QRSelector)))
		cancel()
		if err != nil {
			s.log.Warn("cannot take a screenshot of the QR code", "err", err)
			return
		}
		s.qr.SetScreenshot(png)
	}
}

// close asks the browser to quit, which makes it write its pending Local
// Storage and cookies to the profile, and waits for it within CloseTimeout;
// past that it is killed.
func (s *Supervisor) close(bctx context.Context, pid int) {
	t0 := time.Now()
	ctx, cancel := context.WithTimeout(bctx, s.cfg.CloseTimeout)
	defer cancel()
	err := chromedp.Cancel(ctx)
	took := time.Since(t0)
	killed := s.profile.killLeftovers()
	switch {
	case err != nil && !errors.Is(err, context.Canceled):
		s.log.Warn("Chromium did not close cleanly", "pid", pid, "err", err, "took_ms", took.Milliseconds(), "leftovers_killed", killed)
	case took >= s.cfg.CloseTimeout:
		s.log.Warn("Chromium did not close in time and was killed", "pid", pid, "took_ms", took.Milliseconds())
	default:
		s.log.Info("Chromium closed", "pid", pid, "took_ms", took.Milliseconds(), "leftovers_killed", killed)
	}
}

// tailBuffer keeps the last bytes of Chromium's output, for the logs when it
// fails. Chromium is chatty (D-Bus, fonts) and none of it matters unless it
// dies.
type tailBuffer struct {
	mu  sync.Mutex
	buf []byte
	max int
}

func newTailBuffer(max int) *tailBuffer { return &tailBuffer{max: max} }

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}

// tail returns at most n bytes from the end, cut at a line start.
func (t *tailBuffer) tail(n int) string {
	s := t.String()
	if len(s) > n {
		s = s[len(s)-n:]
		if i := strings.IndexByte(s, '\n'); i >= 0 {
			s = s[i+1:]
		}
	}
	return strings.TrimSpace(s)
}
