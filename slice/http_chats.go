package slice

import (
	"context"
	"net/http"
	"strconv"

	"github.com/slicehub/slicehub"
	"github.com/slicehub/slicehub/slice/standin"
)

// Conversations is what the chat, search, label and stage handlers need;
// *CRM implements it over PostgreSQL. A Store that does not implement it
// (a test's) makes those endpoints answer 503.
type Conversations interface {
	Chats(ctx context.Context, limit int) ([]Chat, error)
	Chat(ctx context.Context, id int64) (Chat, error)
	Messages(ctx context.Context, chatID, before int64, limit int) ([]Message, error)
	CreateOutgoing(ctx context.Context, chatID int64, in NewOutgoing) (Outgoing, bool, error)
	MarkRead(ctx context.Context, chatID int64) (Chat, error)
	Search(ctx context.Context, q string, limit int) (SearchResult, error)
	Labels(ctx context.Context) ([]Label, error)
	CreateLabel(ctx context.Context, in NewLabel) (Label, error)
	AddLabel(ctx context.Context, contactID int64, ref LabelRef) (Contact, error)
	RemoveLabel(ctx context.Context, contactID, labelID int64) (Contact, error)
	UpdateContact(ctx context.Context, id int64, p ContactPatch) (Contact, error)
}

// DevPhone is the stand-in's phone (*standin.Server), for the development
// endpoints.
type DevPhone interface {
	Deliver(from, name, body string) (string, error)
	Sent() []standin.Sent
}

// SetSyncer sets who sends queued messages and marks chats read on
// WhatsApp; nil: messages stay queued.
func (h *Handler) SetSyncer(y *Syncer) { h.syncer = y }

// SetDevPhone enables /api/dev/phone/messages (development only).
func (h *Handler) SetDevPhone(p DevPhone) { h.devPhone = p }

// SetAdapterStatus sets where GET /api/status/adapter reads from.
func (h *Handler) SetAdapterStatus(fn func() AdapterStatus) { h.adapterStatus = fn }

func (h *Handler) chatRoutes(route func(string, map[string]http.HandlerFunc)) {
	route("/api/chats", map[string]http.HandlerFunc{http.MethodGet: h.listChats})
	route("/api/chats/{id}", map[string]http.HandlerFunc{http.MethodGet: h.getChat})
	route("/api/chats/{id}/messages", map[string]http.HandlerFunc{http.MethodGet: h.listMessages, http.MethodPost: h.sendMessage})
	route("/api/chats/{id}/read", map[string]http.HandlerFunc{http.MethodPost: h.readChat})
	route("/api/search", map[string]http.HandlerFunc{http.MethodGet: h.search})
	route("/api/labels", map[string]http.HandlerFunc{http.MethodGet: h.listLabels, http.MethodPost: h.createLabel})
	route("/api/stages", map[string]http.HandlerFunc{http.MethodGet: h.listStages})
	route("/api/contacts/{id}/labels", map[string]http.HandlerFunc{http.MethodPost: h.addLabel})
	route("/api/contacts/{id}/labels/{label}", map[string]http.HandlerFunc{http.MethodDelete: h.removeLabel})
	route("/api/status/adapter", map[string]http.HandlerFunc{http.MethodGet: h.adapterState})
	route("/api/dev/phone/messages", map[string]http.HandlerFunc{http.MethodGet: h.devPhoneSent, http.MethodPost: h.devPhoneDeliver})
}

// conv returns the request's Conversations, or writes 503.
func (h *Handler) conv(w http.ResponseWriter, r *http.Request) Conversations {
	c, ok := backendOf(r).crm.(Conversations)
	if !ok {
		writeError(w, h.log, slicehub.Errorf("slice.http", slicehub.KindUnavailable, "no_conversations", "this slice stores no conversations"))
		return nil
	}
	return c
}

// chatRequest is the prologue of the /api/chats/{id} handlers.
func (h *Handler) chatRequest(w http.ResponseWriter, r *http.Request) (Conversations, int64, bool) {
	c := h.conv(w, r)
	if c == nil {
		return nil, 0, false
	}
	id, err := pathInt(r, "id", "invalid_id", "the chat id must be a positive integer")
	if err != nil {
		writeError(w, h.log, err)
		return nil, 0, false
	}
	return c, id, true
}

