package admin

import (
	"context"

	"github.com/gofiber/fiber/v2"

	"github.com/slicehub/slicehub"
	"github.com/slicehub/slicehub/sliceclient"
)

// The dashboard as a client of one slice (package sliceclient): it reads
// the slice's WhatsApp state and QR code as the gateway (with the slice's
// gateway token), not as the slice's user.

// sliceOf is whom to ask: the slice at addr, as the gateway, with its
// gateway token and no user id, so the slice serves its status endpoints
// without anyone acting as the user (the slice's own API would see no
// X-Slicehub-User-Id).
func (d *dashboard) sliceOf(ctx context.Context, sliceID int64, addr string) (sliceclient.Slice, error) {
	const op = "admin.slice_get"
	if d.a.d.Tokens == nil {
		return sliceclient.Slice{}, slicehub.Errorf(op, slicehub.KindUnavailable, "no_tokens", "this dashboard cannot reach slices")
	}
	tok, err := d.a.d.Tokens.GatewayToken(ctx, sliceID)
	if err != nil {
		return sliceclient.Slice{}, slicehub.Wrap(op, slicehub.KindInternal, err)
	}
	return sliceclient.Slice{ID: sliceID, Addr: addr, Token: tok}, nil
}

func (d *dashboard) whatsAppState(ctx context.Context, id int64, addr string) (string, error) {
	sl, err := d.sliceOf(ctx, id, addr)
	if err != nil {
		return "", err
	}
	return d.slices.WhatsAppState(ctx, sl)
}

// qr relays the slice's current QR code. Viewing it is audited: whoever
// scans it links a phone to the customer's workspace.
func (d *dashboard) qr(c *fiber.Ctx) error {
	const op = "admin.qr"
	id, err := parseID(op, c, "slice")
	if err != nil {
		return err
	}
	rt, ok := d.a.d.Routes.Lookup(id)
	if !ok || rt.Addr == "" {
		return slicehub.Errorf(op, slicehub.KindNotFound, "slice_offline", "the slice is not running")
	}
	ctx, cancel := d.a.ctx(c)
	defer cancel()
	sl, err := d.sliceOf(ctx, id, rt.Addr)
	if err != nil {
		return err
	}
	qr, err := d.slices.QR(ctx, sl)
	if err != nil {
		return err
	}
	d.a.audit(c, "admin action", "action", "view_qr", "slice_id", id)
	c.Set(fiber.HeaderCacheControl, "no-store")
	c.Set(fiber.HeaderXContentTypeOptions, "nosniff")
	c.Set(fiber.HeaderContentType, "image/png")
	return c.Send(qr.PNG)
}
