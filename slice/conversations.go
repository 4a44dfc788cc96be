package slice

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/slicehub/slicehub"
)

// Message statuses, in the order WhatsApp moves an outgoing message along.
// "failed" ranks below "sent": a message given up as failed that WhatsApp
// later reports sent is sent (the truth wins).
const (
	StatusPending   = "pending"
	StatusFailed    = "failed"
	StatusSent      = "sent"
	StatusDelivered = "delivered"
	StatusRead      = "read"
)

// statusRankSQL ranks a status column or value in SQL (see the constants).
func statusRankSQL(expr string) string {
	return "array_position(ARRAY['pending','failed','sent','delivered','read']::text[], " + expr + ")"
}

// statusFromAck maps WhatsApp Web's message ack code to a status. The codes
// are whatsapp-web.js's MessageAck (v1.34.6, src/util/Constants.js):
// ACK_ERROR -1, ACK_PENDING 0, ACK_SERVER 1, ACK_DEVICE 2, ACK_READ 3,
// ACK_PLAYED 4.
func statusFromAck(ack int) string {
	switch {
	case ack < 0:
		return StatusFailed
	case ack == 0:
		return StatusPending
	case ack == 1:
		return StatusSent
	case ack == 2:
		return StatusDelivered
	}
	return StatusRead
}

// Chat is one WhatsApp conversation as the API shows it.
type Chat struct {
	ID          int64    `json:"id"`
	WAID        string   `json:"wa_id"`
	Name        string   `json:"name"`
	Phone       string   `json:"phone"`
	ContactID   *int64   `json:"contact_id"`
	Unread      int      `json:"unread"`
	LastMessage *Message `json:"last_message"`
}

// Media describes an attachment; the slice keeps only this placeholder.
type Media struct {
	Type     string `json:"type"`
	Mimetype string `json:"mimetype,omitempty"`
	Size     int64  `json:"size"`
}

// Message is one WhatsApp message as the API shows it.
type Message struct {
	ID     int64     `json:"id"`
	ChatID int64     `json:"chat_id"`
	WAID   string    `json:"wa_id"`
	FromMe bool      `json:"from_me"`
	Body   string    `json:"body"`
	Type   string    `json:"type"`
	Media  *Media    `json:"media,omitempty"`
	Status string    `json:"status"`
	SentAt time.Time `json:"sent_at"`
}

// textTypes are WhatsApp message types stored as text; every other type is
// a media placeholder.
var textTypes = map[string]bool{"chat": true, "": true}

// waChat and waMessage are what the page adapter reports (adapter.js's
// chatOf and msgOf): plain values read from WhatsApp Web's models.
type waChat struct {
	ID     string `json:"id"`
	Name   string `json:"name"`
	Unread int    `json:"unread"`
	T      int64  `json:"t"`
}

type waMessage struct {
	ID       string `json:"id"`
	Chat     string `json:"chat"`
	FromMe   bool   `json:"fromMe"`
	Body     string `json:"body"`
	Type     string `json:"type"`
	T        int64  `json:"t"`
	Ack      int    `json:"ack"`
	Mimetype string `json:"mimetype"`
	Size     int64  `json:"size"`
	Notify   string `json:"notifyName"`
}

// phoneOfWA returns "+<digits>" for a one-to-one chat id ("15550001@c.us"),
// "" for anything else (groups, broadcast lists).
func phoneOfWA(waID string) string {
	user, server, ok := strings.Cut(waID, "@")
	if !ok || server != "c.us" {
		return ""
	}
	p, err := normalizePhone("+" + user)
	if err != nil {
		return ""
	}
	return p
}

// Stored is what storing a batch from WhatsApp changed: the chat, the
// messages new to the slice and the ones whose status moved.
type Stored struct {
	Chat    Chat
	New     []Message
	Changed []Message
}

