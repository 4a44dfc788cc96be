package standin

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The account side of the stand-in: what WhatsApp's servers hold for the
// linked account, and the phone at the other end of its chats.
//
//   - The account has chats and messages. A seeded history (Options.History)
//     is there from the start; the page loads it at link time and at every
//     load after (GET /account), as WhatsApp Web syncs history to a newly
//     linked device.
//   - Incoming messages (Deliver, the development phone) and delivery
//     receipts of sent messages queue on the server (pending) until the page
//     fetches them (GET /events, a long poll) and acknowledges them (POST
//     /events/ack); only then are they part of the account. A page that is
//     down misses nothing: the queue waits for it, as WhatsApp's servers do.
//   - What the page sends (POST /send) reaches the phone once per message
//     id, whatever the retries; Sent lists it.
//
// Nothing here writes to a slice: the slice learns all of this only through
// its adapter reading the page.

// Message is one message of the account, in the page's terms.
type Message struct {
	ID         string `json:"id"` // the key id (WAWebMsgKey id), unique per chat
	Chat       string `json:"chat"`
	FromMe     bool   `json:"fromMe"`
	Body       string `json:"body"`
	Type       string `json:"type"`
	T          int64  `json:"t"`
	Ack        int    `json:"ack"`
	Mimetype   string `json:"mimetype,omitempty"`
	Size       int64  `json:"size,omitempty"`
	NotifyName string `json:"notifyName,omitempty"`
}

// History sizes the seeded history.
type History struct {
	Chats    int // default 0: no history
	Messages int // in all, spread over the chats
}

// Sent is a message the phone received from the slice.
type Sent struct {
	To   string    `json:"to"` // "+15550001"
	Body string    `json:"body"`
	ID   string    `json:"id"`
	At   time.Time `json:"at"`
}

type chatRec struct {
	ID     string     `json:"id"`
	Name   string     `json:"name"`
	Unread int        `json:"unread"`
	Msgs   []*Message `json:"msgs"`
}

type event struct {
	Seq  int64    `json:"seq"`
	Kind string   `json:"kind"` // "msg" (incoming) or "ack" (a receipt)
	Msg  *Message `json:"msg"`
	Name string   `json:"name,omitempty"`
}

type account struct {
	mu      sync.Mutex
	chats   map[string]*chatRec
	msgs    map[string]*Message // by chat + "/" + id
	pending []event
	seq     int64
	wake    chan struct{} // closed and replaced when an event is queued
	sent    []Sent
	sentIDs map[string]bool
	journal *os.File // nil: the account lives in memory only
	log     *slog.Logger
}

// op is one journal line: a change to the account, replayed at start so
// that the stand-in's "servers" outlive a restart of the process that hosts
// them, as WhatsApp's do (Options.StateFile).
type op struct {
	Op     string    `json:"op"` // seed, queue, ack, send, seen
	Seeded int64     `json:"seeded,omitempty"`
	Event  *event    `json:"event,omitempty"`
	Upto   int64     `json:"upto,omitempty"`
	Msg    *Message  `json:"msg,omitempty"`
	Chat   string    `json:"chat,omitempty"`
	At     time.Time `json:"at,omitzero"`
}

