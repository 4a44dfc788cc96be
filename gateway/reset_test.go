package gateway

import (
	"context"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/slicehub/slicehub/gateway/accounts"

	"github.com/slicehub/slicehub/gateway/pages"
)

// resetPath is the path and query of a mailed link.
func resetPath(t testing.TB, link string) string {
	t.Helper()
	u, err := url.Parse(link)
	if err != nil {
		t.Fatal(err)
	}
	return u.RequestURI()
}

func TestPasswordResetFlow(t *testing.T) {
	e := newPageEnv(t)
	u := e.signup("rae@example.com")
	other := newBrowser() // a second device, signed in too
	if r := e.do(other, "POST", "/auth/login", `{"email":"rae@example.com","password":"correct horse battery"}`, jsonHeader); r.status != http.StatusOK {
		t.Fatal(r.status)
	}

	b := newBrowser()
	r := e.form(b, "/reset", "/reset", url.Values{"email": {" Rae@Example.com "}})
	if r.status != http.StatusOK || !strings.Contains(string(r.body), "If rae@example.com has an account") {
		t.Fatalf("reset form: %d\n%s", r.status, r.body)
	}
	m := e.mails.wait(t)
	if m.To != "rae@example.com" || !strings.Contains(m.Subject, "Reset") {
		t.Fatalf("mail %+v", m)
	}
	link := resetLink(t, m)
	if !strings.HasPrefix(link, e.url+"/reset/confirm?token=") {
		t.Fatalf("link %q does not point at this gateway", link)
	}

	// The link moves its token into a cookie and redirects to a URL
	// without it, so the form's page cannot leak it as a Referer.
	r = e.do(b, "GET", resetPath(t, link), "", nil)
	rc := cookieNamed(r.header, pages.ResetCookie)
	if r.status != http.StatusSeeOther || r.header.Get("Location") != "/reset/confirm" || rc == nil ||
		!rc.HttpOnly || rc.Path != "/reset/confirm" || rc.SameSite != http.SameSiteLaxMode {
		t.Fatalf("reset link: %d %q, cookie %v", r.status, r.header.Get("Location"), r.header["Set-Cookie"])
	}
	r = e.do(b, "GET", "/reset/confirm", "", nil)
	if r.status != http.StatusOK || !strings.Contains(string(r.body), "rae@example.com") ||
		strings.Contains(string(r.body), rc.Value) {
		t.Fatalf("confirm page: %d\n%s", r.status, r.body)
	}
	post := func(pw, pw2 string) *result {
		r := e.do(b, "GET", "/reset/confirm", "", nil)
		v := url.Values{accounts.CSRFField: {csrfTokenIn(t, r.body)}, "password": {pw}, "password2": {pw2}}
		return e.do(b, "POST", "/reset/confirm", v.Encode(), formHeader)
	}
	if r := post("brand new password", "brand new passw0rd"); r.status != http.StatusBadRequest ||
		!strings.Contains(string(r.body), "not the same") {
		t.Fatalf("mismatched passwords: %d", r.status)
	}
	if r := post("short", "short"); r.status != http.StatusBadRequest {
		t.Fatalf("weak password: %d", r.status)
	}
	r = post("brand new password", "brand new password")
	if r.status != http.StatusSeeOther || r.header.Get("Location") != "/login?done=reset" {
		t.Fatalf("reset: %d %q\n%s", r.status, r.header.Get("Location"), r.body)
	}

	// Every session ended; the old password is dead, the new one works.
	for _, c := range []*http.Client{u.client, other} {
		if r := e.do(c, "GET", "/auth/me", "", nil); r.status != http.StatusUnauthorized {
			t.Errorf("a session survived the reset: %d", r.status)
		}
	}
	login := func(pw string) int {
		return e.do(newBrowser(), "POST", "/auth/login", `{"email":"rae@example.com","password":"`+pw+`"}`, jsonHeader).status
	}
	if s := login("correct horse battery"); s != http.StatusUnauthorized {
		t.Errorf("old password after reset: %d", s)
	}
	if s := login("brand new password"); s != http.StatusOK {
		t.Errorf("new password after reset: %d", s)
	}
	// The link works once.
	b2 := newBrowser()
	e.do(b2, "GET", resetPath(t, link), "", nil)
	if r := e.do(b2, "GET", "/reset/confirm", "", nil); r.status != http.StatusBadRequest ||
		!strings.Contains(string(r.body), "invalid or has expired") || strings.Contains(string(r.body), `name="password"`) {
		t.Errorf("used link: %d", r.status)
	}
}

