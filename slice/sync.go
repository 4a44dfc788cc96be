package slice

import (
	"context"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"github.com/slicehub/slicehub"
)

// Syncer keeps the slice's database in step with WhatsApp, through the
// Adapter only: live pushes are stored as they come; each new page load
// (a linked phone, a restarted Chromium or slice) is followed by a catch-up
// that imports the history once (batched, with a checkpoint per chat, so a
// kill resumes where it stopped) and then everything from shortly before
// the newest stored message, as upserts by WhatsApp id: no duplicates, no
// gaps. It is also the one place that sends: one goroutine, so a message is
// never sent twice at once, and ClaimSend makes sure it is never sent twice
// at all.
type Syncer struct {
	crm   *CRM
	ad    *Adapter
	state StateSource
	emit  func(event string, v any)
	log   *slog.Logger

	kick chan struct{}
	seen chan string

	busy atomic.Int32 // sends or imports running (the governor's quiet moment)
	// importing: the history import runs (GET /api/status/state reports
	// it, for the gateway's admission of imports).
	importing atomic.Bool

	// SinceMargin is how far before the newest stored message a catch-up
	// looks (clocks of phones differ; messages arrive late).
	SinceMargin time.Duration
	// Batch is the history import's batch size (messages a transaction).
	Batch int
}

// NewSyncer returns a syncer; Run starts it.
func NewSyncer(crm *CRM, ad *Adapter, state StateSource, emit func(string, any), log *slog.Logger) *Syncer {
	if emit == nil {
		emit = func(string, any) {}
	}
	return &Syncer{crm: crm, ad: ad, state: state, emit: emit, log: log.With("component", "sync"),
		kick: make(chan struct{}, 1), seen: make(chan string, 64), SinceMargin: time.Hour, Batch: 1000}
}

// Kick asks for the queued outgoing messages to be sent now.
func (y *Syncer) Kick() {
	select {
	case y.kick <- struct{}{}:
	default:
	}
}

// Seen asks WhatsApp to mark a chat read (best effort).
func (y *Syncer) Seen(chatWA string) {
	select {
	case y.seen <- chatWA:
	default:
	}
}

// MessageStatus is the "message_status" socket.io event.
type MessageStatus struct {
	ID     int64  `json:"id"`
	ChatID int64  `json:"chat_id"`
	WAID   string `json:"wa_id"`
	Status string `json:"status"`
}

// Run syncs until ctx ends.
func (y *Syncer) Run(ctx context.Context) {
	cancel := y.state.Subscribe(func(st string) {
		if st == slicehub.WAConnected {
			y.Kick()
		}
	})
	defer cancel()
	tick := time.NewTicker(5 * time.Second)
	defer tick.Stop()
	caughtUp := int64(-1)
	for {
		send := false
		select {
		case <-ctx.Done():
			return
		case e := <-y.ad.Events():
			y.handle(ctx, e)
			send = e.T == "ready"
		case <-y.kick:
			send = true
		case <-tick.C:
			send = true
		case chat := <-y.seen:
			if y.ad.Ready() {
				if err := y.ad.call(ctx, nil, "seen", chat); err != nil {
					y.log.Warn("cannot mark the chat read on WhatsApp", "err", err)
				}
			}
		}
		if y.state.State() != slicehub.WAConnected || !y.ad.Ready() {
			continue
		}
		if loads := y.ad.nLoads.Load(); loads != caughtUp || y.ad.overflow.Swap(false) {
			if err := y.catchUp(ctx); err != nil {
				if ctx.Err() == nil {
					y.log.Error("catch-up failed; retrying", "err", err)
				}
				continue
			}
			caughtUp = loads
			send = true
		}
		if send {
			y.sendPending(ctx)
		}
	}
}

// handle stores one live push.
func (y *Syncer) handle(ctx context.Context, e adapterEvent) {
	switch e.T {
	case "msg", "ack":
		if e.Msg == nil || e.Chat == nil {
			return
		}
		y.store(ctx, *e.Chat, []waMessage{*e.Msg}, true)
	case "chat":
		if e.Chat == nil {
			return
		}
		y.store(ctx, *e.Chat, nil, true)
	}
}

