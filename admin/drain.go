package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/slicehub/slicehub"
	"github.com/slicehub/slicehub/admin/adminapi"
)

// Node drain (slicectl drain): take a Nomad node out of service and move
// its slices to the other nodes. The scheduler does the work; each POST
// starts the drain if needed and moves the next few slices, and returns
// where every slice that was on the node stands, so slicectl calls it
// again until all are passing elsewhere. Any replica can answer any call:
// the status is read afresh from Nomad and Consul each time.
//
//	GET  /admin/api/nodes/:node/drain   status only
//	POST /admin/api/nodes/:node/drain   {"confirm": "<node>", "deadline": "5m", "max_parallel": 2}
//
// :node is a Nomad node name, ID or unique ID prefix. A drain restarts
// every slice of the node (each one is unreachable for the seconds its
// move takes), so the POST wants the node repeated in "confirm".

// Drainer is the scheduler's drain (*scheduler.Scheduler). It is not part
// of Pool so that Pool's fakes need not implement it; a Pool without it
// answers 503.
type Drainer interface {
	Drain(ctx context.Context, ref string, o slicehub.DrainOptions) (slicehub.DrainStatus, error)
	DrainStatus(ctx context.Context, ref string) (slicehub.DrainStatus, error)
}

// DrainRequest and DrainJSON are the routes' wire (package adminapi).
type (
	DrainRequest = adminapi.DrainRequest
	DrainJSON    = adminapi.DrainJSON
)

func registerDrain(r fiber.Router, a *API) {
	r.Get("/nodes/:node/drain", a.drainStatus)
	r.Post("/nodes/:node/drain", a.drain)
}

func (a *API) drainer(op string) (Drainer, error) {
	d, ok := a.d.Pool.(Drainer)
	if !ok {
		return nil, slicehub.Errorf(op, slicehub.KindUnavailable, "drain_unsupported", "this gateway's scheduler cannot drain nodes")
	}
	return d, nil
}

func nodeParam(op string, c *fiber.Ctx) (string, error) {
	ref := strings.TrimSpace(c.Params("node"))
	// Nomad node names and IDs: letters, digits, '-', '_', '.'.
	if ref == "" || len(ref) > 128 || strings.IndexFunc(ref, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.')
	}) >= 0 {
		return "", slicehub.Errorf(op, slicehub.KindInvalid, "invalid_node", "the node must be a Nomad node name, ID or ID prefix")
	}
	return ref, nil
}

func (a *API) drainStatus(c *fiber.Ctx) error {
	const op = "admin.drain_status"
	ref, err := nodeParam(op, c)
	if err != nil {
		return err
	}
	d, err := a.drainer(op)
	if err != nil {
		return err
	}
	ctx, cancel := a.ctx(c)
	defer cancel()
	st, err := d.DrainStatus(ctx, ref)
	if err != nil {
		return err
	}
	return c.JSON(DrainJSON{Drain: st})
}

func (a *API) drain(c *fiber.Ctx) error {
	const op = "admin.drain"
	ref, err := nodeParam(op, c)
	if err != nil {
		return err
	}
	var in DrainRequest
	body := bytes.TrimSpace(c.Body())
	if len(body) > bodyLimit {
		return slicehub.Errorf(op, slicehub.KindTooLarge, "too_large", "the request body is too large")
	}
	if len(body) > 0 {
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&in); err != nil || dec.More() {
			return &slicehub.Error{Op: op, Kind: slicehub.KindInvalid, Code: "invalid_json",
				Message: "the body is not the expected JSON", Err: err}
		}
	}
	if strings.TrimSpace(in.Confirm) != ref {
		return slicehub.Errorf(op, slicehub.KindInvalid, "confirmation_required",
			"a drain restarts every slice of the node elsewhere: repeat the node in {\"confirm\": %q}", ref)
	}
	o := slicehub.DrainOptions{MaxParallel: in.MaxParallel}
	if in.Deadline != "" {
		dl, err := time.ParseDuration(in.Deadline)
		if err != nil || dl <= 0 || dl > 24*time.Hour {
			return slicehub.Errorf(op, slicehub.KindInvalid, "invalid_deadline", "deadline must be a duration between 1s and 24h, such as \"5m\"")
		}
		o.Deadline = dl
	}
	if in.MaxParallel < 0 || in.MaxParallel > 50 {
		return slicehub.Errorf(op, slicehub.KindInvalid, "invalid_max_parallel", "max_parallel must be between 1 and 50")
	}
	d, err := a.drainer(op)
	if err != nil {
		return err
	}
	o.Actor, _ = a.actor(c)
	ctx, cancel := a.ctx(c)
	defer cancel()
	st, err := d.Drain(ctx, ref, o)
	if err != nil {
		return err
	}
	// Audited when it starts and when it moves slices, not at every call
	// of slicectl's follow loop.
	if st.Started || len(st.MovedNow) > 0 {
		a.audit(c, "node drain", "node", st.NodeName, "node_id", st.NodeID, "started", st.Started, "moved", st.MovedNow)
	}
	return c.JSON(DrainJSON{Drain: st})
}
