// The Slicehub CRM: one build served to every user under /app/. It talks
// to the user's own slice only through /api/* (JSON) and /socket.io/* (live
// events); the gateway routes both by the session cookie. Screens: inbox,
// conversation with its contact panel, pipeline board, search, and, on the
// development platform, the development phone.
//
// State lives in S; each screen is rendered from it. Live events update S
// and re-render what they touch. After a lost connection the app reloads
// what it shows, since events sent meanwhile are gone: that is a resync on
// reconnect, never a poll.

import { Socket } from "./socket.js";
import { api, list } from "./api.js";

const PAGE = 50; // messages per page of history
const DEFAULT_STAGES = [
  { id: "new", name: "New" }, { id: "qualified", name: "Qualified" }, { id: "proposal", name: "Proposal" },
  { id: "won", name: "Won" }, { id: "lost", name: "Lost" },
];
const STATUS_RANK = { pending: 0, failed: 1, sent: 2, delivered: 3, read: 4 };
const STATUS_TEXT = { pending: "Sending", failed: "Not sent", sent: "Sent", delivered: "Delivered", read: "Read" };
const STATUS_ICON = { pending: "🕓", failed: "⚠", sent: "✓", delivered: "✓✓", read: "✓✓" };

const S = {
  chats: new Map(), // id -> chat
  chatsLoaded: false,
  history: new Map(), // chat id -> {items: [message], done, loading}
  contacts: new Map(), // id -> contact
  notes: new Map(), // contact id -> [note]
  labels: [],
  stages: DEFAULT_STAGES,
  route: { view: "inbox" },
  panelOpen: false,
  devPhone: false,
  whatsapp: "",
};

// ---- DOM helpers ----------------------------------------------------------

const $ = (sel, root = document) => root.querySelector(sel);

