package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/slicehub/slicehub/testsupport"
)

// The shared CRM app in a real headless Chromium against the real platform
// (Nomad, Consul, PostgreSQL, a slice on the stand-in WhatsApp), served by
// the gateway from the build embedded in the binary: a user signs up,
// links WhatsApp on the workspace page and opens the app from there,
// receives a message from the development phone (live, without a reload),
// answers it and sees its status change, labels the contact, writes a
// note, moves it a stage on the pipeline board with the keyboard, and
// searches. Then the same on a phone-sized screen. Screenshots go to
// test-artifacts/cmd-slicehub/.
//
// It also measures the app's first load over the gateway (cold and warm:
// bytes and ms, from the browser's own resource timing) and the time from
// a development-phone message to its appearance in the open conversation
// (p50/p99 over SLICEHUB_APP_SAMPLES messages: 60 by default, at least 50), and writes
// both to test-artifacts/cmd-slicehub/app-figures.json.
func TestCRMAppInChromium(t *testing.T) {
	testsupport.ChromiumPath(t) // skips, loudly, before the platform starts
	m := startPlatform(t)
	b := testsupport.NewBrowser(t, "http://"+m.PublicAddr, "cmd-slicehub", 1280)
	b.DoTimeout = 30 * time.Second
	eval := func(what, js string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(b.Ctx, 2*time.Minute)
		defer cancel()
		out, err := chromedp.Run(ctx, chromedp.Evaluate[string](js, chromedp.EvalAwaitPromise))
		if err != nil {
			b.Shot("failed-" + what)
			t.Fatalf("%s: %v", what, err)
		}
		return out
	}
	figures := map[string]any{}

	// Sign up, link WhatsApp through the workspace page, open the app.
	b.Open("/signup")
	b.WaitFor("the sign-up form", `document.querySelector("#signup-form")`)
	b.Fill(map[string]string{"email": "crm@example.com", "password": "correct horse battery"}, "submit")
	b.WaitWithin("the workspace page", `location.pathname === "/workspace"`, 20*time.Second)
	b.WaitWithin("a QR code to scan", `document.querySelector("#dev-scan") && !document.querySelector("#dev-scan").hidden`, 3*time.Minute)
	b.Do("simulate scanning", chromedp.Click(chromedp.CSS("#dev-scan button")))
	b.WaitWithin("linked, with the way to the app", `document.querySelector("#workspace").dataset.phase === "connected" &&
		!document.querySelector("#app").hidden && document.querySelector("#app-link").getAttribute("href") === "/app/"`, time.Minute)
	b.Shot("workspace-linked")

	// First load of the app: this browser has never fetched it (cold),
	// then the same page again (warm: the assets come from the cache, the
	// page is revalidated).
	b.Do("open the app", chromedp.Click(chromedp.ID("app-link")))
	b.WaitWithin("the app, live", `location.pathname === "/app/" && document.querySelector("#chat-list") &&
		document.querySelector("#live").dataset.live === "on"`, 30*time.Second)
	figures["first_load_cold"] = loadFigure(t, eval)
	b.Open("/app/")
	b.WaitWithin("the app again, live", `document.querySelector("#chat-list") && document.querySelector("#live").dataset.live === "on"`, 30*time.Second)
	figures["first_load_warm"] = loadFigure(t, eval)
	b.Shot("inbox-empty")

	// A message from the development phone arrives in the open inbox.
	phone := func(body string) string {
		return fmt.Sprintf(`fetch("/api/dev/phone/messages", {method: "POST", headers: {"Content-Type": "application/json"},
			body: JSON.stringify({from: "+15550100", name: "Ada Lovelace", body: %q})}).then(r => String(r.status))`, body)
	}
	if st := eval("the development phone sends", phone("Hello from the phone")); st[0] != '2' {
		t.Fatalf("POST /api/dev/phone/messages: %s", st)
	}
	b.WaitWithin("the chat in the inbox, unread, without a reload", `[...document.querySelectorAll("#chat-list li")].some(li =>
		li.textContent.includes("Ada Lovelace") && li.textContent.includes("Hello from the phone") && li.querySelector(".badge"))`, time.Minute)
	b.Shot("inbox-new-message")

	// Open it: the history, then the answer and its status as it changes.
	b.Do("open the chat", chromedp.Click(chromedp.CSS(`#chat-list li a`)))
	b.WaitFor("the conversation", `location.pathname.startsWith("/app/chats/") &&
		[...document.querySelectorAll("#messages li.them")].some(li => li.textContent.includes("Hello from the phone"))`)
	chatID := strings.TrimPrefix(eval("chat id", `location.pathname`), "/app/chats/")
	b.WaitFor("read: no unread badge", `!document.querySelector("#chat-list li .badge")`)
	eval("watch statuses", `(async () => {
		window.statusLog = [];
		window.bubbles = 0;
		new MutationObserver(() => {
			const mine = [...document.querySelectorAll("#messages li.me")].filter(li => li.textContent.includes("Thanks, Ada!"));
			window.bubbles = Math.max(window.bubbles, mine.length);
			for (const li of mine) if (window.statusLog.at(-1) !== li.dataset.status) window.statusLog.push(li.dataset.status);
		}).observe(document.querySelector("#messages"), {childList: true, subtree: true, attributes: true});
		return "ok";
	})()`)
	b.Do("answer", chromedp.SendKeys(chromedp.CSS("#compose-body"), "Thanks, Ada!"+kb.Enter))
	b.WaitWithin("the answer sent, its status shown live", `window.statusLog.includes("pending") &&
		["sent", "delivered", "read"].some(s => window.statusLog.includes(s))`, time.Minute)
	b.WaitWithin("the phone got the answer", `fetch("/api/dev/phone/messages").then(r => r.json()).then(d =>
		JSON.stringify(d).includes("Thanks, Ada!"))`, 30*time.Second)
	statuses := eval("status log", `JSON.stringify(window.statusLog)`)
	t.Logf("status of the answer, as the page showed it: %s", statuses)
	if n := eval("bubbles", `String(window.bubbles)`); n != "1" {
		t.Errorf("the answer was shown %s times at once", n)
	}
	var seen []string
	_ = json.Unmarshal([]byte(statuses), &seen)
	rank := map[string]int{"pending": 0, "failed": 1, "sent": 2, "delivered": 3, "read": 4}
	for i := 1; i < len(seen); i++ {
		if rank[seen[i]] < rank[seen[i-1]] {
			t.Errorf("the status went back: %s", statuses)
		}
	}
	b.Shot("conversation-answered")

	// The contact panel: a contact for the chat, a label, a note.
	if b.Try(`document.querySelector("#make-contact")`, 5*time.Second) {
		b.Do("create the contact", chromedp.Click(chromedp.ID("make-contact")))
	}
	b.WaitFor("the contact panel", `document.querySelector("#label-input") && document.querySelector("#stage")`)
	b.Do("label the contact", chromedp.SendKeys(chromedp.CSS("#label-input"), "VIP"+kb.Enter))
	b.WaitFor("the label", `document.querySelector('#labels li[data-label="VIP"]')`)
	b.Do("write a note", chromedp.SendKeys(chromedp.CSS("#note-input"), "Wants a demo on Friday"),
		chromedp.Click(chromedp.CSS("#note-form button[type=submit]")))
	b.WaitFor("the note", `document.querySelector("#notes").textContent.includes("Wants a demo on Friday")`)
	b.Shot("contact-panel")
	contactID := eval("contact id", `fetch("/api/chats").then(r => r.json()).then(d =>
		String((d.chats || d).find(c => String(c.id) === `+strconv.Quote(chatID)+`).contact_id))`)

	// The pipeline board: the contact's card moves a stage with the keyboard.
	b.Do("open the pipeline", chromedp.Click(chromedp.CSS(`a[data-nav="pipeline"]`)))
	card := `.card[data-contact-id="` + contactID + `"]`
	b.WaitFor("the card in its first stage", `document.querySelector('.column[data-stage="new"] `+card+`')`)
	b.Do("move it right with the keyboard", chromedp.Focus(chromedp.CSS(card)), chromedp.KeyEvent(kb.ArrowRight))
	b.WaitFor("the card one stage on, still focused", `document.querySelector('.column[data-stage="qualified"] `+card+`') &&
		document.activeElement === document.querySelector('`+card+`')`)
	b.WaitFor("the stage stored in the slice", `fetch("/api/contacts/`+contactID+`").then(r => r.json()).then(c => c.stage === "qualified")`)
	b.Shot("pipeline")

	// Search: the message and the contact.
	b.Do("search", chromedp.Focus(chromedp.CSS("#search-q")), chromedp.SendKeys(chromedp.CSS("#search-q"), "phone"+kb.Enter))
	b.WaitWithin("search results", `location.pathname === "/app/search" &&
		[...document.querySelectorAll("#results li")].some(li => li.textContent.includes("Hello from the phone"))`, 20*time.Second)
	eval("clear the search box", `document.querySelector("#search-q").value = ""`)
	b.Do("search a contact", chromedp.SendKeys(chromedp.CSS("#search-q"), "Lovelace"+kb.Enter))
	b.WaitWithin("the contact found", `location.search.includes("Lovelace") &&
		[...document.querySelectorAll("#results li")].some(li => li.textContent.includes("Ada Lovelace"))`, 20*time.Second)
	b.Shot("search")

	// Incoming message → visible in the open conversation, measured in the
	// page: from just before the phone's POST to the moment the message is
	// in the DOM (a MutationObserver, no polling).
	b.Open("/app/chats/" + chatID)
	b.WaitWithin("the conversation, live", `document.querySelector("#messages li") && document.querySelector("#live").dataset.live === "on"`, 30*time.Second)
	// With the two messages before, 50 or more make more than a page of
	// history for the paging check below.
	n := 60
	if v, err := strconv.Atoi(os.Getenv("SLICEHUB_APP_SAMPLES")); err == nil && v >= 50 {
		n = v
	}
	var lat []float64
	for i := range n {
		body := fmt.Sprintf("latency probe %d %d", i, time.Now().UnixNano())
		ms := eval("latency sample", fmt.Sprintf(`new Promise((resolve, reject) => {
			const seen = () => [...document.querySelectorAll("#messages li.them")].some(li => li.textContent.includes(%q));
			const t0 = performance.now();
			const obs = new MutationObserver(() => { if (seen()) { obs.disconnect(); resolve(String(performance.now() - t0)); } });
			obs.observe(document.querySelector("#messages"), {childList: true, subtree: true});
			setTimeout(() => { obs.disconnect(); reject(new Error("not shown within 30 s")); }, 30000);
			%s.then(s => { if (s[0] !== "2") reject(new Error("phone POST " + s)); });
		})`, body, phone(body)))
		v, err := strconv.ParseFloat(ms, 64)
		if err != nil {
			t.Fatalf("sample %q: %v", ms, err)
		}
		lat = append(lat, v)
	}
	slices.Sort(lat)
	pct := func(p float64) float64 { return lat[min(len(lat)-1, int(p*float64(len(lat))+0.5)-1)] }
	figures["incoming_to_visible_ms"] = map[string]any{"n": n, "p50": pct(0.50), "p99": pct(0.99), "min": lat[0], "max": lat[len(lat)-1]}
	t.Logf("incoming dev-phone message → visible in the app: n=%d p50 %.1f ms p99 %.1f ms (min %.1f, max %.1f)",
		n, pct(0.50), pct(0.99), lat[0], lat[len(lat)-1])
	b.Shot("conversation-after-latency")

	// Paging back: the conversation now holds more than a page (50), so a
	// fresh load shows the newest 50, and older ones come on demand.
	b.Open("/app/chats/" + chatID)
	b.WaitWithin("the newest page", `document.querySelectorAll("#messages li").length === 50 && !document.querySelector("#older").hidden`, 20*time.Second)
	first := eval("oldest shown", `document.querySelector("#messages li").dataset.msgId`)
	b.Do("page back", chromedp.Click(chromedp.ID("older")))
	b.WaitFor("an older page above it", `document.querySelectorAll("#messages li").length > 50 &&
		document.querySelector("#messages li").dataset.msgId !== `+strconv.Quote(first)+` &&
		[...document.querySelectorAll("#messages li")][0].textContent.includes("Hello from the phone")`)
	b.Shot("history-paged-back")

	// A phone-sized screen: one pane at a time, the same controls.
	b.Do("phone size", chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(2), chromedp.EmulateMobile))
	b.Open("/app/")
	b.WaitFor("the inbox on a phone", `document.querySelector("#chat-list li a") && getComputedStyle(document.querySelector("#conv")).display === "none"`)
	b.Shot("phone-inbox")
	b.Do("open the chat on a phone", chromedp.Click(chromedp.CSS(`#chat-list li a`)))
	b.WaitFor("the conversation alone", `document.querySelector("#messages li") && getComputedStyle(document.querySelector("#inbox")).display === "none"`)
	b.Shot("phone-conversation")
	b.Do("open the contact", chromedp.Click(chromedp.ID("panel-toggle")))
	b.WaitFor("the contact panel alone", `getComputedStyle(document.querySelector("#panel")).display !== "none" && document.querySelector('#labels li[data-label="VIP"]')`)
	b.Shot("phone-contact")

	// Every control has an accessible name.
	unnamed := eval("accessible names", `JSON.stringify([...document.querySelectorAll("button, a[href], input, select, textarea")].filter(el => {
		const label = el.id && document.querySelector('label[for="' + el.id + '"]');
		return !(el.getAttribute("aria-label") || el.getAttribute("aria-labelledby") || label || el.textContent.trim() || el.type === "hidden");
	}).map(el => el.outerHTML.slice(0, 80)))`)
	if unnamed != "[]" {
		t.Errorf("controls without an accessible name: %s", unnamed)
	}

	out, _ := json.MarshalIndent(figures, "", "  ")
	t.Logf("figures: %s", out)
	if err := os.WriteFile(filepath.Join(b.Dir, "app-figures.json"), out, 0o644); err != nil {
		t.Error(err)
	}
}

