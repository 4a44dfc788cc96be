package slice

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/chromedp/cdproto/cdp"
	cdppage "github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/slicehub/slicehub"
)

// builtinAdapter is the page-side adapter shipped with the slice. A
// replacement file (SLICE_WA_ADAPTER) is how a WhatsApp Web change is met
// without a rebuild.
//
//go:embed adapter/adapter.js
var builtinAdapter string

// adapterBinding is the CDP binding the page-side adapter pushes through.
const adapterBinding = "__slicehubPush"

// adapterGrace is how long a connected page may take to show the modules
// the adapter needs before the slice calls WhatsApp degraded.
const adapterGrace = 45 * time.Second

// missingGrace is how long a connected page that reported missing modules
// has to find them (the adapter looks again every 5 s) before "degraded".
const missingGrace = 10 * time.Second

// LoadAdapterSource returns the page-side adapter: the file at path, or the
// built-in one when path is empty.
func LoadAdapterSource(path string) (string, error) {
	if path == "" {
		return builtinAdapter, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("slice.adapter: SLICE_WA_ADAPTER: %w", err)
	}
	return string(b), nil
}

// adapterEvent is one push from the page (adapter.js push()).
type adapterEvent struct {
	T       string     `json:"t"` // ready, missing, msg, ack, chat
	Version string     `json:"version"`
	Missing []string   `json:"missing"`
	Msg     *waMessage `json:"msg"`
	Chat    *waChat    `json:"chat"`
}

// AdapterStatus is GET /api/status/adapter: what the slice knows of the
// page-side adapter.
type AdapterStatus struct {
	Version  string   `json:"version"`
	Ready    bool     `json:"ready"`
	Missing  []string `json:"missing"`
	Degraded bool     `json:"degraded"`
	Events   int64    `json:"events"`
	Dropped  int64    `json:"dropped"`
	Loads    int64    `json:"page_loads"`
}

// Adapter is the Go side of the WhatsApp adapter: it installs the page-side
// script into every browser the Supervisor starts (Attach), hears its pushes
// (Events), calls its functions (call), and tells whether WhatsApp must be
// called degraded: logged in (the page's markers say connected) but
// without the data modules the adapter needs.
type Adapter struct {
	src string
	log *slog.Logger
	now func() time.Time

	mu          sync.Mutex
	events      chan adapterEvent
	bctx        context.Context // the WhatsApp tab; nil when no browser runs
	ready       bool
	version     string
	missing     []string
	connectedAt time.Time // when the page was first seen connected without ready; zero otherwise
	degraded    bool

	nEvents, nDropped, nLoads atomic.Int64
	// overflow: an event was dropped, so the next catch-up must run.
	overflow atomic.Bool
}

// NewAdapter returns an adapter injecting src (LoadAdapterSource).
func NewAdapter(src string, log *slog.Logger) *Adapter {
	return &Adapter{src: src, log: log.With("component", "adapter"), now: time.Now}
}

// eventBuffer is how many pushes wait for the Syncer (a long history import
// holds it); past that they are dropped and a catch-up reads the page
// again. Allocated at the first Attach: a slice without Chromium (the load
// test's farm runs hundreds in one process) pays nothing.
const eventBuffer = 4096

// Events delivers the page's pushes, in order (nil until the first Attach:
// a receive then waits).
func (a *Adapter) Events() <-chan adapterEvent {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.events
}

// Attach installs the binding and the script on a new browser's tab,
// before the WhatsApp page is opened. The Supervisor calls it once per
// browser.
func (a *Adapter) Attach(bctx context.Context) error {
	a.ensureEvents()
	ctx, cancel := context.WithTimeout(bctx, 10*time.Second)
	defer cancel()
	_, err := chromedp.Run(ctx, func(ctx context.Context, t *chromedp.Target) (chromedp.Void, error) {
		if _, err := cdp.Call(ctx, t, runtime.AddBinding, runtime.AddBindingParams{Name: adapterBinding}); err != nil {
			return chromedp.Void{}, fmt.Errorf("Runtime.addBinding: %w", err)
		}
		if _, err := cdp.Call(ctx, t, cdppage.AddScriptToEvaluateOnNewDocument, cdppage.AddScriptToEvaluateOnNewDocumentParams{Source: a.src}); err != nil {
			return chromedp.Void{}, fmt.Errorf("Page.addScriptToEvaluateOnNewDocument: %w", err)
		}
		return chromedp.Void{}, nil
	})
	if err != nil {
		return err
	}
	if err := chromedp.Listen(bctx, a.onCDPEvent); err != nil {
		return err
	}
	a.mu.Lock()
	a.bctx, a.ready, a.missing = bctx, false, nil
	a.mu.Unlock()
	return nil
}