// contactForChat finds or creates the contact of a one-to-one chat: the
// contact already linked to the WhatsApp id, else one typed in by hand with
// the same phone (merged: it gains the WhatsApp id), else a new one.
func contactForChat(ctx context.Context, tx pgx.Tx, c waChat) (*int64, error) {
	phone := phoneOfWA(c.ID)
	if phone == "" {
		return nil, nil
	}
	var id int64
	err := tx.QueryRow(ctx, `SELECT id FROM contacts WHERE wa_id = $1`, c.ID).Scan(&id)
	if err == nil {
		return &id, nil
	}
	if !errors.Is(err, pgx.ErrNoRows) {
		return nil, err
	}
	err = tx.QueryRow(ctx, `UPDATE contacts SET wa_id = $1
		WHERE id = (SELECT id FROM contacts WHERE phone = $2 AND wa_id IS NULL ORDER BY id LIMIT 1)
		RETURNING id`, c.ID, phone).Scan(&id)
	if err == nil {
		return &id, nil
	}
	if !errors.Is(err, pgx.ErrNoRows) {
		return nil, err
	}
	name := strings.TrimSpace(c.Name)
	if name == "" || checkText("", "name", name, maxNameLen) != nil {
		name = phone
	}
	err = tx.QueryRow(ctx, `INSERT INTO contacts (name, phone, wa_id) VALUES ($1, $2, $3)
		ON CONFLICT (wa_id) DO UPDATE SET wa_id = EXCLUDED.wa_id RETURNING id`, name, phone, c.ID).Scan(&id)
	if err != nil {
		return nil, err
	}
	return &id, nil
}

// StoreFromWhatsApp upserts one chat and a batch of its messages in one
// transaction, by WhatsApp id: importing the same message twice, from the
// history, a catch-up and a live event, stores it once. A status only moves
// forward. unreadKnown says whether c.Unread is WhatsApp's count (the
// chat's own report) rather than a guess.
func (c *CRM) StoreFromWhatsApp(ctx context.Context, chat waChat, msgs []waMessage, unreadKnown bool) (Stored, error) {
	const op = "slice.store_whatsapp"
	var out Stored
	if chat.ID == "" || len(chat.ID) > 200 {
		return out, slicehub.Errorf(op, slicehub.KindInvalid, "invalid_chat", "invalid WhatsApp chat id")
	}
	err := pgx.BeginFunc(ctx, c.pool, func(tx pgx.Tx) error {
		contactID, err := contactForChat(ctx, tx, chat)
		if err != nil {
			return err
		}
		var lastT int64
		for _, m := range msgs {
			lastT = max(lastT, m.T)
		}
		lastT = max(lastT, chat.T)
		var lastAt *time.Time
		if lastT > 0 {
			t := time.Unix(lastT, 0).UTC()
			lastAt = &t
		}
		name := strings.TrimSpace(chat.Name)
		var chatID int64
		err = tx.QueryRow(ctx, `INSERT INTO chats (wa_id, contact_id, name, unread, last_message_at)
			VALUES ($1, $2, $3, $4, $5)
			ON CONFLICT (wa_id) DO UPDATE SET
				contact_id = COALESCE(chats.contact_id, EXCLUDED.contact_id),
				name = CASE WHEN EXCLUDED.name <> '' THEN EXCLUDED.name ELSE chats.name END,
				unread = CASE WHEN $6 THEN EXCLUDED.unread ELSE chats.unread END,
				last_message_at = GREATEST(chats.last_message_at, EXCLUDED.last_message_at)
			RETURNING id`, chat.ID, contactID, name, max(chat.Unread, 0), lastAt, unreadKnown).Scan(&chatID)
		if err != nil {
			return err
		}
		if len(msgs) > 0 {
			if out.New, out.Changed, err = upsertMessages(ctx, tx, chatID, msgs); err != nil {
				return err
			}
		}
		out.Chat, err = chatByID(ctx, tx, chatID)
		return err
	})
	if err != nil {
		return Stored{}, dbError(op, err)
	}
	return out, nil
}