func TestPasswordResetExpires(t *testing.T) {
	e := newPageEnv(t, func(c *Config, _ *Deps) { c.ResetTokenTTL = 10 * time.Minute })
	e.signup("old@example.com")
	e.form(newBrowser(), "/reset", "/reset", url.Values{"email": {"old@example.com"}})
	link := resetLink(t, e.mails.wait(t))
	e.clock.Advance(11 * time.Minute)
	b := newBrowser()
	e.do(b, "GET", resetPath(t, link), "", nil)
	if r := e.do(b, "GET", "/reset/confirm", "", nil); r.status != http.StatusBadRequest {
		t.Fatalf("expired link: %d; want 400", r.status)
	}
}

// The answer to a reset request is the same whether or not the address
// has an account; only a real account gets a mail.
func TestPasswordResetDoesNotTellWhichEmailsExist(t *testing.T) {
	e := newPageEnv(t)
	e.signup("real@example.com")
	page := func(email string) (int, string) {
		r := e.form(newBrowser(), "/reset", "/reset", url.Values{"email": {email}})
		return r.status, strings.ReplaceAll(string(r.body), email, "EMAIL")
	}
	s1, p1 := page("real@example.com")
	e.mails.wait(t)
	s2, p2 := page("ghost@example.com")
	// The CSRF token differs per browser; compare the rest.
	p1, p2 = csrfInputRE.ReplaceAllString(p1, ""), csrfInputRE.ReplaceAllString(p2, "")
	if s1 != s2 || p1 != p2 {
		t.Fatalf("answers differ: %d vs %d", s1, s2)
	}
	// Give the background lookup for the ghost time to (not) send.
	e.srv.pages.Wait()
	if n := e.mails.count(); n != 1 {
		t.Fatalf("%d mails sent; want only the real account's", n)
	}
}

func TestPasswordResetThrottledPerAddress(t *testing.T) {
	e := newPageEnv(t, func(c *Config, _ *Deps) {
		c.Throttle = DefaultThrottles
		c.Throttle.ResetPerAccount = Rate{Burst: 1, Every: time.Hour}
	})
	e.form(newBrowser(), "/reset", "/reset", url.Values{"email": {"flood@example.com"}})
	r := e.form(newBrowser(), "/reset", "/reset", url.Values{"email": {"flood@example.com"}})
	if r.status != http.StatusTooManyRequests || r.header.Get("Retry-After") == "" {
		t.Fatalf("second reset for one address: %d; want 429 with Retry-After", r.status)
	}
}

// A forged Host header must not put an attacker's site in a reset link.
func TestPasswordResetLinkHost(t *testing.T) {
	t.Run("forged host, no public URL", func(t *testing.T) {
		e := newPageEnv(t)
		e.signup("vic@example.com")
		b := newBrowser()
		r := e.do(b, "GET", "/reset", "", map[string]string{"Host": "evil.example"})
		v := url.Values{"email": {"vic@example.com"}, accounts.CSRFField: {csrfTokenIn(t, r.body)}}
		r = e.do(b, "POST", "/reset", v.Encode(), map[string]string{"Content-Type": "application/x-www-form-urlencoded", "Host": "evil.example"})
		if r.status != http.StatusOK {
			t.Fatalf("reset with a forged host: %d", r.status)
		}
		e.srv.pages.Wait()
		if n := e.mails.count(); n != 0 {
			t.Fatalf("a reset link was mailed for Host evil.example")
		}
	})
	t.Run("public URL wins", func(t *testing.T) {
		e := newPageEnv(t, func(c *Config, _ *Deps) { c.PublicURL = "https://app.example.com/" })
		e.signup("pat@example.com")
		e.form(newBrowser(), "/reset", "/reset", url.Values{"email": {"pat@example.com"}})
		if link := resetLink(t, e.mails.wait(t)); !strings.HasPrefix(link, "https://app.example.com/reset/confirm?token=") {
			t.Fatalf("link %q", link)
		}
	})
}

