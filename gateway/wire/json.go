package wire

import (
	"bytes"
	"encoding/json"

	"github.com/gofiber/fiber/v2"

	"github.com/slicehub/slicehub"
)

// DecodeJSON reads a JSON body of at most limit bytes into v, refusing
// unknown fields and trailing data so that a typo is an error, not a silent
// default.
func DecodeJSON(c *fiber.Ctx, v any, limit int) error {
	const op = "gateway.decode"
	body := c.Body()
	if len(body) > limit {
		return slicehub.Errorf(op, slicehub.KindTooLarge, "too_large", "the request body is too large")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return &slicehub.Error{Op: op, Kind: slicehub.KindInvalid, Code: "invalid_json", Message: "the body is not the expected JSON", Err: err}
	}
	if dec.More() {
		return slicehub.Errorf(op, slicehub.KindInvalid, "invalid_json", "the body is not the expected JSON")
	}
	return nil
}