// store saves a chat and messages and tells the browsers what changed.
func (y *Syncer) store(ctx context.Context, chat waChat, msgs []waMessage, unreadKnown bool) (Stored, bool) {
	st, err := y.crm.StoreFromWhatsApp(ctx, chat, msgs, unreadKnown)
	if err != nil {
		if ctx.Err() == nil {
			y.log.Error("cannot store from WhatsApp", "chat", chat.ID, "messages", len(msgs), "err", err)
		}
		return st, false
	}
	for _, m := range st.New {
		y.emit("message", m)
	}
	for _, m := range st.Changed {
		y.emit("message_status", MessageStatus{ID: m.ID, ChatID: m.ChatID, WAID: m.WAID, Status: m.Status})
	}
	y.emit("chat", st.Chat)
	return st, true
}

// catchUp imports the history if it is not complete, then what the page
// holds from shortly before the newest stored message, then settles the
// sends that a crash left without an outcome.
func (y *Syncer) catchUp(ctx context.Context) error {
	y.busy.Add(1)
	defer y.busy.Add(-1)
	t0 := time.Now()
	state, err := y.crm.SyncState(ctx)
	if err != nil {
		return err
	}
	if !state.HistoryDone {
		if err := y.importHistory(ctx, state); err != nil {
			return err
		}
	}
	latest, err := y.crm.LatestMessageTime(ctx)
	if err != nil {
		return err
	}
	var since int64
	if !latest.IsZero() {
		since = latest.Add(-y.SinceMargin).Unix()
	}
	var res struct {
		Chats []waChat    `json:"chats"`
		Msgs  []waMessage `json:"msgs"`
	}
	if err := y.ad.call(ctx, &res, "since", since); err != nil {
		return err
	}
	byChat := map[string][]waMessage{}
	for _, m := range res.Msgs {
		byChat[m.Chat] = append(byChat[m.Chat], m)
	}
	newMsgs := 0
	for _, c := range res.Chats {
		st, ok := y.store(ctx, c, byChat[c.ID], true)
		if !ok {
			return ctx.Err()
		}
		newMsgs += len(st.New)
		delete(byChat, c.ID)
	}
	for chat, msgs := range byChat {
		st, ok := y.store(ctx, waChat{ID: chat}, msgs, false)
		if !ok {
			return ctx.Err()
		}
		newMsgs += len(st.New)
	}
	if err := y.reconcile(ctx); err != nil {
		return err
	}
	y.log.Info("caught up with WhatsApp", "since", since, "looked_at", len(res.Msgs), "new", newMsgs,
		"took_ms", time.Since(t0).Milliseconds())
	return nil
}

// importHistory imports every chat after the checkpoint, chat by chat in
// id order, in batches; the checkpoint moves after each chat.
// Busy says whether a send, a catch-up or a history import is running: the
// memory governor restarts Chromium only when it is not.
func (y *Syncer) Busy() bool { return y.busy.Load() > 0 }

// Importing says whether the history import runs.
func (y *Syncer) Importing() bool { return y.importing.Load() }