func TestPasswordResetOfDisabledAccountSendsNothing(t *testing.T) {
	e := newPageEnv(t)
	e.signup("dis@example.com")
	e.accounts.setDisabled("dis@example.com", true)
	e.form(newBrowser(), "/reset", "/reset", url.Values{"email": {"dis@example.com"}})
	e.srv.pages.Wait()
	if n := e.mails.count(); n != 0 {
		t.Fatalf("%d mails to a disabled account", n)
	}
}

// A fake SMTP server checks what SMTPMailer says: envelope, headers, a
// quoted-printable body, and no header injection through the subject.
func TestSMTPMailer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan []string, 1)
	go serveFakeSMTP(ln, got)
	m := &SMTPMailer{Addr: ln.Addr().String(), From: "Slicehub <no-reply@example.com>"}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	text := "Open this link:\n\nhttp://localhost/reset/confirm?token=abc\n"
	if err := m.Send(ctx, Mail{To: "ada@example.com", Subject: "Réinitialiser", Text: text}); err != nil {
		t.Fatal(err)
	}
	var lines []string
	select {
	case lines = <-got:
	case <-ctx.Done():
		t.Fatal("the fake SMTP server got nothing")
	}
	all := strings.Join(lines, "\n")
	for _, want := range []string{"MAIL FROM:<no-reply@example.com>", "RCPT TO:<ada@example.com>",
		"To: <ada@example.com>", "Subject: =?utf-8?q?R=C3=A9initialiser?=", "Content-Transfer-Encoding: quoted-printable",
		"http://localhost/reset/confirm?token=3Dabc"} {
		if !strings.Contains(all, want) {
			t.Errorf("SMTP session lacks %q:\n%s", want, all)
		}
	}
	if err := m.Send(ctx, Mail{To: "ada@example.com", Subject: "x\r\nBcc: eve@example.com", Text: "x"}); err == nil {
		t.Error("a subject with a line break was sent")
	}
	if err := m.Send(ctx, Mail{To: "ada@example.com\r\nBcc: eve@example.com", Subject: "x", Text: "x"}); err == nil {
		t.Error("a recipient with a line break was sent")
	}
}

// serveFakeSMTP speaks just enough SMTP for one message and reports every
// line the client sent.
func serveFakeSMTP(ln net.Listener, got chan<- []string) {
	c, err := ln.Accept()
	if err != nil {
		return
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 0, 4096)
	var lines []string
	write := func(s string) { c.Write([]byte(s + "\r\n")) }
	write("220 fake ESMTP")
	data := false
	tmp := make([]byte, 1024)
	for {
		n, err := c.Read(tmp)
		if err != nil {
			got <- lines
			return
		}
		buf = append(buf, tmp[:n]...)
		for {
			i := strings.Index(string(buf), "\r\n")
			if i < 0 {
				break
			}
			line := string(buf[:i])
			buf = buf[i+2:]
			lines = append(lines, line)
			switch {
			case data && line == ".":
				data = false
				write("250 queued")
			case data:
			case strings.HasPrefix(line, "EHLO"):
				write("250-fake")
				write("250 8BITMIME")
			case strings.HasPrefix(line, "DATA"):
				data = true
				write("354 go on")
			case strings.HasPrefix(line, "QUIT"):
				write("221 bye")
				got <- lines
				return
			default:
				write("250 ok")
			}
		}
	}
}

// A session that ends anywhere ends here too: the store forgets it (as on
// another replica), the NOTIFY arrives as Invalidate, and the session's
// WebSocket closes with 1008.
func TestInvalidateClosesWebSocketsOfEndedSessions(t *testing.T) {
	e := newEnv(t)
	u := e.signup("ws@example.com")
	fs := newFakeSlice(t, 700)
	e.withSlice(u, fs)
	conn, _, err := e.dialWS(u, "/socket.io/echo", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	<-fs.wsHeaders

	// The other replica's logout: the row is gone, the cache here is not.
	e.accounts.mu.Lock()
	for k, s := range e.accounts.sessions {
		if s.userID == u.id {
			delete(e.accounts.sessions, k)
		}
	}
	e.accounts.mu.Unlock()
	e.srv.Invalidate(u.id)
	if code, _ := closeCodeOf(t, conn); code != 1008 {
		t.Fatalf("close code %d; want 1008 (signed out)", code)
	}
	if r := e.do(u.client, "GET", "/api/x", "", nil); r.status != http.StatusUnauthorized {
		t.Fatalf("proxy after the session ended elsewhere: %d", r.status)
	}
}
