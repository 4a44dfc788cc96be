package slice

import (
	"fmt"
	"sync"

	"github.com/slicehub/slicehub"
)

// StateSource is what the HTTP and socket.io layers need to know about
// WhatsApp: the current state, and a way to hear about changes. The Chromium
// supervisor drives a StateHolder; readers depend only on this.
type StateSource interface {
	// State returns one of the slicehub.WA* states.
	State() string
	// Subscribe calls fn with every later state change, in order, until
	// the returned cancel is called. fn must not block for long: it runs on
	// the goroutine that changed the state.
	Subscribe(fn func(state string)) (cancel func())
}

// StateHolder holds the WhatsApp state of this slice. It starts in
// "starting"; the Supervisor moves it from what the page shows, and it stays
// "starting" in a slice that runs no Chromium.
type StateHolder struct {
	mu     sync.Mutex
	state  string
	next   int
	subs   map[int]func(string)
	notify sync.Mutex // serialises notifications so subscribers see changes in order
}

// NewStateHolder returns a holder in state slicehub.WAStarting.
func NewStateHolder() *StateHolder {
	return &StateHolder{state: slicehub.WAStarting, subs: map[int]func(string){}}
}

// validWAState reports whether s is one of the contract's states.
func validWAState(s string) bool {
	switch s {
	case slicehub.WAStarting, slicehub.WAQR, slicehub.WAConnected, slicehub.WADisconnected, slicehub.WAFailed, slicehub.WADegraded:
		return true
	}
	return false
}

// State implements StateSource.
func (h *StateHolder) State() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.state
}

// Set moves to state and tells the subscribers if it changed. Only the
// contract's states are accepted, so that a typo in the supervisor cannot
// leak an unknown state to the gateway.
func (h *StateHolder) Set(state string) error {
	if !validWAState(state) {
		return fmt.Errorf("slice.state: unknown WhatsApp state %q", state)
	}
	h.notify.Lock()
	defer h.notify.Unlock()
	h.mu.Lock()
	if h.state == state {
		h.mu.Unlock()
		return nil
	}
	h.state = state
	fns := make([]func(string), 0, len(h.subs))
	for _, fn := range h.subs {
		fns = append(fns, fn)
	}
	h.mu.Unlock()
	for _, fn := range fns {
		fn(state)
	}
	return nil
}

// Subscribe implements StateSource.
func (h *StateHolder) Subscribe(fn func(string)) (cancel func()) {
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