// newAccount returns the account, replaying the journal at stateFile if
// there is one (and then appending to it).
func newAccount(h History, stateFile string, log *slog.Logger) *account {
	a := &account{chats: map[string]*chatRec{}, msgs: map[string]*Message{}, wake: make(chan struct{}), sentIDs: map[string]bool{}, log: log}
	seeded := time.Now().Add(-24 * time.Hour).Unix()
	var ops []op
	if stateFile != "" {
		ops = readJournal(stateFile, log)
		f, err := os.OpenFile(stateFile, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
		if err != nil {
			log.Error("cannot keep the stand-in account; it lives in memory only", "file", stateFile, "err", err)
		} else {
			a.journal = f
		}
	}
	if len(ops) > 0 && ops[0].Op == "seed" {
		seeded = ops[0].Seeded
	} else {
		a.write(op{Op: "seed", Seeded: seeded})
	}
	a.seed(h, seeded)
	for _, o := range ops {
		a.apply(o)
	}
	if len(ops) > 0 {
		log.Info("stand-in account restored", "file", stateFile, "changes", len(ops), "pending", len(a.pending))
	}
	return a
}

func readJournal(path string, log *slog.Logger) []op {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	var ops []op
	for _, line := range bytes.Split(b, []byte{'\n'}) {
		var o op
		if len(line) == 0 {
			continue
		}
		if err := json.Unmarshal(line, &o); err != nil {
			// A line cut short by a kill is the last one: stop there.
			log.Warn("stand-in journal ends in a broken line", "err", err)
			break
		}
		ops = append(ops, o)
	}
	return ops
}

// write appends o to the journal.
func (a *account) write(o op) {
	if a.journal == nil {
		return
	}
	b, _ := json.Marshal(o)
	if _, err := a.journal.Write(append(b, '\n')); err != nil {
		a.log.Error("cannot write the stand-in journal", "err", err)
	}
}

// apply replays one journal line.
func (a *account) apply(o op) {
	switch o.Op {
	case "queue":
		if o.Event != nil {
			a.queueLocked(*o.Event)
		}
	case "ack":
		a.ackLocked(o.Upto)
	case "send":
		if o.Msg != nil {
			a.sendLocked(*o.Msg, o.At)
		}
	case "seen":
		if c := a.chats[o.Chat]; c != nil {
			c.Unread = 0
		}
	}
}

// seed creates the history: deterministic, so that a test knows what to
// expect: chat i is with +1999<7 digits of i>, messages alternate
// direction, oldest first, a minute apart, ending at seeded.
func (a *account) seed(h History, seeded int64) {
	if h.Chats <= 0 {
		return
	}
	start := seeded - int64(h.Messages)*60
	words := []string{"invoice", "delivery", "price", "tomorrow", "thanks", "order", "meeting", "photo", "address", "payment"}
	for i := 0; i < h.Chats; i++ {
		id := fmt.Sprintf("1999%07d@c.us", i)
		a.chats[id] = &chatRec{ID: id, Name: fmt.Sprintf("History %d", i)}
	}
	for j := 0; j < h.Messages; j++ {
		i := j % h.Chats
		c := a.chats[fmt.Sprintf("1999%07d@c.us", i)]
		m := &Message{
			ID: fmt.Sprintf("H%08d", j), Chat: c.ID, FromMe: j%2 == 1, Type: "chat",
			Body: fmt.Sprintf("history %d of chat %d about %s", j, i, words[j%len(words)]),
			T:    start + int64(j)*60, Ack: 3,
		}
		if j%97 == 5 { // now and then a photo: stored as a placeholder
			m.Type, m.Body, m.Mimetype, m.Size = "image", "", "image/jpeg", 48213
		}
		c.Msgs = append(c.Msgs, m)
		a.msgs[c.ID+"/"+m.ID] = m
	}
}

// queueLocked adds an event for the page and wakes its long poll.
func (a *account) queueLocked(e event) {
	a.seq = max(a.seq+1, e.Seq)
	e.Seq = a.seq
	a.pending = append(a.pending, e)
	close(a.wake)
	a.wake = make(chan struct{})
}

// Deliver queues an incoming message from the phone number from (any
// format; digits are kept) with the sender's display name. It returns the
// message's key id.
func (s *Server) Deliver(from, name, body string) (string, error) {
	digits := strings.Map(func(r rune) rune {
		if r >= '0' && r <= '9' {
			return r
		}
		return -1
	}, from)
	if len(digits) < 5 || len(digits) > 15 {
		return "", fmt.Errorf("standin: from must be a phone number of 5 to 15 digits")
	}
	if strings.TrimSpace(body) == "" {
		return "", fmt.Errorf("standin: empty body")
	}
	a := s.acct
	a.mu.Lock()
	defer a.mu.Unlock()
	id := "IN" + strings.ToUpper(randomHex(10))
	m := &Message{ID: id, Chat: digits + "@c.us", Body: body, Type: "chat", T: time.Now().Unix(), NotifyName: name}
	e := event{Seq: a.seq + 1, Kind: "msg", Msg: m, Name: name}
	a.write(op{Op: "queue", Event: &e})
	a.queueLocked(e)
	return id, nil
}

// Sent lists what the phone received from the slice, in order, once per
// message id.
func (s *Server) Sent() []Sent {
	a := s.acct
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]Sent(nil), a.sent...)
}

// Pending counts the events waiting for the page.
func (s *Server) Pending() int {
	a := s.acct
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.pending)
}

// serveAccount is the history sync: every chat with its messages.
func (s *Server) serveAccount(w http.ResponseWriter, r *http.Request) {
	a := s.acct
	a.mu.Lock()
	chats := make([]*chatRec, 0, len(a.chats))
	for _, c := range a.chats {
		chats = append(chats, c)
	}
	sort.Slice(chats, func(i, j int) bool { return chats[i].ID < chats[j].ID })
	b, err := json.Marshal(map[string]any{"me": "15550000000@c.us", "chats": chats})
	a.mu.Unlock()
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(b)
}

// events is the page's long poll for queued events after seq.
func (s *Server) events(w http.ResponseWriter, r *http.Request) {
	after, _ := strconv.ParseInt(r.URL.Query().Get("after"), 10, 64)
	deadline := time.NewTimer(20 * time.Second)
	defer deadline.Stop()
	for {
		a := s.acct
		a.mu.Lock()
		var out []event
		for _, e := range a.pending {
			if e.Seq > after {
				out = append(out, e)
			}
		}
		wake := a.wake
		a.mu.Unlock()
		if len(out) > 0 {
			writeJSON(w, http.StatusOK, map[string]any{"events": out})
			return
		}
		select {
		case <-wake:
		case <-deadline.C:
			writeJSON(w, http.StatusOK, map[string]any{"events": []event{}})
			return
		case <-r.Context().Done():
			return
		}
	}
}

