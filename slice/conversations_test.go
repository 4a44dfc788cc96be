package slice_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/jackc/pgx/v5"

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
func (rs *runningSlice) chatByPhone(t testing.TB, phone string) (slice.Chat, bool) {
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
func wsEvents(t testing.TB, rs *runningSlice) func(event string, want ...string) string {
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
	var session string
	testsupport.Eventually(t, 20*time.Second, "a QR payload", func() (bool, error) {
		q, _ := rs.qrJSON(t)
		var ok bool
		session, ok = standin.SessionFromPayload(q.QR)
		return ok, fmt.Errorf("qr %+v", q)
	})
	if err := sv.Scan(session); err != nil {
		t.Fatal(err)
	}
	rs.waitState(t, slicehub.WAConnected, 30*time.Second)
	pairings := sv.Stats().Pairings
	// The login must be on disk before Chromium is killed below (Local
	// Storage is written a few seconds late; see TestWhatsAppSession).
	testsupport.Eventually(t, 30*time.Second, "the login in the stored snapshot", func() (bool, error) {
		return snapshotHolds(t, dbURL, []byte(session))
	})

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

	var bo slice.Contact
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
		// Bo is typed in by hand before he writes: his chat must join him.
		if st := rs.call(t, "POST", "/api/contacts", `{"name":"Bo Manual","phone":"+1 555 0002"}`, &bo); st != 201 {
			t.Fatalf("POST contact = %d", st)
		}
		if st := rs.call(t, "POST", "/api/dev/phone/messages", `{"from":"+15550001","body":"x"}`, &e); st != 404 {
			t.Fatalf("dev phone without the built-in stand-in = %d, want 404", st)
		}
	})

	t.Run("chromium crash", func(t *testing.T) {
		launches := rs.slice.BrowserLaunches()
		if err := syscall.Kill(rs.slice.BrowserPID(), syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		if _, err := sv.Deliver("+15550001", "Ana", "did my last message arrive?"); err != nil {
			t.Fatal(err)
		}
		testsupport.Eventually(t, time.Minute, "the message after the crash", func() (bool, error) {
			c, _ := rs.chatByPhone(t, "+15550001")
			return c.LastMessage != nil && c.LastMessage.Body == "did my last message arrive?", fmt.Errorf("last %+v", c.LastMessage)
		})
		if rs.slice.BrowserLaunches() <= launches {
			t.Fatal("Chromium was not restarted")
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
			return ok && bo.LastMessage != nil && len(msgs) == 5, fmt.Errorf("Bo's chat %v, Ana's %d messages", ok, len(msgs))
		})
		boChat, _ := rs2.chatByPhone(t, "+15550002")
		if boChat.ContactID == nil || *boChat.ContactID != bo.ID {
			t.Fatalf("Bo's chat has contact %v, want the one typed in by hand (%d)", boChat.ContactID, bo.ID)
		}
		var merged slice.Contact
		if rs2.call(t, "GET", fmt.Sprintf("/api/contacts/%d", bo.ID), "", &merged); merged.WAID == nil || *merged.WAID != "15550002@c.us" || merged.Name != "Bo Manual" {
			t.Fatalf("merged contact %+v, want the hand-typed name and Bo's WhatsApp id", merged)
		}
		msgs := rs2.allMessages(t, ana.ID)
		seen := map[string]bool{}
		for _, m := range msgs {
			if seen[m.WAID] {
				t.Fatalf("duplicate message %s", m.WAID)
			}
			seen[m.WAID] = true
		}
		if msgs[3].Body != "are you there?" || msgs[4].Body != "hello?" {
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

// TestDevPhone is the development platform's phone: with the built-in
// stand-in, /api/dev/phone/messages delivers and lists messages.
func TestDevPhone(t *testing.T) {
	cfg := waConfig(testsupport.NewDatabase(t), filepath.Join(t.TempDir(), "42"), "")
	cfg.StandIn = true
	cfg.StandInHistory = standin.History{Chats: 2, Messages: 6}
	rs := startSlice(t, cfg)
	rs.waitState(t, slicehub.WAQR, time.Minute)
	testsupport.Eventually(t, 20*time.Second, "a scan", func() (bool, error) {
		return rs.call(t, "POST", "/api/dev/scan", "", nil) == http.StatusNoContent, nil
	})
	rs.waitState(t, slicehub.WAConnected, 30*time.Second)

	var e struct{ Error, Code string }
	if st := rs.call(t, "POST", "/api/dev/phone/messages", `{"from":"abc","body":"hi"}`, &e); st != 400 || e.Code != "invalid_phone" {
		t.Fatalf("bad from = %d %+v, want 400 invalid_phone", st, e)
	}
	var id struct{ ID string }
	if st := rs.call(t, "POST", "/api/dev/phone/messages", `{"from":"+15550001","name":"Ana","body":"hi"}`, &id); st != 202 || id.ID == "" {
		t.Fatalf("POST /api/dev/phone/messages = %d %+v, want 202 and an id", st, id)
	}
	var ana slice.Chat
	testsupport.Eventually(t, 10*time.Second, "Ana's chat", func() (bool, error) {
		var ok bool
		ana, ok = rs.chatByPhone(t, "+15550001")
		return ok && ana.LastMessage != nil && ana.LastMessage.Body == "hi", fmt.Errorf("chat %+v", ana)
	})
	var cr chatsResp
	if rs.call(t, "GET", "/api/chats", "", &cr); len(cr.Chats) != 3 {
		t.Fatalf("%d chats, want the 2 of the history and Ana's", len(cr.Chats))
	}
	if st := rs.call(t, "POST", fmt.Sprintf("/api/chats/%d/messages", ana.ID), `{"body":"hello","idempotency_key":"dev-1"}`, nil); st != 202 {
		t.Fatalf("POST reply = %d", st)
	}
	testsupport.Eventually(t, 10*time.Second, "the phone receives the reply", func() (bool, error) {
		var got struct {
			Messages []struct{ To, Body string }
		}
		rs.call(t, "GET", "/api/dev/phone/messages", "", &got)
		return len(got.Messages) == 1 && got.Messages[0].To == "+15550001" && got.Messages[0].Body == "hello", fmt.Errorf("%+v", got)
	})
}

// TestAdapterDegraded: a WhatsApp Web without a module the adapter needs
// (here: an adapter file, given as SLICE_WA_ADAPTER would, that asks for
// one the page lacks) is reported as "degraded", not as connected, and the
// adapter status names what is missing.
func TestAdapterDegraded(t *testing.T) {
	sv, ts := newStandIn(t)
	src, err := slice.LoadAdapterSource("")
	if err != nil {
		t.Fatal(err)
	}
	changed := strings.Replace(src, `'WAWebUserPrefsMeUser'];`, `'WAWebUserPrefsMeUser', 'WAWebNoSuchModule'];`, 1)
	changed = strings.Replace(changed, "GIVE_UP_MS = 60000", "GIVE_UP_MS = 500", 1)
	if changed == src {
		t.Fatal("the adapter source did not change: the test no longer matches adapter.js")
	}
	file := filepath.Join(t.TempDir(), "adapter.js")
	if err := os.WriteFile(file, []byte(changed), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := waConfig(testsupport.NewDatabase(t), filepath.Join(t.TempDir(), "42"), ts.URL+"/")
	cfg.AdapterFile = file
	rs := startSlice(t, cfg)
	rs.waitState(t, slicehub.WAQR, time.Minute)
	testsupport.Eventually(t, 20*time.Second, "a scan", func() (bool, error) { return sv.Scan("") == nil, nil })
	rs.waitState(t, slicehub.WADegraded, 30*time.Second)
	var st slice.AdapterStatus
	rs.call(t, "GET", "/api/status/adapter", "", &st)
	if !st.Degraded || st.Ready || len(st.Missing) != 1 || st.Missing[0] != "WAWebNoSuchModule" {
		t.Fatalf("adapter status %+v, want degraded with WAWebNoSuchModule missing", st)
	}
}

// TestHistoryImportResumes: a slice stopped in the middle of the history
// import resumes after its checkpoint and ends with every chat and every
// message once.
func TestHistoryImportResumes(t *testing.T) {
	sv := standin.New(standin.Options{Codes: 3, Refresh: 5 * time.Second, Logger: quietLogger(),
		History: standin.History{Chats: 1000, Messages: 5000}})
	ts := httptest.NewServer(sv)
	t.Cleanup(ts.Close)
	dbURL := testsupport.NewDatabase(t)
	cfg := waConfig(dbURL, filepath.Join(t.TempDir(), "42"), ts.URL+"/")
	rs := startSlice(t, cfg)
	testsupport.Eventually(t, time.Minute, "a scan", func() (bool, error) { return sv.Scan("") == nil, nil })
	pairings := sv.Stats().Pairings
	conn, err := pgx.Connect(t.Context(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	syncState := func() (cursor string, done bool) {
		if err := conn.QueryRow(t.Context(), `SELECT history_cursor, history_done FROM sync_state`).Scan(&cursor, &done); err != nil {
			t.Fatal(err)
		}
		return cursor, done
	}
	testsupport.Eventually(t, time.Minute, "the import under way", func() (bool, error) {
		c, _ := syncState()
		return c != "", nil
	})
	if err := rs.stop(); err != nil {
		t.Fatal(err)
	}
	cursor, done := syncState()
	if done {
		t.Fatal("the import was complete before the stop: the test needs a larger history to prove anything")
	}
	t.Logf("stopped with the checkpoint at %s", cursor)
	startSlice(t, cfg)
	testsupport.Eventually(t, 2*time.Minute, "the import complete", func() (bool, error) {
		_, done := syncState()
		return done, nil
	})
	var chats, msgs, distinct int
	if err := conn.QueryRow(t.Context(), `SELECT (SELECT count(*) FROM chats), count(*), count(DISTINCT wa_id) FROM messages`).Scan(&chats, &msgs, &distinct); err != nil {
		t.Fatal(err)
	}
	if chats != 1000 || msgs != 5000 || distinct != 5000 {
		t.Fatalf("after the resumed import: %d chats, %d messages (%d distinct), want 1000 and 5000", chats, msgs, distinct)
	}
	if p := sv.Stats().Pairings; p != pairings {
		t.Fatalf("%d pairings, was %d: the restart must not need a new QR code", p, pairings)
	}
}

// TestMigrateAsDatabaseOwner: the migrations, CREATE EXTENSION pg_trgm
// included, run as a slice runs them in production: a role without
// superuser that owns its database, with PUBLIC's rights revoked (as
// postgres.ProvisionDatabase sets it up). pg_trgm is a trusted extension,
// so no superuser step is needed.
func TestMigrateAsDatabaseOwner(t *testing.T) {
	suURL := testsupport.NewDatabase(t)
	cfg, err := pgx.ParseConfig(suURL)
	if err != nil {
		t.Fatal(err)
	}
	db, superuser := cfg.Database, cfg.User
	role := "slice_owner_" + strconv.FormatInt(time.Now().UnixNano()%1e9, 10)
	conn, err := pgx.Connect(t.Context(), suURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	ident := func(s string) string { return pgx.Identifier{s}.Sanitize() }
	for _, q := range []string{
		`CREATE ROLE ` + ident(role) + ` LOGIN PASSWORD 'owner-pw'`,
		`ALTER DATABASE ` + ident(db) + ` OWNER TO ` + ident(role),
		`REVOKE ALL ON DATABASE ` + ident(db) + ` FROM PUBLIC`,
		`GRANT CONNECT, TEMPORARY ON DATABASE ` + ident(db) + ` TO ` + ident(role),
	} {
		if _, err := conn.Exec(t.Context(), q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	t.Cleanup(func() {
		ctx := context.Background()
		c, err := pgx.Connect(ctx, suURL)
		if err != nil {
			t.Error(err)
			return
		}
		defer c.Close(ctx)
		_, _ = c.Exec(ctx, `ALTER DATABASE `+ident(db)+` OWNER TO `+ident(superuser))
		if _, err := c.Exec(ctx, `DROP OWNED BY `+ident(role)+`; DROP ROLE `+ident(role)); err != nil {
			t.Errorf("drop role: %v", err)
		}
	})
	ownerURL := fmt.Sprintf("postgres://%s:owner-pw@%s:%d/%s?sslmode=disable", role, cfg.Host, cfg.Port, db)
	pool, err := slice.OpenPool(ownerURL, "42")
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	if err := slice.NewCRM(pool).Migrate(t.Context()); err != nil {
		t.Fatalf("migrating as the database's owner: %v", err)
	}
	var ext string
	if err := pool.QueryRow(t.Context(), `SELECT extname FROM pg_extension WHERE extname = 'pg_trgm'`).Scan(&ext); err != nil {
		t.Fatalf("pg_trgm not installed: %v", err)
	}
}