// limitParam reads ?limit=1..maxPageLen, default def.
func limitParam(r *http.Request, def int) (int, error) {
	s := r.URL.Query().Get("limit")
	if s == "" {
		return def, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > maxPageLen {
		return 0, slicehub.Errorf("slice.http", slicehub.KindInvalid, "invalid_limit", "limit must be between 1 and %d", maxPageLen)
	}
	return n, nil
}

func (h *Handler) listChats(w http.ResponseWriter, r *http.Request) {
	c := h.conv(w, r)
	if c == nil {
		return
	}
	limit, err := limitParam(r, maxPageLen)
	if err != nil {
		writeError(w, h.log, err)
		return
	}
	chats, err := c.Chats(r.Context(), limit)
	if err != nil {
		writeError(w, h.log, err)
		return
	}
	if chats == nil {
		chats = []Chat{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"chats": chats})
}

func (h *Handler) getChat(w http.ResponseWriter, r *http.Request) {
	c, id, ok := h.chatRequest(w, r)
	if !ok {
		return
	}
	chat, err := c.Chat(r.Context(), id)
	if err != nil {
		writeError(w, h.log, err)
		return
	}
	writeJSON(w, http.StatusOK, chat)
}

func (h *Handler) listMessages(w http.ResponseWriter, r *http.Request) {
	c, id, ok := h.chatRequest(w, r)
	if !ok {
		return
	}
	limit, err := limitParam(r, 50)
	if err != nil {
		writeError(w, h.log, err)
		return
	}
	var before int64
	if s := r.URL.Query().Get("before"); s != "" {
		if before, err = strconv.ParseInt(s, 10, 64); err != nil || before <= 0 {
			writeError(w, h.log, slicehub.Errorf("slice.http", slicehub.KindInvalid, "invalid_before", "before must be a message id"))
			return
		}
	}
	msgs, err := c.Messages(r.Context(), id, before, limit)
	if err != nil {
		writeError(w, h.log, err)
		return
	}
	if msgs == nil {
		msgs = []Message{}
	}
	// next_before pages further back; null once the start is reached.
	var next *int64
	if len(msgs) == limit {
		next = &msgs[0].ID
	}
	writeJSON(w, http.StatusOK, map[string]any{"messages": msgs, "next_before": next})
}

func (h *Handler) sendMessage(w http.ResponseWriter, r *http.Request) {
	c, id, ok := h.chatRequest(w, r)
	if !ok {
		return
	}
	var in NewOutgoing
	if err := decodeJSON(w, r, &in); err != nil {
		writeError(w, h.log, err)
		return
	}
	out, created, err := c.CreateOutgoing(r.Context(), id, in)
	if err != nil {
		writeError(w, h.log, err)
		return
	}
	if !created {
		w.Header().Set("Idempotent-Replayed", "true")
	}
	// 202: stored and queued; the status events say when WhatsApp has it.
	writeJSON(w, http.StatusAccepted, out.Message)
	if created {
		h.push("message", out.Message)
		if h.syncer != nil {
			h.syncer.Kick()
		}
	}
}

func (h *Handler) readChat(w http.ResponseWriter, r *http.Request) {
	c, id, ok := h.chatRequest(w, r)
	if !ok {
		return
	}
	chat, err := c.MarkRead(r.Context(), id)
	if err != nil {
		writeError(w, h.log, err)
		return
	}
	writeJSON(w, http.StatusOK, chat)
	h.push("chat", chat)
	if h.syncer != nil {
		h.syncer.Seen(chat.WAID)
	}
}

func (h *Handler) search(w http.ResponseWriter, r *http.Request) {
	c := h.conv(w, r)
	if c == nil {
		return
	}
	limit, err := limitParam(r, 50)
	if err != nil {
		writeError(w, h.log, err)
		return
	}
	res, err := c.Search(r.Context(), r.URL.Query().Get("q"), limit)
	if err != nil {
		writeError(w, h.log, err)
		return
	}
	writeJSON(w, http.StatusOK, res)
}

func (h *Handler) listLabels(w http.ResponseWriter, r *http.Request) {
	c := h.conv(w, r)
	if c == nil {
		return
	}
	ls, err := c.Labels(r.Context())
	if err != nil {
		writeError(w, h.log, err)
		return
	}
	if ls == nil {
		ls = []Label{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"labels": ls})
}

func (h *Handler) createLabel(w http.ResponseWriter, r *http.Request) {
	c := h.conv(w, r)
	if c == nil {
		return
	}
	var in NewLabel
	if err := decodeJSON(w, r, &in); err != nil {
		writeError(w, h.log, err)
		return
	}
	l, err := c.CreateLabel(r.Context(), in)
	if err != nil {
		writeError(w, h.log, err)
		return
	}
	writeJSON(w, http.StatusCreated, l)
}

func (h *Handler) listStages(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"stages": Stages})
}

