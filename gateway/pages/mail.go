package pages

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"mime"
	"mime/quotedprintable"
	"net"
	"net/mail"
	"net/smtp"
	"strings"
	"time"
)

// Mail is one plain-text message to one recipient.
type Mail struct {
	To      string
	Subject string
	Text    string
}

// Mailer sends mail: password reset links, for now. Send must honour ctx.
type Mailer interface {
	Send(ctx context.Context, m Mail) error
}

// LogMailer writes each message to the log instead of sending it: the
// development mailer, so that a reset link can be copied from the gateway's
// output. Never use it in production: the log would hold live reset links.
type LogMailer struct {
	Logger *slog.Logger
}

// Send logs m at Info, with its whole text.
func (l LogMailer) Send(ctx context.Context, m Mail) error {
	log := l.Logger
	if log == nil {
		log = slog.Default()
	}
	log.InfoContext(ctx, "mail (not sent: development mailer)", "component", "gateway.mail",
		"to", m.To, "subject", m.Subject, "text", m.Text)
	return nil
}

// SMTPMailer sends through an SMTP server (the organisation's relay, or a
// provider's submission port) with net/smtp. It upgrades to TLS with
// STARTTLS whenever the server offers it, and refuses to send credentials
// over a connection that is not encrypted unless the server is loopback.
type SMTPMailer struct {
	Addr     string // host:port, e.g. "smtp.example.com:587"
	From     string // "Slicehub <no-reply@example.com>"
	Username string // empty: no authentication
	Password string
	// HelloName is sent in EHLO ("localhost" when empty).
	HelloName string
	// TLSConfig for STARTTLS; nil verifies the server's name from Addr.
	TLSConfig *tls.Config
	// Timeout bounds one message when ctx has no deadline (30 s).
	Timeout time.Duration
}

// Send delivers m. A message is built by hand rather than by a library so
// that nothing a user typed can become a header: the recipient and subject
// are checked for line breaks, the body is quoted-printable.
func (sm *SMTPMailer) Send(ctx context.Context, m Mail) error {
	const op = "gateway.smtp"
	from, err := mail.ParseAddress(sm.From)
	if err != nil {
		return fmt.Errorf("%s: sender %q: %w", op, sm.From, err)
	}
	to, err := mail.ParseAddress(m.To)
	if err != nil || strings.ContainsAny(m.To, "\r\n") {
		return fmt.Errorf("%s: recipient %q is not an address", op, m.To)
	}
	if strings.ContainsAny(m.Subject, "\r\n") {
		return fmt.Errorf("%s: subject contains a line break", op)
	}
	msg, err := buildMessage(from, to, m, time.Now())
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}

	if _, ok := ctx.Deadline(); !ok {
		timeout := sm.Timeout
		if timeout == 0 {
			timeout = 30 * time.Second
		}
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	host, _, err := net.SplitHostPort(sm.Addr)
	if err != nil {
		return fmt.Errorf("%s: address %q: %w", op, sm.Addr, err)
	}
	conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", sm.Addr)
	if err != nil {
		return fmt.Errorf("%s: dial: %w", op, err)
	}
	// net/smtp knows no contexts: the deadline on the connection bounds
	// every exchange, and closing it on cancel ends a stuck one.
	deadline, _ := ctx.Deadline()
	_ = conn.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()

	c, err := smtp.NewClient(conn, host)
	if err != nil {
		conn.Close()
		return fmt.Errorf("%s: greeting: %w", op, err)
	}
	defer c.Close()
	hello := sm.HelloName
	if hello == "" {
		hello = "localhost"
	}
	if err := c.Hello(hello); err != nil {
		return fmt.Errorf("%s: EHLO: %w", op, err)
	}
	if ok, _ := c.Extension("STARTTLS"); ok {
		cfg := sm.TLSConfig
		if cfg == nil {
			cfg = &tls.Config{ServerName: host, MinVersion: tls.VersionTLS12}
		}
		if err := c.StartTLS(cfg); err != nil {
			return fmt.Errorf("%s: STARTTLS: %w", op, err)
		}
	}
	if sm.Username != "" {
		// smtp.PlainAuth itself refuses an unencrypted connection to
		// anything but localhost.
		if err := c.Auth(smtp.PlainAuth("", sm.Username, sm.Password, host)); err != nil {
			return fmt.Errorf("%s: AUTH: %w", op, err)
		}
	}
	if err := c.Mail(from.Address); err != nil {
		return fmt.Errorf("%s: MAIL FROM: %w", op, err)
	}
	if err := c.Rcpt(to.Address); err != nil {
		return fmt.Errorf("%s: RCPT TO: %w", op, err)
	}
	w, err := c.Data()
	if err != nil {
		return fmt.Errorf("%s: DATA: %w", op, err)
	}
	if _, err := w.Write(msg); err != nil {
		return fmt.Errorf("%s: writing the message: %w", op, err)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("%s: end of DATA: %w", op, err)
	}
	if err := c.Quit(); err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("%s: QUIT: %w", op, err)
	}
	return nil
}

// buildMessage is an RFC 5322 message: UTF-8 text, quoted-printable.
func buildMessage(from, to *mail.Address, m Mail, now time.Time) ([]byte, error) {
	var id [12]byte
	if _, err := rand.Read(id[:]); err != nil {
		return nil, err
	}
	domain := "localhost"
	if i := strings.LastIndexByte(from.Address, '@'); i >= 0 {
		domain = from.Address[i+1:]
	}
	var b bytes.Buffer
	hdr := func(k, v string) { b.WriteString(k + ": " + v + "\r\n") }
	hdr("From", from.String())
	hdr("To", to.String())
	hdr("Subject", mime.QEncoding.Encode("utf-8", m.Subject))
	hdr("Date", now.Format(time.RFC1123Z))
	hdr("Message-ID", "<"+hex.EncodeToString(id[:])+"@"+domain+">")
	hdr("MIME-Version", "1.0")
	hdr("Content-Type", `text/plain; charset="utf-8"`)
	hdr("Content-Transfer-Encoding", "quoted-printable")
	// Automated mail: no out-of-office replies to it.
	hdr("Auto-Submitted", "auto-generated")
	b.WriteString("\r\n")
	// In text mode the writer turns each line end into CRLF itself.
	qp := quotedprintable.NewWriter(&b)
	if _, err := qp.Write([]byte(m.Text)); err != nil {
		return nil, err
	}
	if err := qp.Close(); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}
