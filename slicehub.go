// Package slicehub holds the domain of the platform: slices, users, the slice
// state machine, the contract between the gateway and a slice, and the error
// kinds every layer speaks. It depends on the standard library only; the
// technology packages (postgres, consul, scheduler, gateway) import it and not
// each other, and cmd/slicehub wires them together.
package slicehub

import (
	"fmt"
	"strconv"
	"time"
)

// Slice is one tenant's isolated runtime: a dispatched child of the
// parameterized Nomad job plus its own PostgreSQL database and role.
type Slice struct {
	ID     int64
	State  SliceState
	UserID int64 // 0 when unassigned
	// JobID is the dispatched Nomad child (slice/dispatch-...), empty before dispatch.
	JobID string
	// DBServer names the PostgreSQL server that holds the slice database, so
	// that databases can be spread over several servers as the fleet grows.
	DBServer string
	DBName   string
	// AllocID and AllocAddr are the current allocation of JobID as the
	// scheduler saw Nomad place it, and the host:port Nomad gave its http
	// port; empty until recorded. The route table accepts no other
	// instance of the slice.
	AllocID   string
	AllocAddr string
	Restarts  int
	CreatedAt time.Time
	UpdatedAt time.Time
	// StateChangedAt is when the slice entered its current state.
	StateChangedAt time.Time
}

// IDString is the slice id as it appears in Nomad meta and Consul service meta.
func (s Slice) IDString() string { return strconv.FormatInt(s.ID, 10) }

// DatabaseName is the name of a slice's own database and login role.
func DatabaseName(id int64) string { return fmt.Sprintf("wa_slice_%d", id) }

// ParseSliceID parses a slice id from Nomad or Consul meta. Only positive
// decimal integers without sign or leading zeros are accepted, so one id has
// exactly one spelling.
func ParseSliceID(s string) (int64, bool) {
	if s == "" || len(s) > 18 || s[0] == '0' {
		return 0, false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	id, err := strconv.ParseInt(s, 10, 64)
	return id, err == nil && id > 0
}

// SliceEvent is one recorded transition of a slice.
type SliceEvent struct {
	ID      int64
	SliceID int64
	At      time.Time
	Actor   string // "scheduler", "user:12", "admin:3", "billing", ...
	From    SliceState
	To      SliceState
	Reason  string
}

// User is an account of the platform.
type User struct {
	ID         int64
	Email      string
	IsAdmin    bool
	CreatedAt  time.Time
	DisabledAt *time.Time
}

// Route is where a slice can be reached right now, as the Consul catalog says.
type Route struct {
	SliceID int64
	Addr    string // host:port of a passing instance
	AllocID string
}

// Placement is a slice's current allocation as recorded in PostgreSQL
// (Slice.AllocID, Slice.AllocAddr). A Consul instance is routed only when
// it is Nomad's own registration of that allocation (its service ID names
// the allocation) at that address. Addr is empty for an allocation that
// reserves no port (the mock driver's test jobs): then the service ID alone
// must match.
type Placement struct {
	AllocID string
	Addr    string
}

// SliceCredentials are what a slice receives at bootstrap, through the
// gateway's internal endpoint and never through Nomad meta, payload or logs.
type SliceCredentials struct {
	DatabaseURL  string `json:"database_url"`
	GatewayToken string `json:"gateway_token"`
}

// The contract between the gateway and a slice.
const (
	// NomadJobID is the parameterized job; every slice is a dispatched child.
	NomadJobID = "slice"
	// ConsulService is the Consul service every slice registers.
	ConsulService = "slice"
	// MetaSliceID is the Nomad dispatch meta key and the Consul service meta key.
	MetaSliceID = "slice_id"

	// HeaderGatewayToken carries the per-slice secret on every proxied request;
	// a slice refuses /api/* and /socket.io/* without it.
	HeaderGatewayToken = "X-Slicehub-Gateway-Token"
	// HeaderUserID carries the id of the authenticated user.
	HeaderUserID = "X-Slicehub-User-Id"

	// SessionCookie is the gateway's session cookie; it never reaches a slice.
	SessionCookie = "slicehub_session"
	// CSRFCookie holds the double-submit CSRF token for form posts.
	CSRFCookie = "slicehub_csrf"

	// BootstrapPath is the gateway's internal endpoint a slice calls at start.
	BootstrapPath = "/internal/v1/bootstrap"

	// WhatsAppCheck names the slice's second Consul check, on
	// WhatsAppCheckPath: its WhatsApp state for operators in the Consul UI
	// (passing connected, warning waiting for a QR scan or linking,
	// critical disconnected past DownAfterParam). It never routes and never
	// restarts: the route table ignores it, and it has no check_restart.
	WhatsAppCheck     = "whatsapp"
	WhatsAppCheckPath = "/api/health/whatsapp"
	// DownAfterParam is the query parameter of WhatsAppCheckPath that says
	// how long a disconnection is a warning before it turns critical (the
	// gateway's -alert-whatsapp-down); DefaultWhatsAppDownAfter without it.
	DownAfterParam           = "down_after"
	DefaultWhatsAppDownAfter = 10 * time.Minute
)

// BootstrapRequest is what a slice sends to BootstrapPath.
type BootstrapRequest struct {
	SliceID string `json:"slice_id"`
	AllocID string `json:"alloc_id"`
	// Identity is the allocation's Nomad workload identity (a JWT), sent
	// as "Authorization: Bearer <jwt>", never in the body. Only the task
	// holds it (identity { file = true } writes it to its secrets
	// directory), so it proves the caller is the allocation it names, which
	// an allocation id alone (public in Consul) does not.
	Identity string `json:"-"`
}

// WhatsApp states a slice reports on /api/status/state.
const (
	WAStarting     = "starting"
	WAQR           = "qr"
	WAConnected    = "connected"
	WADisconnected = "disconnected"
	WAFailed       = "failed"
	// WADegraded: logged in, but the slice's adapter cannot use WhatsApp
	// Web's data modules (a WhatsApp update), so messages are not synced.
	WADegraded = "degraded"
)
