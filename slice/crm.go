package slice

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"

	"github.com/slicehub/slicehub"
	"github.com/slicehub/slicehub/internal/pgerr"
)

//go:embed migrations/*.sql
var migrations embed.FS

// MaxPoolConns caps the slice's connections. Hundreds of slices share one
// PostgreSQL server whose max_connections is about 100 by default: every
// connection a slice holds is one another slice cannot have.
const MaxPoolConns = 3

// Contact is a person the user talks to on WhatsApp.
type Contact struct {
	ID    int64  `json:"id"`
	Name  string `json:"name"`
	Phone string `json:"phone"`
	// WAID is the contact's WhatsApp user once a chat linked it.
	WAID      *string   `json:"wa_id"`
	Stage     string    `json:"stage"`
	Labels    []Label   `json:"labels"`
	CreatedAt time.Time `json:"created_at"`
}

// contactCols selects a Contact (labels are filled by withLabels).
const contactCols = `id, name, phone, wa_id, stage, created_at`

func scanContact(r pgx.Row) (Contact, error) {
	var ct Contact
	err := r.Scan(&ct.ID, &ct.Name, &ct.Phone, &ct.WAID, &ct.Stage, &ct.CreatedAt)
	ct.Labels = []Label{}
	return ct, err
}

// Note is a free-text note on a contact.
type Note struct {
	ID        int64     `json:"id"`
	ContactID int64     `json:"contact_id"`
	Body      string    `json:"body"`
	CreatedAt time.Time `json:"created_at"`
}

// CRM is the contacts and notes store in the slice's own database.
type CRM struct {
	pool *pgxpool.Pool
}

// OpenPool builds the slice's connection pool. It does not connect: the
// first query does, so that a database that is down at start only delays
// readiness instead of failing the process.
func OpenPool(databaseURL, sliceID string) (*pgxpool.Pool, error) {
	return openPool(databaseURL, sliceID, PoolLimits{})
}

// PoolLimits overrides the pool's size and idle timeout; zero fields keep
// MaxPoolConns and one minute.
type PoolLimits struct {
	MaxConns int32
	IdleTime time.Duration
}

func openPool(databaseURL, sliceID string, lim PoolLimits) (*pgxpool.Pool, error) {
	const op = "slice.open_pool"
	cfg, err := pgxpool.ParseConfig(databaseURL)
	if err != nil {
		// pgx's parse errors can quote the URL, password included.
		return nil, &slicehub.Error{Op: op, Kind: slicehub.KindInvalid, Message: "invalid database url"}
	}
	cfg.MaxConns = MaxPoolConns
	if lim.MaxConns > 0 {
		cfg.MaxConns = lim.MaxConns
	}
	cfg.MinConns = 0
	// Give idle connections back soon: a slice is idle most of the time, and
	// PostgreSQL's connection slots are the fleet's scarcest resource.
	cfg.MaxConnIdleTime = time.Minute
	if lim.IdleTime > 0 {
		cfg.MaxConnIdleTime = lim.IdleTime
	}
	cfg.HealthCheckPeriod = 30 * time.Second
	// pg_stat_activity then tells which slice holds which connection.
	cfg.ConnConfig.RuntimeParams["application_name"] = "slice-" + sliceID
	if cfg.ConnConfig.ConnectTimeout == 0 || cfg.ConnConfig.ConnectTimeout > 5*time.Second {
		cfg.ConnConfig.ConnectTimeout = 5 * time.Second
	}
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	return pool, nil
}

// NewCRM returns the store over pool.
func NewCRM(pool *pgxpool.Pool) *CRM { return &CRM{pool: pool} }

// Migrate applies the embedded migrations not yet applied. goose's session
// lock makes an overlapping start of two allocations of the same slice safe.
func (c *CRM) Migrate(ctx context.Context) error {
	const op = "slice.migrate"
	sqlDB := stdlib.OpenDBFromPool(c.pool)
	defer sqlDB.Close()
	sub, err := fs.Sub(migrations, "migrations")
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	locker, err := lock.NewPostgresSessionLocker()
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	p, err := goose.NewProvider(goose.DialectPostgres, sqlDB, sub, goose.WithSessionLocker(locker))
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	if _, err := p.Up(ctx); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	return nil
}