// upsertMessages stores msgs of one chat in one statement.
func upsertMessages(ctx context.Context, tx pgx.Tx, chatID int64, msgs []waMessage) (created, changed []Message, err error) {
	n := len(msgs)
	ids, bodies, types, statuses, mimes := make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]*string, n)
	fromMe, sizes, times := make([]bool, n), make([]*int64, n), make([]time.Time, n)
	for i, m := range msgs {
		ids[i], fromMe[i], types[i] = m.ID, m.FromMe, m.Type
		if types[i] == "" {
			types[i] = "chat"
		}
		bodies[i] = strings.ToValidUTF8(strings.ReplaceAll(m.Body, "\x00", ""), "\uFFFD")
		statuses[i] = statusFromAck(m.Ack)
		if !m.FromMe && statuses[i] == StatusPending {
			// An incoming message is on this device: received.
			statuses[i] = StatusDelivered
		}
		if !textTypes[types[i]] {
			mt, sz := m.Mimetype, m.Size
			mimes[i], sizes[i] = &mt, &sz
		}
		times[i] = time.Unix(m.T, 0).UTC()
	}
	rows, err := tx.Query(ctx, `
		WITH input AS (
			SELECT * FROM unnest($2::text[], $3::bool[], $4::text[], $5::text[], $6::text[], $7::text[], $8::bigint[], $9::timestamptz[])
				AS t(wa_id, from_me, body, type, status, media_mimetype, media_size, sent_at)
		), old AS (
			SELECT m.wa_id, m.status FROM messages m JOIN input USING (wa_id)
		), up AS (
			INSERT INTO messages (chat_id, wa_id, from_me, body, type, status, media_mimetype, media_size, sent_at)
			SELECT $1, wa_id, from_me, body, type, status, media_mimetype, media_size, sent_at FROM input
			ON CONFLICT (wa_id) DO UPDATE SET
				status = EXCLUDED.status,
				body = CASE WHEN messages.body = '' THEN EXCLUDED.body ELSE messages.body END,
				updated_at = now()
			WHERE `+statusRankSQL("EXCLUDED.status")+` > `+statusRankSQL("messages.status")+`
			RETURNING id, chat_id, wa_id, from_me, body, type, media_mimetype, media_size, status, sent_at
		)
		SELECT up.*, old.status IS NULL FROM up LEFT JOIN old USING (wa_id) ORDER BY up.sent_at, up.id`,
		chatID, ids, fromMe, bodies, types, statuses, mimes, sizes, times)
	if err != nil {
		return nil, nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var m Message
		var isNew bool
		var mime *string
		var size *int64
		if err := rows.Scan(&m.ID, &m.ChatID, &m.WAID, &m.FromMe, &m.Body, &m.Type, &mime, &size, &m.Status, &m.SentAt, &isNew); err != nil {
			return nil, nil, err
		}
		m.Media = mediaOf(m.Type, mime, size)
		if isNew {
			created = append(created, m)
		} else {
			changed = append(changed, m)
		}
	}
	return created, changed, rows.Err()
}

func mediaOf(typ string, mime *string, size *int64) *Media {
	if textTypes[typ] {
		return nil
	}
	md := &Media{Type: typ}
	if mime != nil {
		md.Mimetype = *mime
	}
	if size != nil {
		md.Size = *size
	}
	return md
}

const messageCols = `m.id, m.chat_id, m.wa_id, m.from_me, m.body, m.type, m.media_mimetype, m.media_size, m.status, m.sent_at`

// scanMessage scans messageCols, then extra columns into extra.
func scanMessage(r pgx.Row, extra ...any) (Message, error) {
	var m Message
	var mime *string
	var size *int64
	err := r.Scan(append([]any{&m.ID, &m.ChatID, &m.WAID, &m.FromMe, &m.Body, &m.Type, &mime, &size, &m.Status, &m.SentAt}, extra...)...)
	m.Media = mediaOf(m.Type, mime, size)
	return m, err
}

// chatQuery selects chats with their contact's phone and their newest
// message (a lateral join on messages_chat_time: one index probe a chat).
const chatQuery = `SELECT c.id, c.wa_id, COALESCE(NULLIF(c.name, ''), ct.name, ''), COALESCE(ct.phone, ''), c.contact_id, c.unread,
		lm.id, lm.chat_id, lm.wa_id, lm.from_me, lm.body, lm.type, lm.media_mimetype, lm.media_size, lm.status, lm.sent_at
	FROM chats c
	LEFT JOIN contacts ct ON ct.id = c.contact_id
	LEFT JOIN LATERAL (SELECT * FROM messages m WHERE m.chat_id = c.id ORDER BY m.sent_at DESC, m.id DESC LIMIT 1) lm ON true`