// h builds an element; strings become text nodes (never HTML).
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === false || v == null) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (v === true) el.setAttribute(k, "");
    else el.setAttribute(k, v);
  }
  for (const c of children.flat()) {
    if (c == null || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

function announce(text) {
  const a = $("#announce");
  a.textContent = "";
  setTimeout(() => { a.textContent = text; }, 30);
}

function showError(err) {
  announce(err.message || String(err));
  const box = $("#error") || document.body.appendChild(h("p", { id: "error", role: "alert" }));
  box.textContent = err.message || String(err);
  box.hidden = false;
  clearTimeout(showError.t);
  showError.t = setTimeout(() => { box.hidden = true; }, 6000);
}

function when(iso) {
  const d = new Date(iso);
  if (isNaN(d)) return "";
  const today = new Date().toDateString() === d.toDateString();
  return today ? d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })
    : d.toLocaleDateString([], { day: "numeric", month: "short" }) + " " + d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

function randomKey() {
  const b = new Uint8Array(16);
  crypto.getRandomValues(b); // works on plain http too, unlike randomUUID
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

// ---- data -----------------------------------------------------------------

function chatName(c) { return c.name || c.phone || "Unknown"; }

function preview(m) {
  if (!m) return "";
  if (typeof m === "string") return m;
  return (m.from_me ? "You: " : "") + (m.body || (m.type ? `[${m.type}]` : ""));
}

function lastAt(c) {
  const m = c.last_message;
  return (m && typeof m === "object" && Date.parse(m.sent_at)) || Date.parse(c.last_message_at || c.updated_at || 0) || 0;
}

function sortedChats() {
  return [...S.chats.values()].sort((a, b) => lastAt(b) - lastAt(a) || b.id - a.id);
}

async function loadChats() {
  const data = await api("GET", "/api/chats");
  S.chats.clear();
  for (const c of list(data, "chats")) S.chats.set(String(c.id), c);
  S.chatsLoaded = true;
}

async function loadStagesAndLabels() {
  const [st, lb] = await Promise.allSettled([api("GET", "/api/stages"), api("GET", "/api/labels")]);
  if (st.status === "fulfilled" && list(st.value, "stages").length) {
    S.stages = list(st.value, "stages").map((s) => (typeof s === "string" ? { id: s, name: s } : s));
  }
  if (lb.status === "fulfilled") S.labels = list(lb.value, "labels");
}

async function loadContacts() {
  let after = 0;
  for (let i = 0; i < 20; i++) {
    const data = await api("GET", `/api/contacts?limit=200${after ? "&after=" + after : ""}`);
    const got = list(data, "contacts");
    for (const c of got) S.contacts.set(String(c.id), c);
    if (got.length < 200) break;
    after = got[got.length - 1].id;
  }
}

function historyOf(chatId) {
  const id = String(chatId);
  if (!S.history.has(id)) S.history.set(id, { items: [], done: false, loading: false, loaded: false });
  return S.history.get(id);
}

function byTime(a, b) {
  return (Date.parse(a.sent_at) || 0) - (Date.parse(b.sent_at) || 0) || (Number(a.id) || 0) - (Number(b.id) || 0);
}

// mergeMessage puts m into its chat's history: a status never moves back
// (a live event may overtake the answer to the send).
function mergeMessage(m) {
  const hist = historyOf(m.chat_id);
  let i = hist.items.findIndex((x) => String(x.id) === String(m.id) ||
    (m.idempotency_key && x.key === m.idempotency_key));
  if (i < 0) {
    hist.items.push(m);
  } else {
    const old = hist.items[i];
    const status = (STATUS_RANK[old.status] ?? -1) > (STATUS_RANK[m.status] ?? -1) ? old.status : m.status;
    hist.items[i] = { ...old, ...m, status, key: old.key };
  }
  hist.items.sort(byTime);
}

async function loadHistory(chatId, older) {
  const hist = historyOf(chatId);
  if (hist.loading || (older && hist.done)) return;
  hist.loading = true;
  try {
    let q = `?limit=${PAGE}`;
    const real = hist.items.filter((x) => !String(x.id).startsWith("tmp-"));
    if (older && real.length) q += "&before=" + encodeURIComponent(hist.cursor || real[0].id);
    const data = await api("GET", `/api/chats/${chatId}/messages${q}`);
    const got = list(data, "messages");
    if (!older) hist.items = hist.items.filter((x) => String(x.id).startsWith("tmp-"));
    for (const m of got) mergeMessage({ chat_id: Number(chatId), ...m });
    hist.cursor = data && (data.next_before || data.before || data.cursor) || "";
    if (older || !hist.loaded) hist.done = got.length < PAGE && !hist.cursor;
    hist.loaded = true;
  } finally {
    hist.loading = false;
  }
}

let readTimer = 0;
function markRead(chatId) {
  const c = S.chats.get(String(chatId));
  if (c) c.unread = 0;
  clearTimeout(readTimer);
  readTimer = setTimeout(() => {
    api("POST", `/api/chats/${chatId}/read`, {}).catch(() => {});
  }, 150);
}

async function contactOf(chat) {
  if (chat.contact_id) {
    const id = String(chat.contact_id);
    if (!S.contacts.has(id)) S.contacts.set(id, await api("GET", `/api/contacts/${id}`));
    return S.contacts.get(id);
  }
  return null;
}

async function notesOf(contactId) {
  const id = String(contactId);
  if (!S.notes.has(id)) S.notes.set(id, list(await api("GET", `/api/contacts/${id}/notes`), "notes"));
  return S.notes.get(id);
}

// ---- routing --------------------------------------------------------------

function parseRoute() {
  const p = location.pathname.replace(/^\/app\/?/, "");
  const parts = p.split("/").filter(Boolean);
  if (parts[0] === "chats" && parts[1]) return { view: "chat", id: decodeURIComponent(parts[1]) };
  if (parts[0] === "pipeline") return { view: "pipeline" };
  if (parts[0] === "search") return { view: "search", q: new URLSearchParams(location.search).get("q") || "" };
  if (parts[0] === "phone") return { view: "phone" };
  return { view: "inbox" };
}

function go(url, replace) {
  if (replace) history.replaceState(null, "", url);
  else history.pushState(null, "", url);
  route();
}

async function route() {
  const r = parseRoute();
  const changedChat = r.view === "chat" && (S.route.view !== "chat" || S.route.id !== r.id);
  S.route = r;
  if (changedChat) S.panelOpen = false;
  document.body.dataset.view = r.view;
  for (const a of document.querySelectorAll("[data-nav]")) {
    const cur = a.dataset.nav === r.view || (a.dataset.nav === "inbox" && r.view === "chat");
    if (cur) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  try {
    if (r.view === "inbox" || r.view === "chat") await showInbox(r, changedChat);
    else if (r.view === "pipeline") await showPipeline();
    else if (r.view === "search") await showSearch(r.q);
    else if (r.view === "phone") await showPhone();
  } catch (err) {
    showError(err);
  }
}

// ---- inbox and conversation ----------------------------------------------

function layout() {
  let split = $("#split");
  if (!split) {
    split = h("div", { id: "split", class: "split" },
      h("section", { id: "inbox", "aria-labelledby": "inbox-h" },
        h("h1", { id: "inbox-h", class: "sr" }, "Chats"),
        h("ul", { id: "chat-list", class: "chats", "aria-label": "Chats" })),
      h("section", { id: "conv", "aria-label": "Conversation" }),
      h("aside", { id: "panel", "aria-label": "Contact" }));
    $("#main").replaceChildren(split);
  }
  return split;
}

async function showInbox(r, changedChat) {
  layout();
  if (!S.chatsLoaded) await loadChats();
  renderChatList();
  if (r.view !== "chat") {
    $("#conv").replaceChildren(h("p", { class: "empty" }, S.chats.size ? "Choose a chat." : "No chats yet. Messages sent to your WhatsApp appear here."));
    $("#panel").replaceChildren();
    document.title = titleWithUnread("Inbox");
    return;
  }
  const chat = S.chats.get(r.id);
  if (!chat) {
    $("#conv").replaceChildren(h("p", { class: "empty" }, "This chat does not exist."));
    return;
  }
  if (changedChat) {
    renderConversation(chat, true);
    const hist = historyOf(chat.id);
    if (!hist.loaded) await loadHistory(chat.id, false);
    markRead(chat.id);
    renderChatList();
    renderMessages(chat.id, "bottom");
    $("#compose-body")?.focus({ preventScroll: true });
  }
  renderPanel(chat);
}

function titleWithUnread(t) {
  let n = 0;
  for (const c of S.chats.values()) n += c.unread || 0;
  return (n ? `(${n}) ` : "") + t + " · Slicehub";
}

function renderChatList() {
  const ul = $("#chat-list");
  if (!ul) return;
  const open = S.route.view === "chat" ? S.route.id : "";
  ul.replaceChildren(...sortedChats().map((c) => {
    const id = String(c.id);
    const unread = c.unread || 0;
    return h("li", { dataset: { chatId: id }, class: unread ? "unread" : "" },
      h("a", { href: `/app/chats/${id}`, "aria-current": id === open ? "true" : false,
        "aria-label": `${chatName(c)}${unread ? `, ${unread} unread` : ""}: ${preview(c.last_message)}` },
        h("span", { class: "who" }, chatName(c)),
        h("time", {}, c.last_message && c.last_message.sent_at ? when(c.last_message.sent_at) : ""),
        h("span", { class: "last" }, preview(c.last_message)),
        unread ? h("span", { class: "badge", "aria-hidden": "true" }, String(unread)) : null));
  }));
  if (!S.chats.size) ul.append(h("li", { class: "empty" }, "No chats yet."));
  if (S.route.view === "inbox" || S.route.view === "chat") document.title = titleWithUnread(S.route.view === "chat" ? chatName(S.chats.get(open) || {}) : "Inbox");
}

function renderConversation(chat) {
  const conv = $("#conv");
  conv.replaceChildren(
    h("header", { class: "conv-head" },
      h("a", { class: "back", href: "/app/", "aria-label": "Back to chats" }, "←"),
      h("div", {}, h("h2", { id: "conv-name" }, chatName(chat)), h("span", { class: "phone" }, chat.phone || "")),
      h("button", { type: "button", id: "panel-toggle", "aria-controls": "panel", "aria-expanded": String(S.panelOpen),
        onclick: () => togglePanel() }, "Contact")),
    h("div", { id: "scroller", class: "scroller", tabindex: "0", "aria-label": "Message history" },
      h("button", { type: "button", id: "older", class: "older", onclick: () => older(chat.id) }, "Load earlier messages"),
      h("ol", { id: "messages", class: "messages", "aria-live": "polite", "aria-relevant": "additions", "aria-label": "Messages" })),
    h("form", { id: "compose", class: "compose", onsubmit: (e) => { e.preventDefault(); sendFromBox(chat.id); } },
      h("label", { for: "compose-body", class: "sr" }, "Message"),
      h("textarea", { id: "compose-body", name: "body", rows: "1", placeholder: "Type a message", required: true,
        "aria-keyshortcuts": "Enter", onkeydown: (e) => {
          if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); sendFromBox(chat.id); }
        } }),
      h("button", { type: "submit", id: "send" }, "Send")));
  // Paging back when the top of the history comes into view.
  const io = new IntersectionObserver((es) => {
    if (es.some((e) => e.isIntersecting) && historyOf(chat.id).loaded) older(chat.id);
  }, { root: $("#scroller") });
  io.observe($("#older"));
}

async function older(chatId) {
  const hist = historyOf(chatId);
  if (hist.done || hist.loading) return;
  try {
    await loadHistory(chatId, true);
    renderMessages(chatId, "keep");
  } catch (err) { showError(err); }
}

function renderMessages(chatId, scroll) {
  if (S.route.view !== "chat" || S.route.id !== String(chatId)) return;
  const ol = $("#messages");
  const sc = $("#scroller");
  if (!ol) return;
  const hist = historyOf(chatId);
  const fromBottom = sc.scrollHeight - sc.scrollTop - sc.clientHeight;
  const atBottom = fromBottom < 40;
  ol.replaceChildren(...hist.items.map((m) => messageItem(m)));
  const old = $("#older");
  old.hidden = hist.done;
  old.textContent = hist.loading ? "Loading…" : "Load earlier messages";
  if (scroll === "bottom" || (scroll !== "keep" && atBottom)) sc.scrollTop = sc.scrollHeight;
  else sc.scrollTop = sc.scrollHeight - sc.clientHeight - fromBottom; // keep the view where it was
}

function messageItem(m) {
  const st = m.status || "";
  return h("li", { class: m.from_me ? "me" : "them", dataset: { msgId: String(m.id), status: st } },
    h("p", { class: "body" }, m.body || (m.type ? `[${m.type}]` : "")),
    h("span", { class: "meta" },
      h("time", { datetime: m.sent_at || "" }, when(m.sent_at)),
      m.from_me ? h("span", { class: "status " + st, role: "img", "aria-label": STATUS_TEXT[st] || st, title: STATUS_TEXT[st] || st }, STATUS_ICON[st] || "") : null,
      st === "failed" && m.key ? h("button", { type: "button", class: "retry", onclick: () => send(m.chat_id, m.body, m.key),
        "aria-label": "Send again: " + (m.body || "") }, "Retry") : null));
}

function sendFromBox(chatId) {
  const box = $("#compose-body");
  const body = box.value.trim();
  if (!body) return;
  box.value = "";
  send(chatId, body, randomKey());
}

// send shows the message at once as pending, then follows what the slice
// says; a retry reuses the idempotency key, so a send that did arrive is
// not sent twice.
async function send(chatId, body, key) {
  const hist = historyOf(chatId);
  let tmp = hist.items.find((x) => x.key === key);
  if (!tmp) {
    tmp = { id: "tmp-" + key, key, chat_id: Number(chatId), from_me: true, body, status: "pending", sent_at: new Date().toISOString() };
    hist.items.push(tmp);
  } else tmp.status = "pending";
  renderMessages(chatId, "bottom");
  try {
    const data = await api("POST", `/api/chats/${chatId}/messages`, { body, idempotency_key: key });
    const m = (data && data.message) || data;
    if (m && m.id != null) {
      const real = hist.items.findIndex((x) => String(x.id) === String(m.id));
      if (real >= 0 && hist.items[real] !== tmp) {
        // The live event came first: keep that one, with the key.
        hist.items[real].key = key;
        hist.items = hist.items.filter((x) => x !== tmp);
      }
      mergeMessage({ chat_id: Number(chatId), ...m, idempotency_key: key });
      const c = S.chats.get(String(chatId));
      if (c) c.last_message = m;
    }
  } catch (err) {
    tmp.status = "failed";
    showError(err);
  }
  renderMessages(chatId);
  renderChatList();
}

function togglePanel(open) {
  S.panelOpen = open ?? !S.panelOpen;
  document.body.dataset.panel = S.panelOpen ? "open" : "";
  $("#panel-toggle")?.setAttribute("aria-expanded", String(S.panelOpen));
  if (S.panelOpen) $("#panel h2")?.focus();
}

// ---- contact panel --------------------------------------------------------

async function renderPanel(chat) {
  const panel = $("#panel");
  document.body.dataset.panel = S.panelOpen ? "open" : "";
  let contact;
  try {
    contact = await contactOf(chat);
  } catch (err) { showError(err); }
  if (S.route.id !== String(chat.id)) return;
  if (!contact) {
    panel.replaceChildren(closePanel(), h("h2", { tabindex: "-1" }, "Contact"),
      h("p", {}, "This chat has no contact yet."),
      h("button", { type: "button", id: "make-contact", onclick: async () => {
        try {
          const c = await api("POST", "/api/contacts", { name: chat.name || chat.phone, phone: chat.phone });
          S.contacts.set(String(c.id), c);
          chat.contact_id = c.id;
          renderPanel(chat);
        } catch (err) { showError(err); }
      } }, "Create a contact"));
    return;
  }
  const notes = await notesOf(contact.id).catch((err) => { showError(err); return []; });
  if (S.route.id !== String(chat.id)) return;
  const cid = contact.id;
  // A live change re-renders the panel: what is being typed stays, and so
  // does the focus.
  const same = panel.dataset.contact === String(cid);
  const kept = same ? ["note-input", "label-input"].map((id) => [id, $("#" + id)?.value || ""]) : [];
  const focused = same && panel.contains(document.activeElement) ? document.activeElement.id : "";
  panel.dataset.contact = String(cid);
  panel.replaceChildren(closePanel(),
    h("h2", { tabindex: "-1" }, contact.name || contact.phone),
    h("p", { class: "phone" }, contact.phone || ""),
    h("label", { for: "stage" }, "Stage"),
    h("select", { id: "stage", onchange: (e) => moveStage(cid, e.target.value) },
      S.stages.map((s) => h("option", { value: s.id, selected: s.id === contact.stage }, s.name))),
    h("h3", { id: "labels-h" }, "Labels"),
    h("ul", { id: "labels", class: "labels", "aria-labelledby": "labels-h" },
      (contact.labels || []).map((l) => h("li", { style: l.color ? `--c:${l.color}` : false, dataset: { label: l.name } },
        l.name, h("button", { type: "button", "aria-label": `Remove label ${l.name}`, onclick: () => removeLabel(cid, l) }, "×")))),
    h("form", { id: "label-form", class: "row", onsubmit: (e) => { e.preventDefault(); addLabel(cid, e.target.elements.label.value); } },
      h("label", { for: "label-input", class: "sr" }, "New label"),
      h("input", { id: "label-input", name: "label", list: "label-names", placeholder: "Add a label", required: true, maxlength: "50" }),
      h("datalist", { id: "label-names" }, S.labels.map((l) => h("option", { value: l.name }))),
      h("button", { type: "submit" }, "Add label")),
    h("h3", { id: "notes-h" }, "Notes"),
    h("ul", { id: "notes", class: "notes", "aria-labelledby": "notes-h" },
      notes.map((n) => h("li", {}, h("p", {}, n.body), h("time", { datetime: n.created_at }, when(n.created_at))))),
    h("form", { id: "note-form", onsubmit: (e) => { e.preventDefault(); addNote(chat, cid, e.target.elements.note); } },
      h("label", { for: "note-input" }, "New note"),
      h("textarea", { id: "note-input", name: "note", rows: "2", required: true }),
      h("button", { type: "submit" }, "Add note")));
  for (const [id, v] of kept) if (v) $("#" + id).value = v;
  if (focused) $("#" + focused)?.focus({ preventScroll: true });
}

// closePanel is the way back to the conversation on a phone, where the
// panel takes the whole screen.
function closePanel() {
  return h("button", { type: "button", class: "panel-close", onclick: () => { togglePanel(false); $("#panel-toggle")?.focus(); } }, "← Conversation");
}

function refreshPanel() {
  const chat = S.route.view === "chat" && S.chats.get(S.route.id);
  return chat ? renderPanel(chat) : Promise.resolve();
}

async function moveStage(contactId, stage) {
  try {
    const c = await api("PATCH", `/api/contacts/${contactId}`, { stage });
    S.contacts.set(String(contactId), c && c.id ? c : { ...S.contacts.get(String(contactId)), stage });
    const name = S.stages.find((s) => s.id === stage)?.name || stage;
    announce(`Moved to ${name}`);
    return true;
  } catch (err) {
    showError(err);
    return false;
  }
}

async function addLabel(contactId, name) {
  name = name.trim();
  if (!name) return;
  try {
    const known = S.labels.find((l) => l.name.toLowerCase() === name.toLowerCase());
    const c = await api("POST", `/api/contacts/${contactId}/labels`, known ? { label_id: known.id } : { name });
    if (c && c.id) S.contacts.set(String(contactId), c);
    if (!known) S.labels = list(await api("GET", "/api/labels"), "labels");
    announce(`Label ${name} added`);
    const box = $("#label-input");
    if (box) box.value = "";
    await refreshPanel(); // keeps the focus where it is now: the user may have moved on
  } catch (err) { showError(err); }
}

async function removeLabel(contactId, l) {
  try {
    const c = await api("DELETE", `/api/contacts/${contactId}/labels/${l.id ?? l.label_id}`);
    const cur = S.contacts.get(String(contactId));
    S.contacts.set(String(contactId), c && c.id ? c : { ...cur, labels: (cur.labels || []).filter((x) => x.id !== l.id) });
    announce(`Label ${l.name} removed`);
    refreshPanel();
  } catch (err) { showError(err); }
}

async function addNote(chat, contactId, box) {
  const body = box.value.trim();
  if (!body) return;
  try {
    const n = await api("POST", `/api/contacts/${contactId}/notes`, { body });
    const notes = S.notes.get(String(contactId)) || [];
    if (!notes.some((x) => x.id === n.id)) notes.push(n);
    S.notes.set(String(contactId), notes);
    box.value = "";
    announce("Note added");
    await renderPanel(chat);
  } catch (err) { showError(err); }
}

// ---- pipeline -------------------------------------------------------------

async function showPipeline() {
  document.title = "Pipeline · Slicehub";
  await Promise.all([loadContacts(), S.chatsLoaded ? null : loadChats()]);
  renderPipeline();
}

function chatOfContact(contactId) {
  for (const c of S.chats.values()) if (String(c.contact_id) === String(contactId)) return c;
  return null;
}

function renderPipeline(focusId) {
  if (S.route.view !== "pipeline") return;
  const board = h("div", { id: "board", class: "board" },
    S.stages.map((s, i) => {
      const cards = [...S.contacts.values()].filter((c) => (c.stage || S.stages[0].id) === s.id);
      return h("section", { class: "column", dataset: { stage: s.id }, "aria-labelledby": `col-${s.id}`,
        ondragover: (e) => { e.preventDefault(); e.currentTarget.classList.add("over"); },
        ondragleave: (e) => e.currentTarget.classList.remove("over"),
        ondrop: (e) => {
          e.preventDefault();
          e.currentTarget.classList.remove("over");
          const id = e.dataTransfer.getData("text/plain");
          if (id) moveCard(id, s.id);
        } },
      h("h2", { id: `col-${s.id}` }, s.name, " ", h("span", { class: "count", "aria-label": `${cards.length} contacts` }, String(cards.length))),
      h("ul", {}, cards.map((c) => h("li", {},
        h("button", { type: "button", class: "card", draggable: "true", dataset: { contactId: String(c.id) },
          "aria-label": `${c.name || c.phone}, ${s.name}. Arrow left or right moves it to another stage.`,
          "aria-keyshortcuts": "ArrowLeft ArrowRight",
          ondragstart: (e) => { e.dataTransfer.setData("text/plain", String(c.id)); e.dataTransfer.effectAllowed = "move"; },
          onkeydown: (e) => {
            const to = e.key === "ArrowRight" ? i + 1 : e.key === "ArrowLeft" ? i - 1 : -1;
            if ((e.key === "ArrowRight" || e.key === "ArrowLeft") && to >= 0 && to < S.stages.length) {
              e.preventDefault();
              moveCard(c.id, S.stages[to].id);
            } else if (e.key === "ArrowDown" || e.key === "ArrowUp") {
              e.preventDefault();
              const all = [...e.currentTarget.closest("ul").querySelectorAll(".card")];
              all[all.indexOf(e.currentTarget) + (e.key === "ArrowDown" ? 1 : -1)]?.focus();
            }
          },
          onclick: () => { const ch = chatOfContact(c.id); if (ch) go(`/app/chats/${ch.id}`); } },
        h("span", { class: "who" }, c.name || c.phone),
        h("span", { class: "labels" }, (c.labels || []).map((l) => l.name).join(", ")))))));
    }));
  $("#main").replaceChildren(h("h1", { class: "sr" }, "Pipeline"), board);
  if (focusId) $(`.card[data-contact-id="${focusId}"]`)?.focus();
}

async function moveCard(contactId, stage) {
  const c = S.contacts.get(String(contactId));
  if (!c || c.stage === stage) return;
  const was = c.stage;
  c.stage = stage; // at once; put back if the slice refuses
  renderPipeline(contactId);
  if (!(await moveStage(contactId, stage))) {
    c.stage = was;
  }
  renderPipeline(contactId);
}

// ---- search ---------------------------------------------------------------

async function showSearch(q) {
  $("#search-q").value = q;
  document.title = `Search: ${q} · Slicehub`;
  const out = h("div", { id: "results", class: "results" });
  $("#main").replaceChildren(h("h1", {}, q ? `Results for “${q}”` : "Search"), out);
  if (!q.trim()) return;
  const [data] = await Promise.all([api("GET", "/api/search?q=" + encodeURIComponent(q)), S.chatsLoaded ? null : loadChats()]);
  const contacts = list(data, "contacts");
  const messages = list(data, "messages");
  out.replaceChildren(
    h("h2", { id: "res-contacts" }, `Contacts (${contacts.length})`),
    h("ul", { "aria-labelledby": "res-contacts", class: "hits" }, contacts.map((c) => {
      const ch = chatOfContact(c.id);
      return h("li", {}, ch ? h("a", { href: `/app/chats/${ch.id}` }, c.name || c.phone) : (c.name || c.phone), " ",
        h("span", { class: "phone" }, c.phone || ""));
    })),
    h("h2", { id: "res-messages" }, `Messages (${messages.length})`),
    h("ul", { "aria-labelledby": "res-messages", class: "hits" }, messages.map((m) => {
      const ch = S.chats.get(String(m.chat_id));
      return h("li", { dataset: { msgId: String(m.id) } },
        h("a", { href: `/app/chats/${m.chat_id}` }, h("span", { class: "who" }, ch ? chatName(ch) : "Chat"), " ",
          h("span", { class: "last" }, m.body || ""), " ", h("time", {}, when(m.sent_at))));
    })));
  announce(`${contacts.length} contacts and ${messages.length} messages found`);
}

// ---- development phone ----------------------------------------------------

async function showPhone() {
  document.title = "Development phone · Slicehub";
  const data = await api("GET", "/api/dev/phone/messages");
  const msgs = list(data, "messages");
  $("#main").replaceChildren(
    h("h1", {}, "Development phone"),
    h("p", {}, "A stand-in for somebody else's phone: what it sends arrives in your WhatsApp, and your answers show below."),
    h("form", { id: "phone-form", class: "phone-form", onsubmit: async (e) => {
      e.preventDefault();
      const f = e.target.elements;
      try {
        await api("POST", "/api/dev/phone/messages", { from: f.from.value, name: f.name.value, body: f.body.value });
        f.body.value = "";
        announce("Sent from the development phone");
        showPhone();
      } catch (err) { showError(err); }
    } },
    h("label", { for: "ph-from" }, "From (phone number)"), h("input", { id: "ph-from", name: "from", value: "+15550100", required: true }),
    h("label", { for: "ph-name" }, "Name"), h("input", { id: "ph-name", name: "name", value: "Ada Lovelace" }),
    h("label", { for: "ph-body" }, "Message"), h("textarea", { id: "ph-body", name: "body", required: true }),
    h("button", { type: "submit" }, "Send to my WhatsApp")),
    h("h2", {}, "Received by the phone"),
    h("ul", { class: "hits" }, msgs.map((m) => h("li", {}, `${m.to || m.chat || ""} `, m.body || "", " ", h("time", {}, when(m.sent_at || m.at))))));
}

// ---- live events ----------------------------------------------------------

function setLive(on, text) {
  const el = $("#live");
  el.dataset.live = on ? "on" : "off";
  el.textContent = text;
}

function chatIdOf(d) { return d.chat_id ?? d.chatId ?? (d.chat && d.chat.id); }

// live applies one event. The slice's events (slice/socketio.go): state,
// message, message_status, chat, contact, note, history. The payload's
// shape decides too, so that a renamed event still lands.
function live(event, d) {
  if (!d || typeof d !== "object") return;
  const e = event.toLowerCase();
  if (e === "state") {
    S.whatsapp = d.state || "";
    setLive(true, S.whatsapp === "connected" || !S.whatsapp ? "live" : "WhatsApp: " + S.whatsapp);
    return;
  }
  if (e === "history") {
    // The slice finished importing WhatsApp's history: show it.
    if (d.done) resync();
    return;
  }
  if (e.includes("status") || (e.includes("message") && d.status && d.id != null && d.body === undefined && !d.message)) {
    const chatId = chatIdOf(d);
    for (const [cid, hist] of S.history) {
      if (chatId != null && String(chatId) !== cid) continue;
      const m = hist.items.find((x) => String(x.id) === String(d.id ?? d.message_id));
      if (m && (STATUS_RANK[d.status] ?? -1) > (STATUS_RANK[m.status] ?? -1)) {
        m.status = d.status;
        renderMessages(cid);
      }
    }
    return;
  }
  if (e.includes("message")) {
    const m = d.message || d;
    const cid = chatIdOf(m) ?? chatIdOf(d);
    if (cid == null) return;
    const chat = S.chats.get(String(cid));
    const open = S.route.view === "chat" && S.route.id === String(cid);
    if (S.history.has(String(cid))) {
      const hist = historyOf(cid);
      if (m.from_me && !hist.items.some((x) => String(x.id) === String(m.id))) {
        // Our own send, announced before its answer came back: it is the
        // pending bubble already shown, not a second one.
        const tmp = hist.items.find((x) => String(x.id).startsWith("tmp-") && x.body === m.body);
        if (tmp) tmp.id = m.id;
      }
      mergeMessage({ ...m, chat_id: cid });
    }
    if (chat) {
      chat.last_message = m;
      if (!m.from_me && !open) chat.unread = (chat.unread || 0) + 1;
    } else if (d.chat) {
      S.chats.set(String(cid), { ...d.chat, last_message: m });
    } else {
      loadChats().then(renderChatList).catch(() => {});
    }
    if (open && !m.from_me && document.visibilityState === "visible") markRead(cid);
    renderChatList();
    renderMessages(cid);
    return;
  }
  if (e.includes("chat")) {
    const c = d.chat || d;
    if (c.id == null) return;
    const id = String(c.id);
    const open = S.route.view === "chat" && S.route.id === id;
    const prev = S.chats.get(id) || {};
    const next = { ...prev, ...c };
    if (open) next.unread = 0;
    if (!c.last_message && prev.last_message) next.last_message = prev.last_message;
    S.chats.set(id, next);
    renderChatList();
    return;
  }
  if (e.includes("contact")) {
    const c = d.contact || d;
    if (c.id == null) return;
    S.contacts.set(String(c.id), { ...S.contacts.get(String(c.id)), ...c });
    if (S.route.view === "pipeline") renderPipeline(document.activeElement?.dataset?.contactId);
    else if (S.route.view === "chat" && String(S.chats.get(S.route.id)?.contact_id) === String(c.id)) refreshPanel();
    return;
  }
  if (e.includes("note")) {
    const n = d.note || d;
    const notes = S.notes.get(String(n.contact_id));
    if (notes && !notes.some((x) => x.id === n.id)) {
      notes.push(n);
      refreshPanel();
    }
  }
}

// resync reloads what is on screen after the live connection came back.
async function resync() {
  try {
    await loadChats();
    const open = S.route.view === "chat" ? S.route.id : "";
    for (const id of [...S.history.keys()]) if (id !== open) S.history.delete(id);
    if (open) {
      await loadHistory(open, false);
      renderMessages(open);
    }
    renderChatList();
    if (S.route.view === "pipeline") { await loadContacts(); renderPipeline(); }
  } catch (err) { showError(err); }
}

// ---- start ----------------------------------------------------------------

function keyboard(e) {
  const t = e.target;
  const typing = t.closest && t.closest("input, textarea, select, [contenteditable]");
  if (e.key === "/" && !typing) {
    e.preventDefault();
    $("#search-q").focus();
  } else if (e.altKey && e.key === "1") {
    e.preventDefault(); go("/app/");
  } else if (e.altKey && e.key === "2") {
    e.preventDefault(); go("/app/pipeline");
  } else if (e.key === "Escape") {
    if (S.panelOpen) togglePanel(false);
    else if (S.route.view === "chat") { go("/app/"); $(`#chat-list a`)?.focus(); }
  } else if ((e.key === "ArrowDown" || e.key === "ArrowUp") && t.closest && t.closest("#chat-list")) {
    e.preventDefault();
    const links = [...document.querySelectorAll("#chat-list a")];
    links[Math.max(0, Math.min(links.length - 1, links.indexOf(t) + (e.key === "ArrowDown" ? 1 : -1)))]?.focus();
  }
}

function start() {
  document.addEventListener("click", (e) => {
    const a = e.target.closest && e.target.closest("a[href^='/app/']");
    if (!a || e.ctrlKey || e.metaKey || e.shiftKey || e.button !== 0) return;
    e.preventDefault();
    go(a.getAttribute("href"));
  });
  document.addEventListener("keydown", keyboard);
  window.addEventListener("popstate", route);
  $("#search-form").addEventListener("submit", (e) => {
    e.preventDefault();
    go("/app/search?q=" + encodeURIComponent($("#search-q").value.trim()));
  });
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible" && S.route.view === "chat") {
      const c = S.chats.get(S.route.id);
      if (c && c.unread) { markRead(c.id); renderChatList(); }
    }
  });

  const sock = new Socket("/socket.io/");
  let first = true;
  sock.on("$connect", () => {
    setLive(true, "live");
    if (!first) resync();
    first = false;
  });
  sock.on("$disconnect", () => setLive(false, "reconnecting…"));
  sock.on("*", live);
  sock.open();
  window.slicehubSocket = sock; // for the browser tests

  loadStagesAndLabels().catch(() => {});
  api("GET", "/api/dev/phone/messages").then(() => { S.devPhone = true; $("#nav-phone").hidden = false; }, () => {});
  route();
}

start();
