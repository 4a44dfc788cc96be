package admin

import (
	"net/http"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/gofiber/fiber/v2"

	"github.com/slicehub/slicehub"
)

// The dashboard's forms: each posts to a handler that calls the same code
// as its JSON twin (runSliceAction, runDisableUser, runSetPaused, runScale).

// doneNotice is the notice after an action: a slice action's from its
// row, the others' here.
func doneNotice(done string) string {
	if act, ok := slicehub.LookupAdminAction(done); ok {
		return act.Done
	}
	switch done {
	case "disable":
		return "The account is disabled; its sessions have ended."
	case "pause":
		return "The warm pool is paused: no slice is started for it."
	case "unpause":
		return "The warm pool is running again."
	case "scale":
		return "The warm pool's target is set."
	}
	return ""
}

// formBody reads an action form into the JSON API's body: "confirm",
// "user_id" and "note" are the same fields under the same names.
func formBody(c *fiber.Ctx) (actionBody, error) {
	in := actionBody{Confirm: strings.Clone(c.FormValue("confirm")), Note: strings.Clone(c.FormValue("note"))}
	if v := strings.TrimSpace(c.FormValue("user_id")); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n <= 0 {
			return in, slicehub.Errorf("admin.form", slicehub.KindInvalid, "invalid_user", "the user id must be a positive integer")
		}
		in.UserID = n
	}
	return in, nil
}

func (d *dashboard) sliceForm(c *fiber.Ctx) error {
	op := "admin.slice_form"
	id, err := parseID(op, c, "slice")
	if err != nil {
		return err
	}
	action := c.Params("action")
	act, ok := slicehub.LookupAdminAction(action)
	if !ok {
		return fiber.ErrNotFound
	}
	if len(c.Body()) > bodyLimit {
		return slicehub.Errorf(op, slicehub.KindTooLarge, "too_large", "the form is too large")
	}
	if err := d.web.VerifyCSRF(c); err != nil {
		return d.renderSlice(c, slicehub.KindOf(err).HTTPStatus(), sentence(err), "")
	}
	in, err := formBody(c)
	if err == nil {
		ctx, cancel := d.a.ctx(c)
		_, err = d.a.runSliceAction(ctx, c, act, id, in)
		cancel()
	}
	if err != nil {
		if slicehub.CodeOf(err) == "confirmation_required" {
			err = slicehub.Errorf(op, slicehub.KindInvalid, "confirmation_required",
				"this cannot be undone: type the slice id %d to confirm", id)
		}
		return d.renderSlice(c, slicehub.KindOf(err).HTTPStatus(), sentence(err), "")
	}
	c.Set(fiber.HeaderCacheControl, "no-store")
	return c.Redirect("/admin/slices/"+strconv.FormatInt(id, 10)+"?done="+string(act.Name), http.StatusSeeOther)
}

func (d *dashboard) disableForm(c *fiber.Ctx) error {
	const op = "admin.disable_form"
	id, err := parseID(op, c, "user")
	if err != nil {
		return err
	}
	if len(c.Body()) > bodyLimit {
		return slicehub.Errorf(op, slicehub.KindTooLarge, "too_large", "the form is too large")
	}
	if err := d.web.VerifyCSRF(c); err != nil {
		return d.renderDashboard(c, slicehub.KindOf(err).HTTPStatus(), sentence(err), "")
	}
	in, _ := formBody(c)
	ctx, cancel := d.a.ctx(c)
	_, err = d.a.runDisableUser(ctx, c, id, in)
	cancel()
	if err != nil {
		if slicehub.CodeOf(err) == "confirmation_required" {
			err = slicehub.Errorf(op, slicehub.KindInvalid, "confirmation_required",
				"this cannot be undone: type the user id %d to confirm", id)
		}
		return d.renderDashboard(c, slicehub.KindOf(err).HTTPStatus(), sentence(err), "")
	}
	c.Set(fiber.HeaderCacheControl, "no-store")
	return c.Redirect("/admin?done=disable#users", http.StatusSeeOther)
}

func (d *dashboard) poolForm(c *fiber.Ctx) error {
	const op = "admin.pool_form"
	if len(c.Body()) > bodyLimit {
		return slicehub.Errorf(op, slicehub.KindTooLarge, "too_large", "the form is too large")
	}
	if err := d.web.VerifyCSRF(c); err != nil {
		return d.renderDashboard(c, slicehub.KindOf(err).HTTPStatus(), sentence(err), "")
	}
	done := ""
	switch c.Params("action") {
	case "pause", "resume":
		ctx, cancel := d.a.ctx(c)
		defer cancel()
		if err := d.a.runSetPaused(ctx, c, c.Params("action") == "pause"); err != nil {
			return d.renderDashboard(c, slicehub.KindOf(err).HTTPStatus(), sentence(err), "")
		}
		done = map[string]string{"pause": "pause", "resume": "unpause"}[c.Params("action")]
	case "scale":
		n, err := strconv.Atoi(strings.TrimSpace(c.FormValue("min_warm")))
		if err != nil {
			return d.renderDashboard(c, http.StatusBadRequest, "The target must be a whole number.", "")
		}
		if err := d.a.runScale(c, actionBody{MinWarm: &n}); err != nil {
			return d.renderDashboard(c, slicehub.KindOf(err).HTTPStatus(), sentence(err), "")
		}
		done = "scale"
	default:
		return fiber.ErrNotFound
	}
	c.Set(fiber.HeaderCacheControl, "no-store")
	return c.Redirect("/admin?done="+done+"#pool", http.StatusSeeOther)
}

// sentence is an error's message for a page: capitalised, with a full stop.
func sentence(err error) string {
	msg := slicehub.MessageOf(err)
	if msg == "" {
		return "Something went wrong."
	}
	r, n := utf8.DecodeRuneInString(msg)
	msg = string(unicode.ToUpper(r)) + msg[n:]
	if !strings.HasSuffix(msg, ".") {
		msg += "."
	}
	return msg
}