func scanChat(r pgx.Row) (Chat, error) {
	var c Chat
	var lm struct {
		id, chatID  *int64
		waID, body  *string
		fromMe      *bool
		typ, status *string
		mime        *string
		size        *int64
		sentAt      *time.Time
	}
	err := r.Scan(&c.ID, &c.WAID, &c.Name, &c.Phone, &c.ContactID, &c.Unread,
		&lm.id, &lm.chatID, &lm.waID, &lm.fromMe, &lm.body, &lm.typ, &lm.mime, &lm.size, &lm.status, &lm.sentAt)
	if err != nil {
		return c, err
	}
	if c.Name == "" {
		c.Name = c.Phone
	}
	if lm.id != nil {
		c.LastMessage = &Message{ID: *lm.id, ChatID: *lm.chatID, WAID: *lm.waID, FromMe: *lm.fromMe, Body: *lm.body,
			Type: *lm.typ, Status: *lm.status, SentAt: *lm.sentAt, Media: mediaOf(*lm.typ, lm.mime, lm.size)}
	}
	return c, nil
}

type querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

func chatByID(ctx context.Context, q querier, id int64) (Chat, error) {
	return scanChat(q.QueryRow(ctx, chatQuery+` WHERE c.id = $1`, id))
}

// notFoundAs turns a missing row into a not-found error with code.
func notFoundAs(op, code, msg string, err error) error {
	if errors.Is(err, pgx.ErrNoRows) {
		return slicehub.Errorf(op, slicehub.KindNotFound, code, "%s", msg)
	}
	return dbError(op, err)
}

// Chats returns the chats, the most recent conversation first.
func (c *CRM) Chats(ctx context.Context, limit int) ([]Chat, error) {
	const op = "slice.chats"
	rows, err := c.pool.Query(ctx, chatQuery+` ORDER BY c.last_message_at DESC NULLS LAST, c.id DESC LIMIT $1`, limit)
	if err != nil {
		return nil, dbError(op, err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Chat, error) { return scanChat(r) })
	if err != nil {
		return nil, dbError(op, err)
	}
	return out, nil
}

// Chat returns one chat.
func (c *CRM) Chat(ctx context.Context, id int64) (Chat, error) {
	ch, err := chatByID(ctx, c.pool, id)
	if err != nil {
		return Chat{}, notFoundAs("slice.chat", "chat_not_found", "no such chat", err)
	}
	return ch, nil
}

// Messages returns up to limit messages of a chat older than the message
// before (0: the newest), oldest first: a chat view pages back by passing
// the first id it holds.
func (c *CRM) Messages(ctx context.Context, chatID, before int64, limit int) ([]Message, error) {
	const op = "slice.messages"
	if _, err := c.Chat(ctx, chatID); err != nil {
		return nil, err
	}
	q := `SELECT ` + messageCols + ` FROM messages m WHERE m.chat_id = $1`
	args := []any{chatID, limit}
	if before > 0 {
		q += ` AND (m.sent_at, m.id) < (SELECT sent_at, id FROM messages WHERE id = $3 AND chat_id = $1)`
		args = append(args, before)
	}
	rows, err := c.pool.Query(ctx, `SELECT * FROM (`+q+` ORDER BY m.sent_at DESC, m.id DESC LIMIT $2) m ORDER BY sent_at, id`, args...)
	if err != nil {
		return nil, dbError(op, err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Message, error) { return scanMessage(r) })
	if err != nil {
		return nil, dbError(op, err)
	}
	return out, nil
}

// MarkRead sets a chat's unread count to zero.
func (c *CRM) MarkRead(ctx context.Context, chatID int64) (Chat, error) {
	const op = "slice.mark_read"
	tag, err := c.pool.Exec(ctx, `UPDATE chats SET unread = 0 WHERE id = $1`, chatID)
	if err != nil {
		return Chat{}, dbError(op, err)
	}
	if tag.RowsAffected() == 0 {
		return Chat{}, slicehub.Errorf(op, slicehub.KindNotFound, "chat_not_found", "no such chat")
	}
	return c.Chat(ctx, chatID)
}

// Outgoing limits.
const (
	maxMessageLen = 4096
	maxKeyLen     = 200
)

// NewOutgoing is the body of POST /api/chats/{id}/messages.
type NewOutgoing struct {
	Body           string `json:"body"`
	IdempotencyKey string `json:"idempotency_key"`
}

