package admin

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"

	"github.com/gofiber/fiber/v2"

	"github.com/slicehub/slicehub"
)

// The dashboard as a client of one slice: it reads the slice's WhatsApp
// state and QR code as the gateway (with the slice's gateway token), not
// as the slice's user.

// sliceGet asks a slice, as the gateway: its gateway token and no user id,
// so the slice serves its status endpoints without anyone acting as the
// user (the slice's own API would see no X-Slicehub-User-Id).
func (d *dashboard) sliceGet(ctx context.Context, sliceID int64, addr, path string, limit int64) (*http.Response, []byte, error) {
	const op = "admin.slice_get"
	if d.a.d.Tokens == nil {
		return nil, nil, slicehub.Errorf(op, slicehub.KindUnavailable, "no_tokens", "this dashboard cannot reach slices")
	}
	tok, err := d.a.d.Tokens.GatewayToken(ctx, sliceID)
	if err != nil {
		return nil, nil, slicehub.Wrap(op, slicehub.KindInternal, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+path, nil)
	if err != nil {
		return nil, nil, slicehub.Wrap(op, slicehub.KindInternal, err)
	}
	req.Header.Set(slicehub.HeaderGatewayToken, tok)
	resp, err := d.client.Do(req)
	if err != nil {
		return nil, nil, slicehub.Errorf(op, slicehub.KindBadGateway, "slice_unreachable", "the slice did not answer")
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil || int64(len(body)) > limit {
		return nil, nil, slicehub.Errorf(op, slicehub.KindBadGateway, "slice_answer", "the slice's answer was cut short or too large")
	}
	return resp, body, nil
}

func (d *dashboard) whatsAppState(ctx context.Context, id int64, addr string) (string, error) {
	resp, body, err := d.sliceGet(ctx, id, addr, "/api/status/state", 4<<10)
	if err != nil {
		return "", err
	}
	var v struct {
		State string `json:"state"`
	}
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &v) != nil || v.State == "" {
		return "", slicehub.Errorf("admin.whatsapp_state", slicehub.KindBadGateway, "slice_answer",
			"the slice answered %d", resp.StatusCode)
	}
	return v.State, nil
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
	resp, body, err := d.sliceGet(ctx, id, rt.Addr, "/api/status/qr", maxQRBytes)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "image/png") {
		return slicehub.Errorf(op, slicehub.KindNotFound, "no_qr", "the slice shows no QR code now")
	}
	d.a.audit(c, "admin action", "action", "view_qr", "slice_id", id)
	c.Set(fiber.HeaderCacheControl, "no-store")
	c.Set(fiber.HeaderXContentTypeOptions, "nosniff")
	c.Set(fiber.HeaderContentType, "image/png")
	return c.Send(body)
}
