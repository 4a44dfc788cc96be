package slice

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// WhatsAppConfig says which page Chromium keeps open and how the slice tells
// the WhatsApp states apart on it. The site changes its markup without
// notice, so none of this is compiled in for good: every field has an
// environment variable (see ConfigFromEnv), and an empty field takes the
// value of DefaultWhatsApp.
type WhatsAppConfig struct {
	// URL is the page to open (SLICE_WA_URL).
	URL string
	// QRSelector finds the element that carries the QR code while the page
	// waits for a phone to link it (SLICE_WA_QR_SELECTOR).
	QRSelector string
	// QRAttribute is the attribute of that element holding the QR payload
	// (SLICE_WA_QR_ATTRIBUTE). The slice renders the PNG from the payload;
	// when the attribute is missing or empty it takes a screenshot of the
	// element instead.
	QRAttribute string
	// QRReloadSelector finds the button the page shows once its QR codes
	// have expired; the slice clicks it, so that a QR code is always on
	// offer while nobody is linked (SLICE_WA_QR_RELOAD_SELECTOR).
	QRReloadSelector string
	// ConnectedSelector is present once logged in: the chat list
	// (SLICE_WA_CONNECTED_SELECTOR).
	ConnectedSelector string
	// DisconnectedSelector is present when logged in but the phone or the
	// computer lost its connection; it is checked before ConnectedSelector,
	// because the banner sits on top of the chat list
	// (SLICE_WA_DISCONNECTED_SELECTOR).
	DisconnectedSelector string
	// UserAgent replaces Chromium's. Empty means Chromium's own with
	// "HeadlessChrome" turned into "Chrome": WhatsApp Web refuses browsers
	// that call themselves headless (SLICE_WA_USER_AGENT).
	UserAgent string
}

// DefaultWhatsApp is the production configuration: the real site, with the
// markers that WhatsApp Web automation has relied on for years (the QR
// payload in div[data-ref], the chat list in #pane-side). The stand-in page
// of package standin uses the same markers.
var DefaultWhatsApp = WhatsAppConfig{
	URL:                  "https://web.whatsapp.com/",
	QRSelector:           "div[data-ref]",
	QRAttribute:          "data-ref",
	QRReloadSelector:     "div[data-ref] > span > button",
	ConnectedSelector:    "#pane-side",
	DisconnectedSelector: `span[data-icon="alert-phone"], span[data-icon="alert-computer"]`,
}

// withDefaults fills the empty fields from DefaultWhatsApp.
func (c WhatsAppConfig) withDefaults() WhatsAppConfig {
	d := DefaultWhatsApp
	pick := func(v *string, def string) {
		if *v == "" {
			*v = def
		}
	}
	pick(&c.URL, d.URL)
	pick(&c.QRSelector, d.QRSelector)
	pick(&c.QRAttribute, d.QRAttribute)
	pick(&c.QRReloadSelector, d.QRReloadSelector)
	pick(&c.ConnectedSelector, d.ConnectedSelector)
	pick(&c.DisconnectedSelector, d.DisconnectedSelector)
	return c
}

func (c WhatsAppConfig) validate() error {
	u, err := url.Parse(c.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return errors.New("SLICE_WA_URL must be an http or https URL")
	}
	if c.QRSelector == "" || c.ConnectedSelector == "" {
		return errors.New("the QR and connected selectors must not be empty")
	}
	return nil
}

// pageState is what one look at the page found.
type pageState struct {
	// State is a slicehub.WA* state, or "" when none of the markers is on
	// the page (loading, or a page the selectors do not know).
	State string `json:"s"`
	// Payload is the QR payload (state qr), "" if the attribute is empty.
	Payload string `json:"p"`
	// Reloaded: the QR codes had expired and the reload button was clicked.
	Reloaded bool `json:"reloaded"`
}

// detectScript returns the JavaScript that classifies the page in one round
// trip. Selectors that do not parse count as absent rather than failing the
// whole look, so one bad override cannot hide the other states.
func (c WhatsAppConfig) detectScript() string {
	q := func(s string) string {
		b, _ := json.Marshal(s)
		return string(b)
	}
	var b strings.Builder
	fmt.Fprintf(&b, `(() => {
  const q = s => { if (!s) return null; try { return document.querySelector(s); } catch (e) { return null; } };
  if (q(%s)) return {s: "disconnected"};
  if (q(%s)) return {s: "connected"};
  const r = q(%s);
  if (r) { r.click(); return {s: "qr", reloaded: true}; }
  const e = q(%s);
  if (e) return {s: "qr", p: e.getAttribute(%s) || ""};
  return {s: ""};
})()`, q(c.DisconnectedSelector), q(c.ConnectedSelector), q(c.QRReloadSelector), q(c.QRSelector), q(c.QRAttribute))
	return b.String()
}