// Outgoing is a message queued for sending, with what the sender needs.
type Outgoing struct {
	Message
	ChatWA string // the WhatsApp chat id to send to
	Key    string // the idempotency key
}

// newMessageKeyID returns a message key id in the form WhatsApp Web gives
// its own (WAWebMsgKey.newId(): "3EB0" and upper-case hex, whatsapp-web.js
// v1.34.6 src/util/Injected/Utils.js sendMessage). The slice chooses it
// before the send, so that after a crash it can look for exactly this
// message on WhatsApp's side.
func newMessageKeyID() string {
	b := make([]byte, 10)
	_, _ = rand.Read(b)
	return "3EB0" + strings.ToUpper(hex.EncodeToString(b))
}

// CreateOutgoing stores an outgoing message as pending, once per
// idempotency key: the same key again returns the stored message and
// created=false. The same key with another chat or body is a conflict: the
// client reused a key.
func (c *CRM) CreateOutgoing(ctx context.Context, chatID int64, in NewOutgoing) (Outgoing, bool, error) {
	const op = "slice.create_outgoing"
	body := strings.TrimSpace(in.Body)
	if err := checkText(op, "body", body, maxMessageLen); err != nil {
		return Outgoing{}, false, err
	}
	key := in.IdempotencyKey
	if key == "" || len(key) > maxKeyLen || !utf8Printable(key) {
		return Outgoing{}, false, slicehub.Errorf(op, slicehub.KindInvalid, "invalid_idempotency_key",
			"idempotency_key is required: 1 to %d printable characters", maxKeyLen)
	}
	var chatWA string
	if err := c.pool.QueryRow(ctx, `SELECT wa_id FROM chats WHERE id = $1`, chatID).Scan(&chatWA); err != nil {
		return Outgoing{}, false, notFoundAs(op, "chat_not_found", "no such chat", err)
	}
	// sent_at is in whole seconds, as WhatsApp's timestamps (t) are, so
	// that messages of the same second keep the order they were stored in
	// (sent_at, id) rather than putting this one after later arrivals.
	// whatsapp-web.js serializes a message id as fromMe_remote_id
	// (MsgKey's _serialized; v1.34.6 src/structures/Message.js id).
	waID := "true_" + chatWA + "_" + newMessageKeyID()
	out := Outgoing{ChatWA: chatWA, Key: key}
	err := pgx.BeginFunc(ctx, c.pool, func(tx pgx.Tx) error {
		row := tx.QueryRow(ctx, `INSERT INTO messages (chat_id, wa_id, from_me, body, type, status, sent_at, idempotency_key)
			VALUES ($1, $2, true, $3, 'chat', 'pending', date_trunc('second', now()), $4)
			ON CONFLICT (idempotency_key) DO NOTHING
			RETURNING `+strings.ReplaceAll(messageCols, "m.", ""), chatID, waID, body, key)
		m, err := scanMessage(row)
		if err == nil {
			out.Message = m
			_, err = tx.Exec(ctx, `UPDATE chats SET last_message_at = GREATEST(last_message_at, $2) WHERE id = $1`, chatID, m.SentAt)
			return err
		}
		if !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		return errReplay
	})
	switch {
	case err == nil:
		return out, true, nil
	case errors.Is(err, errReplay):
		m, err := scanMessage(c.pool.QueryRow(ctx, `SELECT `+messageCols+` FROM messages m WHERE m.idempotency_key = $1`, key))
		if err != nil {
			return Outgoing{}, false, dbError(op, err)
		}
		if m.ChatID != chatID || m.Body != body {
			return Outgoing{}, false, slicehub.Errorf(op, slicehub.KindConflict, "idempotency_key_reused",
				"this idempotency_key was used for another message")
		}
		out.Message = m
		return out, false, nil
	}
	return Outgoing{}, false, dbError(op, err)
}

var errReplay = errors.New("idempotency key seen before")

func utf8Printable(s string) bool {
	return checkText("", "key", s, maxKeyLen) == nil && !strings.ContainsAny(s, "\n\r\t")
}