// Ping checks that the database answers.
func (c *CRM) Ping(ctx context.Context) error { return c.pool.Ping(ctx) }

// Input limits. The database has the same checks, as a second line.
const (
	maxNameLen = 200
	maxNoteLen = 10000
	maxPageLen = 200
)

// NewContact is the input of CreateContact.
type NewContact struct {
	Name  string `json:"name"`
	Phone string `json:"phone"`
}

// normalize validates the input and returns it in stored form: the name
// trimmed, the phone reduced to an optional '+' and digits.
func (in NewContact) normalize() (NewContact, error) {
	const op = "slice.contact"
	name := strings.TrimSpace(in.Name)
	if err := checkText(op, "name", name, maxNameLen); err != nil {
		return in, err
	}
	phone, err := normalizePhone(in.Phone)
	if err != nil {
		return in, err
	}
	return NewContact{Name: name, Phone: phone}, nil
}

// normalizePhone accepts what people type (spaces, dashes, dots,
// parentheses) and keeps '+' and digits, the form WhatsApp uses.
func normalizePhone(s string) (string, error) {
	const op = "slice.contact"
	var b strings.Builder
	for i, r := range strings.TrimSpace(s) {
		switch {
		case r >= '0' && r <= '9':
			b.WriteRune(r)
		case r == '+' && i == 0:
			b.WriteRune(r)
		case r == ' ' || r == '-' || r == '.' || r == '(' || r == ')':
		default:
			return "", slicehub.Errorf(op, slicehub.KindInvalid, "invalid_phone",
				"phone may contain only digits, a leading +, spaces, dashes, dots and parentheses")
		}
	}
	p := b.String()
	digits := strings.TrimPrefix(p, "+")
	if len(digits) < 5 || len(digits) > 15 {
		return "", slicehub.Errorf(op, slicehub.KindInvalid, "invalid_phone", "phone must have 5 to 15 digits")
	}
	return p, nil
}

// checkText enforces a required, bounded, printable text field.
func checkText(op, field, s string, maxLen int) error {
	if s == "" {
		return slicehub.Errorf(op, slicehub.KindInvalid, "invalid_"+field, "%s is required", field)
	}
	if !utf8.ValidString(s) {
		return slicehub.Errorf(op, slicehub.KindInvalid, "invalid_"+field, "%s is not valid UTF-8", field)
	}
	if n := utf8.RuneCountInString(s); n > maxLen {
		return slicehub.Errorf(op, slicehub.KindInvalid, "invalid_"+field, "%s is longer than %d characters", field, maxLen)
	}
	for _, r := range s {
		// Newlines and tabs are fine in a note; other control characters are
		// never typed by a person and break terminals and CSV exports.
		if unicode.IsControl(r) && r != '\n' && r != '\t' && r != '\r' {
			return slicehub.Errorf(op, slicehub.KindInvalid, "invalid_"+field, "%s contains control characters", field)
		}
	}
	return nil
}

// CreateContact stores a new contact.
func (c *CRM) CreateContact(ctx context.Context, in NewContact) (Contact, error) {
	const op = "slice.create_contact"
	in, err := in.normalize()
	if err != nil {
		return Contact{}, err
	}
	var ct Contact
	err = c.pool.QueryRow(ctx,
		`INSERT INTO contacts (name, phone) VALUES ($1, $2) RETURNING `+contactCols,
		in.Name, in.Phone).Scan(&ct.ID, &ct.Name, &ct.Phone, &ct.WAID, &ct.Stage, &ct.CreatedAt)
	ct.Labels = []Label{}
	if err != nil {
		return Contact{}, dbError(op, err)
	}
	return ct, nil
}

