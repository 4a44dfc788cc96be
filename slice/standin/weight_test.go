package standin

import (
	"io"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestParseWeight(t *testing.T) {
	for in, want := range map[string]int{"": 0, "none": 0, "light": 200, " Typical ": 2000, "heavy": 20000} {
		w, err := ParseWeight(in)
		if err != nil || w.Chats != want {
			t.Errorf("ParseWeight(%q) = %+v, %v; want %d chats", in, w, err, want)
		}
	}
	if _, err := ParseWeight("huge"); err == nil {
		t.Error("ParseWeight(huge) accepted")
	}
}

// The script carries the profile's fixed parameters, and none without one.
func TestWeightScript(t *testing.T) {
	get := func(s *Server) string {
		w := httptest.NewRecorder()
		s.ServeHTTP(w, httptest.NewRequest("GET", "/weight.js", nil))
		b, _ := io.ReadAll(w.Body)
		return string(b)
	}
	js := get(New(Options{Weight: Weights["typical"]}))
	if !strings.Contains(js, `name: "typical", chats: 2000, msgs: 50, contacts: 2000`) || strings.Contains(js, "{{") {
		t.Fatalf("weight.js does not carry the typical profile:\n%.400s", js)
	}
	if js := get(New(Options{})); !strings.Contains(js, `name: "", chats: 0`) {
		t.Fatalf("weight.js without a profile:\n%.400s", js)
	}
	// The page loads it.
	w := httptest.NewRecorder()
	New(Options{}).ServeHTTP(w, httptest.NewRequest("GET", "/", nil))
	if !strings.Contains(w.Body.String(), `<script src="weight.js"></script>`) {
		t.Fatal("the page does not load weight.js")
	}
	// A bad report is a JSON error.
	s := New(Options{})
	w = httptest.NewRecorder()
	s.ServeHTTP(w, httptest.NewRequest("POST", "/weight/status", strings.NewReader("{")))
	if w.Code != 400 || !strings.Contains(w.Body.String(), `"code"`) {
		t.Fatalf("bad report = %d %s", w.Code, w.Body)
	}
}