func (a *Adapter) ensureEvents() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.events == nil {
		a.events = make(chan adapterEvent, eventBuffer)
	}
}

// Detach forgets the browser (it is gone).
func (a *Adapter) Detach() {
	a.mu.Lock()
	a.bctx, a.ready = nil, false
	a.mu.Unlock()
}

// onCDPEvent runs in chromedp's read loop: it must not block.
func (a *Adapter) onCDPEvent(ev any) {
	bc, ok := ev.(*runtime.EventBindingCalled)
	if !ok || bc.Name != adapterBinding {
		return
	}
	var e adapterEvent
	if err := json.Unmarshal([]byte(bc.Payload), &e); err != nil {
		a.log.Warn("unreadable push from the page adapter", "err", err)
		return
	}
	a.nEvents.Add(1)
	switch e.T {
	case "ready":
		a.nLoads.Add(1)
		a.mu.Lock()
		a.ready, a.version, a.missing = true, e.Version, nil
		a.mu.Unlock()
		a.log.Info("page adapter ready", "version", e.Version)
	case "missing":
		a.mu.Lock()
		first := a.missing == nil
		a.ready, a.version, a.missing = false, e.Version, e.Missing
		a.mu.Unlock()
		if first {
			a.log.Error("WhatsApp Web lacks modules the adapter needs: messages are NOT synced until the adapter is updated (SLICE_WA_ADAPTER)",
				"version", e.Version, "missing", e.Missing)
		}
	}
	a.mu.Lock()
	events := a.events
	a.mu.Unlock()
	select {
	case events <- e:
	default:
		// The syncer is behind (a long history import): the event is lost
		// here, but not for good, since the next catch-up reads the page.
		a.nDropped.Add(1)
		a.overflow.Store(true)
	}
}

// Adjust is the Supervisor's hook between what the page's markers show and
// the state the slice reports: a connected page whose modules the adapter
// cannot use is "degraded", loudly.
func (a *Adapter) Adjust(state string) string {
	a.mu.Lock()
	defer a.mu.Unlock()
	degraded := false
	if state == slicehub.WAConnected && !a.ready {
		if a.connectedAt.IsZero() {
			a.connectedAt = a.now()
		}
		// A page that reported missing modules before the login (on the
		// QR screen) gets a moment to load them after it.
		since := a.now().Sub(a.connectedAt)
		degraded = (len(a.missing) > 0 && since > missingGrace) || since > adapterGrace
	} else {
		a.connectedAt = time.Time{}
	}
	if degraded != a.degraded {
		a.degraded = degraded
		if degraded {
			a.log.Error("WhatsApp is degraded: logged in, but the adapter cannot read or send messages",
				"version", a.version, "missing", a.missing)
		} else {
			a.log.Info("WhatsApp adapter works again")
		}
	}
	if degraded {
		return slicehub.WADegraded
	}
	return state
}

// Ready reports whether the page's adapter found its modules.
func (a *Adapter) Ready() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.ready && a.bctx != nil
}

// Status reports the adapter for GET /api/status/adapter.
func (a *Adapter) Status() AdapterStatus {
	a.mu.Lock()
	defer a.mu.Unlock()
	return AdapterStatus{Version: a.version, Ready: a.ready, Missing: append([]string{}, a.missing...), Degraded: a.degraded,
		Events: a.nEvents.Load(), Dropped: a.nDropped.Load(), Loads: a.nLoads.Load()}
}

var errNoPage = errors.New("no WhatsApp page is open")

// call runs window.__slicehub.fn(args...) in the page and decodes its
// (awaited) result into out.
func (a *Adapter) call(ctx context.Context, out any, fn string, args ...any) error {
	a.mu.Lock()
	bctx := a.bctx
	a.mu.Unlock()
	if bctx == nil {
		return errNoPage
	}
	enc := make([]string, len(args))
	for i, v := range args {
		b, err := json.Marshal(v)
		if err != nil {
			return err
		}
		enc[i] = string(b)
	}
	expr := fmt.Sprintf("window.__slicehub.%s(%s)", fn, strings.Join(enc, ","))
	cctx, cancel := context.WithTimeout(bctx, 60*time.Second)
	defer cancel()
	stop := context.AfterFunc(ctx, cancel)
	defer stop()
	raw, err := chromedp.Run(cctx, chromedp.Evaluate[json.RawMessage](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		return fmt.Errorf("slice.adapter: %s: %w", fn, err)
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(raw, out)
}