// ListContacts returns up to limit contacts with id > after, by id: keyset
// pagination, stable while contacts are being added.
func (c *CRM) ListContacts(ctx context.Context, after int64, limit int) ([]Contact, error) {
	const op = "slice.list_contacts"
	rows, err := c.pool.Query(ctx,
		`SELECT `+contactCols+` FROM contacts WHERE id > $1 ORDER BY id LIMIT $2`, after, limit)
	if err != nil {
		return nil, dbError(op, err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Contact, error) { return scanContact(r) })
	if err != nil {
		return nil, dbError(op, err)
	}
	if err := c.withLabels(ctx, out); err != nil {
		return nil, dbError(op, err)
	}
	return out, nil
}

// Contact returns one contact.
func (c *CRM) Contact(ctx context.Context, id int64) (Contact, error) {
	const op = "slice.contact"
	ct, err := scanContact(c.pool.QueryRow(ctx, `SELECT `+contactCols+` FROM contacts WHERE id = $1`, id))
	if err != nil {
		return Contact{}, dbError(op, err)
	}
	one := []Contact{ct}
	if err := c.withLabels(ctx, one); err != nil {
		return Contact{}, dbError(op, err)
	}
	return one[0], nil
}

// CreateNote adds a note to a contact.
func (c *CRM) CreateNote(ctx context.Context, contactID int64, body string) (Note, error) {
	const op = "slice.create_note"
	body = strings.TrimSpace(body)
	if err := checkText(op, "body", body, maxNoteLen); err != nil {
		return Note{}, err
	}
	var n Note
	err := c.pool.QueryRow(ctx,
		`INSERT INTO notes (contact_id, body) VALUES ($1, $2) RETURNING id, contact_id, body, created_at`,
		contactID, body).Scan(&n.ID, &n.ContactID, &n.Body, &n.CreatedAt)
	if err != nil {
		return Note{}, dbError(op, err)
	}
	return n, nil
}

// Notes returns the notes of a contact, oldest first; not found if the
// contact does not exist (an empty list would hide a wrong id).
func (c *CRM) Notes(ctx context.Context, contactID int64, after int64, limit int) ([]Note, error) {
	const op = "slice.notes"
	var exists bool
	if err := c.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM contacts WHERE id = $1)`, contactID).Scan(&exists); err != nil {
		return nil, dbError(op, err)
	}
	if !exists {
		return nil, slicehub.Errorf(op, slicehub.KindNotFound, "contact_not_found", "no contact with id %d", contactID)
	}
	rows, err := c.pool.Query(ctx,
		`SELECT id, contact_id, body, created_at FROM notes WHERE contact_id = $1 AND id > $2 ORDER BY id LIMIT $3`,
		contactID, after, limit)
	if err != nil {
		return nil, dbError(op, err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Note, error) {
		var n Note
		err := r.Scan(&n.ID, &n.ContactID, &n.Body, &n.CreatedAt)
		return n, err
	})
	if err != nil {
		return nil, dbError(op, err)
	}
	return out, nil
}

// dbError gives a database error its kind: a missing row or a missing
// referenced contact is "not found", a violated check is "invalid" (the Go
// validation should have caught it first), a database that is down is
// "unavailable", anything else is internal.
func dbError(op string, err error) error {
	if errors.Is(err, pgx.ErrNoRows) {
		return slicehub.Errorf(op, slicehub.KindNotFound, "contact_not_found", "no such contact")
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case "23503": // foreign_key_violation: the contact is gone
			return &slicehub.Error{Op: op, Kind: slicehub.KindNotFound, Code: "contact_not_found", Message: "no such contact", Err: err}
		case "23514", "22001": // check_violation, string_data_right_truncation
			return &slicehub.Error{Op: op, Kind: slicehub.KindInvalid, Err: err}
		}
	}
	// A database that cannot be reached, died under the query (a
	// PostgreSQL restart) or missed the deadline: retry later, not a bug.
	if errors.Is(err, context.Canceled) || pgerr.Unavailable(err) {
		return &slicehub.Error{Op: op, Kind: slicehub.KindUnavailable, Err: err}
	}
	return slicehub.Wrap(op, slicehub.KindInternal, err)
}
