package sliceclient

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/slicehub/slicehub"
)

// fakeSlice answers the status API as package slice does, and records
// who asked.
func fakeSlice(t *testing.T, h http.HandlerFunc) string {
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

func TestWhatsAppState(t *testing.T) {
	var gotToken, gotUser string
	addr := fakeSlice(t, func(w http.ResponseWriter, r *http.Request) {
		gotToken, gotUser = r.Header.Get(slicehub.HeaderGatewayToken), r.Header.Get(slicehub.HeaderUserID)
		if r.URL.Path != PathState {
			http.NotFound(w, r)
			return
		}
		fmt.Fprintf(w, `{"state":%q}`, slicehub.WAQR)
	})
	var c Client
	for _, tc := range []struct {
		user     int64
		wantUser string
	}{{0, ""}, {42, "42"}} {
		st, err := c.WhatsAppState(context.Background(), Slice{ID: 1, Addr: addr, Token: "tok", UserID: tc.user})
		if err != nil || st != slicehub.WAQR {
			t.Fatalf("WhatsAppState = %q, %v; want %q", st, err, slicehub.WAQR)
		}
		if gotToken != "tok" || gotUser != tc.wantUser {
			t.Fatalf("the slice saw token %q, user %q; want tok, %q", gotToken, gotUser, tc.wantUser)
		}
	}
}

func TestWhatsAppStateRefusals(t *testing.T) {
	big := strings.Repeat("x", MaxStateBytes+1)
	for _, tc := range []struct {
		name   string
		status int
		body   string
		code   string
	}{
		{"an error status", http.StatusServiceUnavailable, `{"state":"connected"}`, "slice_answer"},
		{"no state", http.StatusOK, `{}`, "slice_answer"},
		{"not JSON", http.StatusOK, `state`, "slice_answer"},
		{"over the limit", http.StatusOK, big, "slice_answer"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := fakeSlice(t, func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(tc.status)
				w.Write([]byte(tc.body))
			})
			var c Client
			_, err := c.WhatsAppState(context.Background(), Slice{Addr: addr})
			if slicehub.KindOf(err) != slicehub.KindBadGateway || slicehub.CodeOf(err) != tc.code {
				t.Fatalf("err %v (kind %v, code %q); want bad gateway, %q", err, slicehub.KindOf(err), slicehub.CodeOf(err), tc.code)
			}
		})
	}
}

func TestUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nobody listens there now
	var c Client
	_, err = c.WhatsAppState(context.Background(), Slice{Addr: addr})
	if slicehub.KindOf(err) != slicehub.KindBadGateway || slicehub.CodeOf(err) != "slice_unreachable" {
		t.Fatalf("err %v; want bad gateway, slice_unreachable", err)
	}
}

func TestQR(t *testing.T) {
	png := []byte("\x89PNG not really")
	for _, tc := range []struct {
		name    string
		ctype   string
		seq     string
		status  int
		wantSeq int64
		none    bool
	}{
		{"numbered", "image/png", "7", http.StatusOK, 7, false},
		{"unnumbered", "image/png", "", http.StatusOK, 0, false},
		{"none shown", "application/json", "", http.StatusNotFound, 0, true},
		{"not a picture", "text/html", "3", http.StatusOK, 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := fakeSlice(t, func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path != PathQR {
					http.NotFound(w, r)
					return
				}
				w.Header().Set("Content-Type", tc.ctype)
				if tc.seq != "" {
					w.Header().Set(HeaderQRSeq, tc.seq)
				}
				w.WriteHeader(tc.status)
				w.Write(png)
			})
			var c Client
			qr, err := c.QR(context.Background(), Slice{Addr: addr})
			if tc.none {
				if slicehub.KindOf(err) != slicehub.KindNotFound || slicehub.CodeOf(err) != "no_qr" {
					t.Fatalf("QR err %v; want not found, no_qr", err)
				}
				return
			}
			if err != nil || string(qr.PNG) != string(png) || qr.Seq != tc.wantSeq {
				t.Fatalf("QR = %q seq %d, %v; want the picture, seq %d", qr.PNG, qr.Seq, err, tc.wantSeq)
			}
		})
	}
}