// loadFigure reads the page's navigation and resource timing: bytes over
// the wire (headers and bodies; 0 for what came from the cache) and the
// time to the load event.
func loadFigure(t *testing.T, eval func(what, js string) string) map[string]any {
	t.Helper()
	raw := eval("resource timing", `(() => {
		const nav = performance.getEntriesByType("navigation")[0];
		const res = performance.getEntriesByType("resource").filter(r => r.name.includes("/app/"));
		return JSON.stringify({
			bytes: nav.transferSize + res.reduce((n, r) => n + r.transferSize, 0),
			decoded_bytes: nav.decodedBodySize + res.reduce((n, r) => n + r.decodedBodySize, 0),
			load_ms: Math.round(nav.loadEventEnd), dom_ready_ms: Math.round(nav.domContentLoadedEventEnd),
			files: [{name: nav.name, transfer: nav.transferSize, status: nav.responseStatus}].concat(res.map(r => ({name: r.name, transfer: r.transferSize, status: r.responseStatus}))),
		});
	})()`)
	var f map[string]any
	if err := json.Unmarshal([]byte(raw), &f); err != nil {
		t.Fatalf("timing %q: %v", raw, err)
	}
	t.Logf("app load: %s", raw)
	return f
}

// The development admin: made once per state directory, the same login
// on every later run, and an admin of the platform.
func TestDevAdmin(t *testing.T) {
	m := startPlatform(t, "-min-warm", "0")
	dir := t.TempDir()
	first, err := ensureDevAdmin(t.Context(), dir, m.DB)
	if err != nil {
		t.Fatal(err)
	}
	again, err := ensureDevAdmin(t.Context(), dir, m.DB)
	if err != nil || again != first {
		t.Fatalf("second run: %+v, %v; want %+v", again, err, first)
	}
	if st, err := os.Stat(filepath.Join(dir, devAdminFile)); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("login file: %v, %v", st, err)
	}
	c := newClient(t, m)
	if status, body := c.do("POST", "/auth/login", map[string]string{"email": first.Email, "password": first.Password}); status != http.StatusOK {
		t.Fatalf("login as the development admin: %d %v", status, body)
	}
	if status, body := c.do("GET", "/admin/api/status", nil); status != http.StatusOK {
		t.Fatalf("admin API as the development admin: %d %v", status, body)
	}
	// Another state directory on the same database: the account exists,
	// its password is elsewhere; say so rather than make a second admin.
	if _, err := ensureDevAdmin(t.Context(), t.TempDir(), m.DB); err == nil || !strings.Contains(err.Error(), devAdminEmail) {
		t.Errorf("a second state directory: %v", err)
	}
}
