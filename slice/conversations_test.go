package slice_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/slicehub/slicehub"
	"github.com/slicehub/slicehub/slice"
	"github.com/slicehub/slicehub/slice/standin"
	"github.com/slicehub/slicehub/testsupport"
)

// chatsResp is GET /api/chats.
type chatsResp struct {
	Chats []slice.Chat `json:"chats"`
}

type messagesResp struct {
	Messages   []slice.Message `json:"messages"`
	NextBefore *int64          `json:"next_before"`
}

// chatByPhone finds a chat in GET /api/chats.
func (rs *runningSlice) chatByPhone(t *testing.T, phone string) (slice.Chat, bool) {
	t.Helper()
	var cr chatsResp
	if st := rs.call(t, "GET", "/api/chats", "", &cr); st != 200 {
		t.Fatalf("GET /api/chats = %d", st)
	}
	for _, c := range cr.Chats {
		if c.Phone == phone {
			return c, true
		}
	}
	return slice.Chat{}, false
}

// allMessages pages back through a chat's messages with before.
func (rs *runningSlice) allMessages(t *testing.T, chatID int64) []slice.Message {
	t.Helper()
	var out []slice.Message
	before := int64(0)
	for {
		path := fmt.Sprintf("/api/chats/%d/messages?limit=3", chatID)
		if before > 0 {
			path += fmt.Sprintf("&before=%d", before)
		}
		var mr messagesResp
		if st := rs.call(t, "GET", path, "", &mr); st != 200 {
			t.Fatalf("GET %s = %d", path, st)
		}
		out = append(mr.Messages, out...)
		if mr.NextBefore == nil {
			return out
		}
		before = *mr.NextBefore
	}
}

