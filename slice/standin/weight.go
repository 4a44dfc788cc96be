package standin

// The weight model: what the real WhatsApp Web keeps in a browser, so that
// memory figures taken on the stand-in mean something. Figures taken with it
// are "modelled", never "measured on WhatsApp Web".
//
// A profile builds, once the page is logged in (weight.js):
//
//   - JS models: Chat, Msg and Contact objects shaped like whatsapp-web.js's
//     (src/structures/Message.js, Chat.js, Contact.js), each with its own
//     strings, ids (Wid-like objects) and arrays, in Backbone-like
//     collections with a Map index, as WhatsApp Web's WAWebCollections;
//   - an IndexedDB store "model-storage" (the real app's database name) with
//     "chat", "message" and "contact" object stores holding the same records;
//     a restarted page reads its models back from it, as the real app does,
//     instead of building them again;
//   - the DOM of the chat list: one row per chat with avatar, title, time,
//     last message and unread badge (about 10 elements, as a row of the real
//     #pane-side).
//
// The parameters are fixed here with their sources, before any measurement
// (issue 17), and are never tuned toward a memory target. See README.md.
//
//	profile   chats   messages/chat   contacts
//	light       200        50            200
//	typical   2,000        50          2,000
//	heavy    20,000        50         20,000
//
//   - Chats 200 / 2,000 / 20,000: issue 17's profiles.
//   - 50 messages kept as models per chat: an assumption, not a published
//     figure (about two screens of a conversation, what a chat shows once
//     opened plus one loadEarlierMsgs batch). It is the same for every
//     profile, so that profiles differ only by account size.
//   - One contact per chat: each 1:1 chat has its contact model (groups are
//     not modelled apart).
//   - Message bodies 1–160 characters, uniformly (mean ≈ 80), from a fixed
//     seed: an assumption (SMS-length texts); media are not modelled.
//
// Left out, knowingly: the real app's JS bundle (code space), media and
// avatar blobs, and the virtualised list (the real app renders only the
// visible rows; rendering every row makes the list DOM an upper bound).

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
)

//go:embed weight.js
var weightJS string

// Weight is a weight profile of the stand-in's page. The zero value builds
// nothing (the bare stand-in page).
type Weight struct {
	// Name is "light", "typical" or "heavy" ("" for none).
	Name string `json:"name"`
	// Chats is the number of chats, each with one row in the chat list.
	Chats int `json:"chats"`
	// MessagesPerChat is the number of message models kept per chat.
	MessagesPerChat int `json:"messagesPerChat"`
	// Contacts is the number of contact models.
	Contacts int `json:"contacts"`
}

// Weights are the fixed profiles; see the package's weight model above.
var Weights = map[string]Weight{
	"light":   {Name: "light", Chats: 200, MessagesPerChat: 50, Contacts: 200},
	"typical": {Name: "typical", Chats: 2000, MessagesPerChat: 50, Contacts: 2000},
	"heavy":   {Name: "heavy", Chats: 20000, MessagesPerChat: 50, Contacts: 20000},
}

// ParseWeight returns the profile named s; "" and "none" are no profile.
func ParseWeight(s string) (Weight, error) {
	s = strings.ToLower(strings.TrimSpace(s))
	if s == "" || s == "none" {
		return Weight{}, nil
	}
	w, ok := Weights[s]
	if !ok {
		return Weight{}, fmt.Errorf("standin: unknown weight profile %q (light, typical, heavy or none)", s)
	}
	return w, nil
}

// serveWeight serves weight.js with the server's profile filled in. With no
// profile the script does nothing.
func (s *Server) serveWeight(w http.ResponseWriter, r *http.Request) {
	js := strings.NewReplacer(
		"{{WEIGHT_NAME}}", strconv.Quote(s.weight.Name),
		"{{WEIGHT_CHATS}}", strconv.Itoa(s.weight.Chats),
		"{{WEIGHT_MSGS}}", strconv.Itoa(s.weight.MessagesPerChat),
		"{{WEIGHT_CONTACTS}}", strconv.Itoa(s.weight.Contacts),
	).Replace(weightJS)
	w.Header().Set("Content-Type", "text/javascript; charset=utf-8")
	_, _ = w.Write([]byte(js))
}

// WeightStatus is what the page reports of its weight model.
type WeightStatus struct {
	Profile string `json:"profile"`
	// State is "building", "ready" or "failed".
	State string `json:"state"`
	// Source is "built" (generated and written to IndexedDB) or "idb" (read
	// back by a restarted page).
	Source   string `json:"source"`
	Chats    int    `json:"chats"`
	Messages int    `json:"messages"`
	Contacts int    `json:"contacts"`
	// MS is how long the build or the read-back took in the page.
	MS    int    `json:"ms"`
	Error string `json:"error,omitempty"`
	// Loads counts the page loads that reported "ready".
	Loads int `json:"loads"`
}

// WeightStatus returns the page's last report of its weight model.
func (s *Server) WeightStatus() WeightStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.wstatus
}

func (s *Server) routeWeight(m *http.ServeMux) {
	m.HandleFunc("GET /weight.js", s.serveWeight)
	m.HandleFunc("GET /weight/status", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, http.StatusOK, s.WeightStatus()) })
	m.HandleFunc("POST /weight/status", func(w http.ResponseWriter, r *http.Request) {
		var st WeightStatus
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096)).Decode(&st); err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "bad weight status", "code": "invalid"})
			return
		}
		s.mu.Lock()
		st.Loads = s.wstatus.Loads
		if st.State == "ready" {
			st.Loads++
		}
		s.wstatus = st
		s.mu.Unlock()
		s.log.Info("weight model", "profile", st.Profile, "state", st.State, "source", st.Source,
			"chats", st.Chats, "messages", st.Messages, "contacts", st.Contacts, "ms", st.MS, "error", st.Error)
		w.WriteHeader(http.StatusNoContent)
	})
}
