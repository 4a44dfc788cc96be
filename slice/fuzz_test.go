package slice_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/slicehub/slicehub"
	"github.com/slicehub/slicehub/slice"
)

// FuzzTokenCheck drives the slice's front door with arbitrary paths and
// gateway-token values. A slice is reachable by any local process (host
// networking), so the token is all that stands between a neighbour and a
// tenant's CRM: nothing but the exact token may get past it, and only
// /api/health is open without one.
func FuzzTokenCheck(f *testing.F) {
	const secret = "token-of-slice-42-0123456789abcdef"
	for _, s := range []struct{ path, token string }{
		{"/api/whoami", secret},
		{"/api/whoami", ""},
		{"/api/whoami", secret + " "},
		{"/api/whoami", " " + secret},
		{"/api/whoami", secret[:len(secret)-1]},
		{"/api/whoami", strings.ToUpper(secret)},
		{"/api/whoami", secret + "\x00"},
		{"/api/health", ""},
		{"/api/health/../whoami", ""},
		{"/api//whoami", "x"},
		{"/API/whoami", ""},
		{"/socket.io/", ""},
		{"/socket.io", "forged"},
		{"/api", ""},
		{"/", ""},
		{"/apix", ""},
		{"/api/contacts/1/notes", "forged"},
	} {
		f.Add(s.path, s.token)
	}
	h := slice.NewHandler("42", slice.NewStateHolder(), quietLogger())
	h.SetReady(secret, refusingStore{})
	f.Fuzz(func(t *testing.T, path, token string) {
		if !strings.HasPrefix(path, "/") {
			path = "/" + path
		}
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.URL.Path = path // as the server would have decoded it; any bytes
		r.URL.RawPath = ""
		if token != "" {
			// Set directly: Header.Set would not refuse bytes a raw client can send.
			r.Header[slicehub.HeaderGatewayToken] = []string{token}
		}
		protected := strings.HasPrefix(path, "/api/") || path == "/api" ||
			strings.HasPrefix(path, "/socket.io/") || path == "/socket.io"
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		switch {
		case path == "/api/health":
			if w.Code != http.StatusOK {
				t.Fatalf("/api/health: %d %s", w.Code, w.Body)
			}
		case path == "/api/whoami" && token == secret:
			if w.Code != http.StatusOK {
				t.Fatalf("the right token on /api/whoami: %d %s", w.Code, w.Body)
			}
		case token == secret:
			if w.Code == http.StatusUnauthorized {
				t.Fatalf("the right token on %q refused: %s", path, w.Body)
			}
		case protected:
			if w.Code != http.StatusUnauthorized {
				t.Fatalf("GET %q with token %q: %d %s, want 401", path, token, w.Code, w.Body)
			}
		default:
			if w.Code != http.StatusNotFound {
				t.Fatalf("GET %q outside /api and /socket.io: %d %s, want 404", path, w.Code, w.Body)
			}
		}
	})
}

// refusingStore answers the health check and refuses everything else: the
// fuzzer only asks whether a request got past the token check, not what
// the CRM would do with it.
type refusingStore struct{}

var errNotHere = errors.New("not in this test")

func (refusingStore) Ping(context.Context) error { return nil }
func (refusingStore) CreateContact(context.Context, slice.NewContact) (slice.Contact, error) {
	return slice.Contact{}, errNotHere
}
func (refusingStore) ListContacts(context.Context, int64, int) ([]slice.Contact, error) {
	return nil, errNotHere
}
func (refusingStore) Contact(context.Context, int64) (slice.Contact, error) {
	return slice.Contact{}, errNotHere
}
func (refusingStore) CreateNote(context.Context, int64, string) (slice.Note, error) {
	return slice.Note{}, errNotHere
}
func (refusingStore) Notes(context.Context, int64, int64, int) ([]slice.Note, error) {
	return nil, errNotHere
}