// ackEvents: the page has the events up to seq; they become part of the
// account and leave the queue.
func (s *Server) ackEvents(w http.ResponseWriter, r *http.Request) {
	upto, err := strconv.ParseInt(r.URL.Query().Get("upto"), 10, 64)
	if err != nil {
		http.Error(w, "bad upto", http.StatusBadRequest)
		return
	}
	a := s.acct
	a.mu.Lock()
	defer a.mu.Unlock()
	a.write(op{Op: "ack", Upto: upto})
	a.ackLocked(upto)
	w.WriteHeader(http.StatusNoContent)
}

// ackLocked moves the events up to seq from the queue into the account.
func (a *account) ackLocked(upto int64) {
	keep := a.pending[:0]
	for _, e := range a.pending {
		if e.Seq > upto {
			keep = append(keep, e)
			continue
		}
		switch e.Kind {
		case "msg":
			c := a.chats[e.Msg.Chat]
			if c == nil {
				c = &chatRec{ID: e.Msg.Chat, Name: e.Name}
				a.chats[c.ID] = c
			}
			if a.msgs[c.ID+"/"+e.Msg.ID] == nil {
				c.Msgs = append(c.Msgs, e.Msg)
				a.msgs[c.ID+"/"+e.Msg.ID] = e.Msg
				c.Unread++
			}
		case "ack":
			if m := a.msgs[e.Msg.Chat+"/"+e.Msg.ID]; m != nil && e.Msg.Ack > m.Ack {
				m.Ack = e.Msg.Ack
			}
		}
	}
	a.pending = keep
}

// send is the page sending a message (WAWebSendMsgChatAction). The server
// takes it once per id; the phone's receipt (ack 2, delivered) follows as
// an event.
func (s *Server) send(w http.ResponseWriter, r *http.Request) {
	var m Message
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(&m); err != nil || m.ID == "" || m.Chat == "" {
		http.Error(w, "bad message", http.StatusBadRequest)
		return
	}
	a := s.acct
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.sentIDs[m.Chat+"/"+m.ID] {
		now := time.Now()
		a.write(op{Op: "send", Msg: &m, At: now})
		a.sendLocked(m, now)
		s.log.Info("the phone received a message", "chat", m.Chat, "id", m.ID)
	}
	writeJSON(w, http.StatusOK, map[string]int{"ack": 1})
}

// sendLocked takes a message from the page once per id: into the account,
// onto the phone, and the phone's receipt (ack 2) queued for the page.
func (a *account) sendLocked(m Message, at time.Time) {
	key := m.Chat + "/" + m.ID
	if a.sentIDs[key] {
		return
	}
	a.sentIDs[key] = true
	m.FromMe, m.Ack = true, 1
	if m.T == 0 {
		m.T = at.Unix()
	}
	if m.Type == "" {
		m.Type = "chat"
	}
	c := a.chats[m.Chat]
	if c == nil {
		c = &chatRec{ID: m.Chat}
		a.chats[c.ID] = c
	}
	stored := m
	c.Msgs = append(c.Msgs, &stored)
	a.msgs[key] = &stored
	user, _, _ := strings.Cut(m.Chat, "@")
	a.sent = append(a.sent, Sent{To: "+" + user, Body: m.Body, ID: m.ID, At: at})
	receipt := stored
	receipt.Ack = 2
	a.queueLocked(event{Kind: "ack", Msg: &receipt})
}

// seen clears a chat's unread count (WAWebUpdateUnreadChatAction.sendSeen).
func (s *Server) seen(w http.ResponseWriter, r *http.Request) {
	a := s.acct
	a.mu.Lock()
	a.write(op{Op: "seen", Chat: r.URL.Query().Get("chat")})
	a.apply(op{Op: "seen", Chat: r.URL.Query().Get("chat")})
	a.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

// phoneMessages is the development phone over HTTP: POST delivers an
// incoming message, GET lists what the phone received.
func (s *Server) phoneMessages(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodGet {
		writeJSON(w, http.StatusOK, map[string]any{"messages": s.Sent()})
		return
	}
	var in struct{ From, Name, Body string }
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10)).Decode(&in); err != nil {
		http.Error(w, "bad json", http.StatusBadRequest)
		return
	}
	id, err := s.Deliver(in.From, in.Name, in.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	writeJSON(w, http.StatusAccepted, map[string]string{"id": id})
}

// Close closes the account's journal.
func (s *Server) Close() error {
	a := s.acct
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.journal == nil {
		return nil
	}
	err := a.journal.Close()
	a.journal = nil
	return err
}