// ClaimSend records that the one WhatsApp send of a pending message starts
// now. It returns false when it was claimed before: that send may have
// happened, so it must never be repeated, only looked for (Reconcile).
func (c *CRM) ClaimSend(ctx context.Context, id int64) (bool, error) {
	tag, err := c.pool.Exec(ctx, `UPDATE messages SET send_started_at = now(), updated_at = now()
		WHERE id = $1 AND send_started_at IS NULL AND status = 'pending'`, id)
	if err != nil {
		return false, dbError("slice.claim_send", err)
	}
	return tag.RowsAffected() == 1, nil
}

// PendingSends returns the outgoing messages still pending: claimed says
// whether their send was attempted (their fate must be looked up) or not
// (they may be sent).
func (c *CRM) PendingSends(ctx context.Context, claimed bool) ([]Outgoing, error) {
	const op = "slice.pending_sends"
	cond := "m.send_started_at IS NULL"
	if claimed {
		cond = "m.send_started_at IS NOT NULL"
	}
	rows, err := c.pool.Query(ctx, `SELECT `+messageCols+`, c.wa_id, COALESCE(m.idempotency_key, '')
		FROM messages m JOIN chats c ON c.id = m.chat_id
		WHERE m.status = 'pending' AND m.from_me AND m.idempotency_key IS NOT NULL AND `+cond+` ORDER BY m.id LIMIT 500`)
	if err != nil {
		return nil, dbError(op, err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Outgoing, error) {
		var o Outgoing
		var err error
		o.Message, err = scanMessage(r, &o.ChatWA, &o.Key)
		return o, err
	})
	if err != nil {
		return nil, dbError(op, err)
	}
	return out, nil
}

// SetStatus moves a message's status forward (never back) and returns it;
// changed is false if it was already there or beyond.
func (c *CRM) SetStatus(ctx context.Context, id int64, status string) (Message, bool, error) {
	const op = "slice.set_status"
	m, err := scanMessage(c.pool.QueryRow(ctx, `UPDATE messages m SET status = $2, updated_at = now()
		WHERE id = $1 AND `+statusRankSQL("$2::text")+` > `+statusRankSQL("m.status")+` RETURNING `+messageCols, id, status))
	if errors.Is(err, pgx.ErrNoRows) {
		return Message{}, false, nil
	}
	if err != nil {
		return Message{}, false, dbError(op, err)
	}
	return m, true, nil
}

// SyncState is the history import's checkpoint.
type SyncState struct {
	HistoryCursor string
	HistoryDone   bool
}

// SyncState reads the checkpoint.
func (c *CRM) SyncState(ctx context.Context) (SyncState, error) {
	var s SyncState
	err := c.pool.QueryRow(ctx, `SELECT history_cursor, history_done FROM sync_state WHERE id = 1`).Scan(&s.HistoryCursor, &s.HistoryDone)
	if err != nil {
		return s, dbError("slice.sync_state", err)
	}
	return s, nil
}

// SetSyncState writes the checkpoint.
func (c *CRM) SetSyncState(ctx context.Context, s SyncState) error {
	_, err := c.pool.Exec(ctx, `UPDATE sync_state SET history_cursor = $1, history_done = $2, updated_at = now() WHERE id = 1`,
		s.HistoryCursor, s.HistoryDone)
	if err != nil {
		return dbError("slice.set_sync_state", err)
	}
	return nil
}

// Analyze refreshes the planner's statistics of the conversation tables:
// after a bulk import autovacuum has not looked yet, and a planner without
// statistics picks plans that make search slow.
func (c *CRM) Analyze(ctx context.Context) error {
	if _, err := c.pool.Exec(ctx, `ANALYZE messages, chats, contacts`); err != nil {
		return dbError("slice.analyze", err)
	}
	return nil
}

// LatestMessageTime is the time of the newest stored message (zero if
// none): where a catch-up starts looking.
func (c *CRM) LatestMessageTime(ctx context.Context) (time.Time, error) {
	var t *time.Time
	if err := c.pool.QueryRow(ctx, `SELECT max(sent_at) FROM messages`).Scan(&t); err != nil {
		return time.Time{}, dbError("slice.latest_message", err)
	}
	if t == nil {
		return time.Time{}, nil
	}
	return *t, nil
}

// String helps logs.
func (o Outgoing) String() string { return fmt.Sprintf("message %d (%s)", o.ID, o.WAID) }