// wsEvents connects a socket.io client over WebSocket and returns a
// function that waits for an event whose frame contains all of want.
func wsEvents(t *testing.T, rs *runningSlice) func(event string, want ...string) string {
	u := "ws" + strings.TrimPrefix(rs.base, "http") + "/socket.io/?EIO=4&transport=websocket"
	h := http.Header{}
	h.Set(slicehub.HeaderGatewayToken, itToken)
	conn, _, err := websocket.DefaultDialer.Dial(u, h)
	if err != nil {
		t.Fatalf("websocket: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	if err := conn.WriteMessage(websocket.TextMessage, []byte("40")); err != nil {
		t.Fatal(err)
	}
	return func(event string, want ...string) string {
		t.Helper()
		_ = conn.SetReadDeadline(time.Now().Add(20 * time.Second))
		for {
			_, b, err := conn.ReadMessage()
			if err != nil {
				t.Fatalf("waiting for %s %v: %v", event, want, err)
			}
			s := string(b)
			if s == "2" {
				_ = conn.WriteMessage(websocket.TextMessage, []byte("3"))
				continue
			}
			if !strings.HasPrefix(s, `42["`+event+`",`) {
				continue
			}
			ok := true
			for _, w := range want {
				ok = ok && strings.Contains(s, w)
			}
			if ok {
				return s
			}
		}
	}
}

// TestConversations follows a linked WhatsApp account through the slice,
// on real Chromium, the real adapter and real PostgreSQL, with the stand-in
// playing WhatsApp's servers and the phone: history at link time, a live
// incoming message, a reply sent exactly once, the CRM around them, and a
// restart of the slice during which messages arrive.
func TestConversations(t *testing.T) {
	sv := standin.New(standin.Options{Codes: 3, Refresh: 3 * time.Second, Logger: quietLogger(),
		History: standin.History{Chats: 5, Messages: 40}})
	ts := httptest.NewServer(sv)
	t.Cleanup(ts.Close)
	dbURL := testsupport.NewDatabase(t)
	profile := filepath.Join(t.TempDir(), "profiles", "42")
	cfg := waConfig(dbURL, profile, ts.URL+"/")
	rs := startSlice(t, cfg)

	rs.waitState(t, slicehub.WAQR, time.Minute)
	testsupport.Eventually(t, 20*time.Second, "a scan", func() (bool, error) {
		return sv.Scan("") == nil, nil
	})
	rs.waitState(t, slicehub.WAConnected, 30*time.Second)
	pairings := sv.Stats().Pairings

	t.Run("history imported at link time", func(t *testing.T) {
		testsupport.Eventually(t, 30*time.Second, "5 history chats", func() (bool, error) {
			var cr chatsResp
			rs.call(t, "GET", "/api/chats", "", &cr)
			return len(cr.Chats) == 5, fmt.Errorf("%d chats", len(cr.Chats))
		})
		c, ok := rs.chatByPhone(t, "+19990000003")
		if !ok || c.Name != "History 3" || c.LastMessage == nil || c.ContactID == nil {
			t.Fatalf("history chat 3 = %+v, want name, last message and a contact", c)
		}
		msgs := rs.allMessages(t, c.ID)
		if len(msgs) != 8 {
			t.Fatalf("chat 3 has %d messages, want 8 (40 over 5 chats)", len(msgs))
		}
		for i := 1; i < len(msgs); i++ {
			if !msgs[i-1].SentAt.Before(msgs[i].SentAt) {
				t.Fatalf("messages out of order at %d: %v then %v", i, msgs[i-1].SentAt, msgs[i].SentAt)
			}
		}
		if !strings.HasPrefix(msgs[0].Body, "history 3 of chat 3") {
			t.Fatalf("first message %q", msgs[0].Body)
		}
		// Message 5 of the history is a photo: a placeholder with its size.
		c0, _ := rs.chatByPhone(t, "+19990000000")
		var media *slice.Media
		for _, m := range rs.allMessages(t, c0.ID) {
			if m.Media != nil {
				media = m.Media
			}
		}
		if media == nil || media.Type != "image" || media.Size != 48213 {
			t.Fatalf("media placeholder %+v, want image of 48213 bytes", media)
		}
		var st slice.AdapterStatus
		if rs.call(t, "GET", "/api/status/adapter", "", &st); !st.Ready || st.Degraded || st.Version == "" {
			t.Fatalf("adapter status %+v, want ready", st)
		}
	})

	next := wsEvents(t, rs)
	var ana slice.Chat
	t.Run("incoming message live", func(t *testing.T) {
		t0 := time.Now()
		if _, err := sv.Deliver("+15550001", "Ana", "hi, is the order ready?"); err != nil {
			t.Fatal(err)
		}
		next("message", `"hi, is the order ready?"`, `"from_me":false`)
		t.Logf("incoming message on the socket after %v", time.Since(t0))
		var ok bool
		ana, ok = rs.chatByPhone(t, "+15550001")
		if !ok || ana.Name != "Ana" || ana.Unread != 1 || ana.LastMessage == nil || ana.LastMessage.Body != "hi, is the order ready?" {
			t.Fatalf("Ana's chat = %+v ok=%v, want name Ana, 1 unread, the message last", ana, ok)
		}
		var mark slice.Chat
		if st := rs.call(t, "POST", fmt.Sprintf("/api/chats/%d/read", ana.ID), "", &mark); st != 200 || mark.Unread != 0 {
			t.Fatalf("POST read = %d %+v", st, mark)
		}
	})

	t.Run("send exactly once", func(t *testing.T) {
		body := `{"body":"yes, it ships today","idempotency_key":"reply-1"}`
		var wg sync.WaitGroup
		got := make([]slice.Message, 3)
		codes := make([]int, 3)
		for i := range got {
			wg.Add(1)
			go func() {
				defer wg.Done()
				codes[i] = rs.call(t, "POST", fmt.Sprintf("/api/chats/%d/messages", ana.ID), body, &got[i])
			}()
		}
		wg.Wait()
		for i := range got {
			if codes[i] != 202 || got[i].ID != got[0].ID || !got[i].FromMe {
				t.Fatalf("POST #%d = %d %+v, want 202 and the same message as #0 %+v", i, codes[i], got[i], got[0])
			}
		}
		next("message_status", fmt.Sprintf(`"id":%d`, got[0].ID), `"delivered"`)
		sent := sv.Sent()
		if len(sent) != 1 || sent[0].To != "+15550001" || sent[0].Body != "yes, it ships today" {
			t.Fatalf("the phone received %+v, want the reply once", sent)
		}
		// Once more, after delivery: still stored once, never sent again.
		var again slice.Message
		if st := rs.call(t, "POST", fmt.Sprintf("/api/chats/%d/messages", ana.ID), body, &again); st != 202 || again.ID != got[0].ID || again.Status != slice.StatusDelivered {
			t.Fatalf("replay = %d %+v", st, again)
		}
		var e struct{ Error, Code string }
		for _, c := range []struct{ body, code string }{
			{`{"body":"other text","idempotency_key":"reply-1"}`, "idempotency_key_reused"},
			{`{"body":"no key"}`, "invalid_idempotency_key"},
			{`{"body":"","idempotency_key":"k-empty"}`, "invalid_body"},
		} {
			if st := rs.call(t, "POST", fmt.Sprintf("/api/chats/%d/messages", ana.ID), c.body, &e); st/100 != 4 || e.Code != c.code {
				t.Errorf("POST %s = %d %+v, want %s", c.body, st, e, c.code)
			}
		}
		msgs := rs.allMessages(t, ana.ID)
		if len(msgs) != 2 {
			t.Fatalf("Ana's chat holds %d messages, want 2 (nothing stored for the bad posts)", len(msgs))
		}
		if len(sv.Sent()) != 1 {
			t.Fatalf("the phone received %d messages, want 1", len(sv.Sent()))
		}
	})

	t.Run("labels stages notes search", func(t *testing.T) {
		cid := *ana.ContactID
		var ct slice.Contact
		if st := rs.call(t, "PATCH", fmt.Sprintf("/api/contacts/%d", cid), `{"stage":"qualified"}`, &ct); st != 200 || ct.Stage != "qualified" || ct.Name != "Ana" {
			t.Fatalf("PATCH stage = %d %+v", st, ct)
		}
		var e struct{ Error, Code string }
		if st := rs.call(t, "PATCH", fmt.Sprintf("/api/contacts/%d", cid), `{"stage":"bogus","name":"Zed"}`, &e); st != 400 || e.Code != "invalid_stage" {
			t.Fatalf("PATCH bogus stage = %d %+v", st, e)
		}
		if st := rs.call(t, "POST", fmt.Sprintf("/api/contacts/%d/labels", cid), `{"name":"vip","color":"#ff0000"}`, &ct); st != 200 || len(ct.Labels) != 1 || ct.Labels[0].Name != "vip" {
			t.Fatalf("POST label = %d %+v", st, ct)
		}
		var ls struct{ Labels []slice.Label }
		if rs.call(t, "GET", "/api/labels", "", &ls); len(ls.Labels) != 1 {
			t.Fatalf("GET /api/labels = %+v", ls)
		}
		if st := rs.call(t, "GET", fmt.Sprintf("/api/contacts/%d", cid), "", &ct); st != 200 || ct.Name != "Ana" || ct.Stage != "qualified" || len(ct.Labels) != 1 {
			t.Fatalf("GET contact after a refused patch = %+v, want it unchanged", ct)
		}
		if st := rs.call(t, "DELETE", fmt.Sprintf("/api/contacts/%d/labels/%d", cid, ls.Labels[0].ID), "", &ct); st != 200 || len(ct.Labels) != 0 {
			t.Fatalf("DELETE label = %d %+v", st, ct)
		}
		var n slice.Note
		if st := rs.call(t, "POST", fmt.Sprintf("/api/contacts/%d/notes", cid), `{"body":"wants weekly delivery"}`, &n); st != 201 {
			t.Fatalf("POST note = %d", st)
		}
		var stages struct{ Stages []slice.Stage }
		if rs.call(t, "GET", "/api/stages", "", &stages); len(stages.Stages) != 5 || stages.Stages[0].ID != "new" {
			t.Fatalf("GET /api/stages = %+v", stages)
		}
		var res slice.SearchResult
		if rs.call(t, "GET", "/api/search?q=ships", "", &res); len(res.Messages) != 1 || res.Messages[0].Body != "yes, it ships today" {
			t.Fatalf("search ships = %+v", res)
		}
		if rs.call(t, "GET", "/api/search?q=deliv", "", &res); len(res.Messages) < 4 {
			t.Fatalf("search deliv (prefix) = %d messages, want the history's", len(res.Messages))
		}
		if rs.call(t, "GET", "/api/search?q=555000", "", &res); len(res.Contacts) != 1 || res.Contacts[0].Name != "Ana" {
			t.Fatalf("search by phone fragment = %+v", res.Contacts)
		}
		if rs.call(t, "GET", "/api/search?q=istory%203", "", &res); len(res.Contacts) != 1 || res.Contacts[0].Phone != "+19990000003" {
			t.Fatalf("search by partial name = %+v", res.Contacts)
		}
		if st := rs.call(t, "GET", "/api/search?q=", "", &e); st != 400 || e.Code != "invalid_query" {
			t.Fatalf("empty search = %d %+v", st, e)
		}
		if st := rs.call(t, "POST", "/api/dev/phone/messages", `{"from":"+15550001","body":"x"}`, &e); st != 404 {
			t.Fatalf("dev phone without the built-in stand-in = %d, want 404", st)
		}
	})

	t.Run("restart catches up", func(t *testing.T) {
		if err := rs.stop(); err != nil {
			t.Fatal(err)
		}
		// While the slice is down, Ana writes twice and a new person once;
		// WhatsApp's servers hold the messages.
		for _, m := range [][3]string{{"+15550001", "Ana", "are you there?"}, {"+15550001", "Ana", "hello?"}, {"+15550002", "Bo", "price list please"}} {
			if _, err := sv.Deliver(m[0], m[1], m[2]); err != nil {
				t.Fatal(err)
			}
		}
		rs2 := startSlice(t, cfg)
		rs2.waitState(t, slicehub.WAConnected, time.Minute)
		testsupport.Eventually(t, 30*time.Second, "the messages of the outage", func() (bool, error) {
			bo, ok := rs2.chatByPhone(t, "+15550002")
			msgs := rs2.allMessages(t, ana.ID)
			return ok && bo.LastMessage != nil && len(msgs) == 4, fmt.Errorf("Bo's chat %v, Ana's %d messages", ok, len(msgs))
		})
		msgs := rs2.allMessages(t, ana.ID)
		seen := map[string]bool{}
		for _, m := range msgs {
			if seen[m.WAID] {
				t.Fatalf("duplicate message %s", m.WAID)
			}
			seen[m.WAID] = true
		}
		if msgs[2].Body != "are you there?" || msgs[3].Body != "hello?" {
			t.Fatalf("Ana's chat after the restart: %+v", msgs)
		}
		var cr chatsResp
		if rs2.call(t, "GET", "/api/chats", "", &cr); len(cr.Chats) != 7 {
			t.Fatalf("%d chats after the restart, want 7", len(cr.Chats))
		}
		if p := sv.Stats().Pairings; p != pairings {
			t.Fatalf("the restart needed a new QR code (%d pairings, was %d)", p, pairings)
		}
		if len(sv.Sent()) != 1 {
			t.Fatalf("the phone received %d messages, want 1 after the restart too", len(sv.Sent()))
		}
	})
}