// contactChange is the shape of every handler that changes a contact: it
// answers with the contact and pushes it to the user's other tabs.
func (h *Handler) contactChange(w http.ResponseWriter, r *http.Request, change func(c Conversations, id int64) (Contact, error)) {
	c := h.conv(w, r)
	if c == nil {
		return
	}
	id, err := pathID(r)
	if err != nil {
		writeError(w, h.log, err)
		return
	}
	ct, err := change(c, id)
	if err != nil {
		writeError(w, h.log, err)
		return
	}
	writeJSON(w, http.StatusOK, ct)
	h.push("contact", ct)
}

func (h *Handler) patchContact(w http.ResponseWriter, r *http.Request) {
	h.contactChange(w, r, func(c Conversations, id int64) (Contact, error) {
		var p ContactPatch
		if err := decodeJSON(w, r, &p); err != nil {
			return Contact{}, err
		}
		return c.UpdateContact(r.Context(), id, p)
	})
}

func (h *Handler) addLabel(w http.ResponseWriter, r *http.Request) {
	h.contactChange(w, r, func(c Conversations, id int64) (Contact, error) {
		var ref LabelRef
		if err := decodeJSON(w, r, &ref); err != nil {
			return Contact{}, err
		}
		return c.AddLabel(r.Context(), id, ref)
	})
}

func (h *Handler) removeLabel(w http.ResponseWriter, r *http.Request) {
	h.contactChange(w, r, func(c Conversations, id int64) (Contact, error) {
		label, err := pathInt(r, "label", "invalid_label", "the label id must be a positive integer")
		if err != nil {
			return Contact{}, err
		}
		return c.RemoveLabel(r.Context(), id, label)
	})
}

func (h *Handler) adapterState(w http.ResponseWriter, r *http.Request) {
	if h.adapterStatus == nil {
		notFound(w)
		return
	}
	writeJSON(w, http.StatusOK, h.adapterStatus())
}

// DevPhoneMessage is the body of POST /api/dev/phone/messages.
type DevPhoneMessage struct {
	From string `json:"from"`
	Name string `json:"name"`
	Body string `json:"body"`
}

func (h *Handler) devPhoneDeliver(w http.ResponseWriter, r *http.Request) {
	if h.devPhone == nil {
		notFound(w)
		return
	}
	var in DevPhoneMessage
	if err := decodeJSON(w, r, &in); err != nil {
		writeError(w, h.log, err)
		return
	}
	const op = "slice.dev_phone"
	if _, err := normalizePhone(in.From); err != nil {
		writeError(w, h.log, err)
		return
	}
	if err := checkText(op, "body", in.Body, maxMessageLen); err != nil {
		writeError(w, h.log, err)
		return
	}
	id, err := h.devPhone.Deliver(in.From, in.Name, in.Body)
	if err != nil {
		writeError(w, h.log, slicehub.Errorf(op, slicehub.KindInvalid, "invalid_message", "%s", err.Error()))
		return
	}
	writeJSON(w, http.StatusAccepted, map[string]string{"id": id})
}

func (h *Handler) devPhoneSent(w http.ResponseWriter, r *http.Request) {
	if h.devPhone == nil {
		notFound(w)
		return
	}
	sent := h.devPhone.Sent()
	if sent == nil {
		sent = []standin.Sent{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"messages": sent})
}

// pathInt parses a positive integer path value.
func pathInt(r *http.Request, name, code, msg string) (int64, error) {
	id, err := strconv.ParseInt(r.PathValue(name), 10, 64)
	if err != nil || id <= 0 {
		return 0, slicehub.Errorf("slice.http", slicehub.KindInvalid, code, "%s", msg)
	}
	return id, nil
}
