package slicehub

import "time"

// Admission control (issue 17): per host, the platform caps how many slices
// start at once (dispatches), how many users are shown a QR code at once
// (pairings: QR to linked) and how many slices import their WhatsApp
// history at once (imports), because each of the three is a memory and CPU
// burst: a burst of signups on one host must never push a slice past its
// budget or the host into swap. These types are shared by the scheduler
// (which decides), package postgres (which keeps the permits) and the
// gateway (which shows a user's place).

// Queue names what a user waits for.
type Queue string

const (
	// QueueDispatch: the slice waits for its turn to be dispatched.
	QueueDispatch Queue = "dispatch"
	// QueuePairing: the slice shows a QR code, and the user waits for the
	// turn to be shown it.
	QueuePairing Queue = "pairing"
)

// QueuePlace is a user's place in an admission queue.
type QueuePlace struct {
	For Queue `json:"for"`
	// Position is 1 for the next user served.
	Position int `json:"position"`
}

// PairingPhase is where a slice stands in linking WhatsApp, as the gateway
// reads it from the slice.
type PairingPhase string

const (
	// PhaseQR: the slice shows a QR code; seeing it needs a permit.
	PhaseQR PairingPhase = "qr"
	// PhaseImporting: linked, and the slice imports its history.
	PhaseImporting PairingPhase = "importing"
	// PhaseDone: linked and imported, or any state that needs no permit
	// (starting, disconnected, failed): the slice's permit is given back.
	PhaseDone PairingPhase = "done"
)

// PairingAsk is one look at a slice by the pairing gate: it renews, takes
// or gives back the slice's permit, and grants waiting slices in order.
type PairingAsk struct {
	SliceID int64
	Phase   PairingPhase
	// Pairings and Imports are the per-host caps; 0 or less: no cap.
	Pairings, Imports int
	// PairingHold is how long a granted QR code stays granted without a
	// link; ImportHold bounds an import permit when the slice stops
	// reporting; TTL drops a waiting or pairing permit nobody renews (the
	// user closed the page).
	PairingHold, ImportHold, TTL time.Duration
	Now                          time.Time
}

// Permit is the pairing gate's answer.
type Permit struct {
	Granted bool
	// Queue is the slice's place while it is not granted.
	Queue *QueuePlace
}
