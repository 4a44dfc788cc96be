package standin

import (
	"log/slog"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func post(t *testing.T, s *Server, path, body string) int {
	t.Helper()
	w := httptest.NewRecorder()
	r := httptest.NewRequest("POST", path, strings.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	s.ServeHTTP(w, r)
	return w.Code
}

type eventsResp struct {
	Events []event `json:"events"`
}

// TestAccountQueueSendAndJournal: an incoming message waits for the page
// until acknowledged; a message sent twice reaches the phone once; and a
// stand-in restarted on the same journal has the same account and queue.
func TestAccountQueueSendAndJournal(t *testing.T) {
	file := filepath.Join(t.TempDir(), "account.jsonl")
	quiet := slog.New(slog.DiscardHandler)
	s := New(Options{Logger: quiet, History: History{Chats: 2, Messages: 4}, StateFile: file})
	if _, err := s.Deliver("+1 555 0001", "Ana", "hi"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Deliver("nope", "", "hi"); err == nil {
		t.Fatal("Deliver accepted a sender without a phone number")
	}
	var ev eventsResp
	if code := call(t, s, "GET", "/events?after=0", &ev); code != 200 || len(ev.Events) != 1 || ev.Events[0].Msg.Chat != "15550001@c.us" {
		t.Fatalf("GET /events = %d %+v, want Ana's message", code, ev)
	}
	// Not acknowledged: a page that reloads gets it again.
	if call(t, s, "GET", "/events?after=0", &ev); len(ev.Events) != 1 {
		t.Fatalf("unacknowledged event gone: %+v", ev)
	}
	seq := ev.Events[0].Seq
	if code := post(t, s, "/events/ack?upto="+strconv.FormatInt(seq, 10), ""); code != 204 {
		t.Fatalf("ack = %d", code)
	}
	if s.Pending() != 0 {
		t.Fatalf("%d events pending after the ack, want 0", s.Pending())
	}
	for i := 0; i < 2; i++ {
		if code := post(t, s, "/send", `{"id":"3EB0AA","chat":"15550001@c.us","body":"hello"}`); code != 200 {
			t.Fatalf("send = %d", code)
		}
	}
	if sent := s.Sent(); len(sent) != 1 || sent[0].To != "+15550001" || sent[0].Body != "hello" {
		t.Fatalf("the phone got %+v, want hello once", sent)
	}
	if s.Pending() != 1 {
		t.Fatalf("%d events pending, want the delivery receipt", s.Pending())
	}
	acct := func(s *Server) map[string]int {
		out := map[string]int{}
		for id, c := range s.acct.chats {
			out[id] = len(c.Msgs)
		}
		return out
	}
	before := acct(s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	again := New(Options{Logger: quiet, History: History{Chats: 2, Messages: 4}, StateFile: file})
	defer again.Close()
	after := acct(again)
	if len(after) != len(before) || after["15550001@c.us"] != 2 || after["19990000000@c.us"] != 2 {
		t.Fatalf("restored account %v, want %v", after, before)
	}
	if len(again.Sent()) != 1 || again.Pending() != 1 {
		t.Fatalf("restored: sent %d, pending %d; want 1 and 1", len(again.Sent()), again.Pending())
	}
	if again.acct.msgs["19990000000@c.us/H00000000"].T != s.acct.msgs["19990000000@c.us/H00000000"].T {
		t.Fatal("the seeded history moved in time across a restart")
	}
}