func (y *Syncer) importHistory(ctx context.Context, state SyncState) error {
	y.busy.Add(1)
	defer y.busy.Add(-1)
	y.importing.Store(true)
	defer y.importing.Store(false)
	t0 := time.Now()
	var chats []waChat
	if err := y.ad.call(ctx, &chats, "chats"); err != nil {
		return err
	}
	y.log.Info("importing the WhatsApp history", "chats", len(chats), "resume_after", state.HistoryCursor)
	nChats, nMsgs := 0, 0
	for _, c := range chats {
		if state.HistoryCursor != "" && c.ID <= state.HistoryCursor {
			continue
		}
		var msgs []waMessage
		if err := y.ad.call(ctx, &msgs, "messages", c.ID); err != nil {
			return err
		}
		if len(msgs) == 0 {
			if _, err := y.crm.StoreFromWhatsApp(ctx, c, nil, true); err != nil {
				return err
			}
		}
		for i := 0; i < len(msgs); i += y.Batch {
			if _, err := y.crm.StoreFromWhatsApp(ctx, c, msgs[i:min(i+y.Batch, len(msgs))], true); err != nil {
				return err
			}
		}
		state.HistoryCursor = c.ID
		if err := y.crm.SetSyncState(ctx, state); err != nil {
			return err
		}
		nChats++
		nMsgs += len(msgs)
	}
	if err := y.crm.Analyze(ctx); err != nil {
		y.log.Warn("cannot analyze after the import; search may be slow until autovacuum does", "err", err)
	}
	state.HistoryDone = true
	if err := y.crm.SetSyncState(ctx, state); err != nil {
		return err
	}
	y.log.Info("WhatsApp history imported", "chats", nChats, "messages", nMsgs, "took_ms", time.Since(t0).Milliseconds())
	y.emit("history", map[string]any{"done": true, "chats": nChats, "messages": nMsgs})
	return nil
}

// reconcile settles outgoing messages whose one send was attempted but
// whose outcome was never recorded (a crash between the send and its
// acknowledgement): WhatsApp's side is asked for exactly that message id.
// Found: its ack is the status. Not found: it never left, and it is
// "failed"; it is not sent again, since the send may not be repeated.
func (y *Syncer) reconcile(ctx context.Context) error {
	claimed, err := y.crm.PendingSends(ctx, true)
	if err != nil || len(claimed) == 0 {
		return err
	}
	ids := make([]string, len(claimed))
	for i, o := range claimed {
		ids[i] = o.WAID
	}
	var found []*waMessage
	if err := y.ad.call(ctx, &found, "find", ids); err != nil {
		return err
	}
	for i, o := range claimed {
		if i < len(found) && found[i] != nil {
			y.store(ctx, waChat{ID: o.ChatWA}, []waMessage{*found[i]}, false)
			continue
		}
		y.log.Warn("an attempted send is not on WhatsApp: marking it failed", "message", o.String())
		y.setStatus(ctx, o.ID, StatusFailed)
	}
	return nil
}

func (y *Syncer) setStatus(ctx context.Context, id int64, status string) {
	m, changed, err := y.crm.SetStatus(ctx, id, status)
	if err != nil {
		y.log.Error("cannot set a message's status", "id", id, "status", status, "err", err)
		return
	}
	if changed {
		y.emit("message_status", MessageStatus{ID: m.ID, ChatID: m.ChatID, WAID: m.WAID, Status: m.Status})
	}
}

// sendPending sends the queued outgoing messages, each at most once.
func (y *Syncer) sendPending(ctx context.Context) {
	y.busy.Add(1)
	defer y.busy.Add(-1)
	queued, err := y.crm.PendingSends(ctx, false)
	if err != nil {
		y.log.Error("cannot read the outgoing queue", "err", err)
		return
	}
	for _, o := range queued {
		ok, err := y.crm.ClaimSend(ctx, o.ID)
		if err != nil {
			y.log.Error("cannot claim a send", "message", o.String(), "err", err)
			return
		}
		if !ok {
			continue
		}
		keyID := o.WAID[strings.LastIndexByte(o.WAID, '_')+1:]
		var sent *waMessage
		err = y.ad.call(ctx, &sent, "send", o.ChatWA, keyID, o.Body)
		if err == nil && sent != nil {
			y.store(ctx, waChat{ID: o.ChatWA}, []waMessage{*sent}, false)
			continue
		}
		// The send may or may not have happened: look, never repeat.
		y.log.Warn("sending gave no answer; looking for the message on WhatsApp", "message", o.String(), "err", err)
		if err := y.reconcile(ctx); err != nil {
			y.log.Error("cannot settle the send now; the next catch-up will", "err", err)
		}
	}
}
