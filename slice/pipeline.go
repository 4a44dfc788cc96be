package slice

import (
	"context"
	"regexp"
	"strings"
	"unicode"

	"github.com/jackc/pgx/v5"

	"github.com/slicehub/slicehub"
)

// Stage is one step of the sales pipeline.
type Stage struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

// Stages is the fixed default pipeline, in order; the database checks the
// same ids (migration 00003).
var Stages = []Stage{
	{"new", "New"}, {"qualified", "Qualified"}, {"proposal", "Proposal"}, {"won", "Won"}, {"lost", "Lost"},
}

func validStage(id string) bool {
	for _, s := range Stages {
		if s.ID == id {
			return true
		}
	}
	return false
}

// Label tags contacts ("vip", "supplier").
type Label struct {
	ID    int64  `json:"id"`
	Name  string `json:"name"`
	Color string `json:"color"`
}

// NewLabel is the body of POST /api/labels, and of POST
// /api/contacts/{id}/labels with a name (the label is created if new).
type NewLabel struct {
	Name  string `json:"name"`
	Color string `json:"color"`
}

var colorRE = regexp.MustCompile(`^#[0-9a-fA-F]{6}$`)

func (in NewLabel) normalize() (NewLabel, error) {
	const op = "slice.label"
	in.Name = strings.TrimSpace(in.Name)
	if err := checkText(op, "name", in.Name, 50); err != nil {
		return in, err
	}
	if in.Color != "" && !colorRE.MatchString(in.Color) {
		return in, slicehub.Errorf(op, slicehub.KindInvalid, "invalid_color", "color must be #rrggbb")
	}
	return in, nil
}

// Labels lists every label by name.
func (c *CRM) Labels(ctx context.Context) ([]Label, error) {
	rows, err := c.pool.Query(ctx, `SELECT id, name, color FROM labels ORDER BY name, id`)
	if err != nil {
		return nil, dbError("slice.labels", err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowToStructByPos[Label])
	if err != nil {
		return nil, dbError("slice.labels", err)
	}
	return out, nil
}

// CreateLabel adds a label, or returns the one of that name (its color
// updated if one is given): labels are named things, one per name.
func (c *CRM) CreateLabel(ctx context.Context, in NewLabel) (Label, error) {
	const op = "slice.create_label"
	in, err := in.normalize()
	if err != nil {
		return Label{}, err
	}
	var l Label
	err = c.pool.QueryRow(ctx, `INSERT INTO labels (name, color) VALUES ($1, $2)
		ON CONFLICT (name) DO UPDATE SET color = CASE WHEN EXCLUDED.color <> '' THEN EXCLUDED.color ELSE labels.color END
		RETURNING id, name, color`, in.Name, in.Color).Scan(&l.ID, &l.Name, &l.Color)
	if err != nil {
		return Label{}, dbError(op, err)
	}
	return l, nil
}

// LabelRef is the body of POST /api/contacts/{id}/labels: an existing
// label's id, or a name (created if new).
type LabelRef struct {
	LabelID int64  `json:"label_id"`
	Name    string `json:"name"`
	Color   string `json:"color"`
}

// AddLabel tags a contact; tagging twice is no change. It returns the
// contact.
func (c *CRM) AddLabel(ctx context.Context, contactID int64, ref LabelRef) (Contact, error) {
	const op = "slice.add_label"
	id := ref.LabelID
	switch {
	case id > 0 && ref.Name != "":
		return Contact{}, slicehub.Errorf(op, slicehub.KindInvalid, "invalid_label", "give label_id or name, not both")
	case id <= 0 && ref.Name == "":
		return Contact{}, slicehub.Errorf(op, slicehub.KindInvalid, "invalid_label", "label_id or name is required")
	case id <= 0:
		l, err := c.CreateLabel(ctx, NewLabel{Name: ref.Name, Color: ref.Color})
		if err != nil {
			return Contact{}, err
		}
		id = l.ID
	}
	var exists bool
	if err := c.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM labels WHERE id = $1)`, id).Scan(&exists); err != nil {
		return Contact{}, dbError(op, err)
	}
	if !exists {
		return Contact{}, slicehub.Errorf(op, slicehub.KindNotFound, "label_not_found", "no label with id %d", id)
	}
	if _, err := c.pool.Exec(ctx, `INSERT INTO contact_labels (contact_id, label_id) VALUES ($1, $2) ON CONFLICT DO NOTHING`, contactID, id); err != nil {
		return Contact{}, dbError(op, err)
	}
	return c.Contact(ctx, contactID)
}

// RemoveLabel untags a contact and returns it.
func (c *CRM) RemoveLabel(ctx context.Context, contactID, labelID int64) (Contact, error) {
	const op = "slice.remove_label"
	if _, err := c.pool.Exec(ctx, `DELETE FROM contact_labels WHERE contact_id = $1 AND label_id = $2`, contactID, labelID); err != nil {
		return Contact{}, dbError(op, err)
	}
	return c.Contact(ctx, contactID)
}

// withLabels fills the Labels of cs in one query.
func (c *CRM) withLabels(ctx context.Context, cs []Contact) error {
	if len(cs) == 0 {
		return nil
	}
	ids := make([]int64, len(cs))
	at := make(map[int64]int, len(cs))
	for i, ct := range cs {
		ids[i], at[ct.ID] = ct.ID, i
		if cs[i].Labels == nil {
			cs[i].Labels = []Label{}
		}
	}
	rows, err := c.pool.Query(ctx, `SELECT cl.contact_id, l.id, l.name, l.color FROM contact_labels cl
		JOIN labels l ON l.id = cl.label_id WHERE cl.contact_id = ANY($1) ORDER BY l.name, l.id`, ids)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var cid int64
		var l Label
		if err := rows.Scan(&cid, &l.ID, &l.Name, &l.Color); err != nil {
			return err
		}
		i := at[cid]
		cs[i].Labels = append(cs[i].Labels, l)
	}
	return rows.Err()
}

// ContactPatch is the body of PATCH /api/contacts/{id}: the fields given
// change, the others stay.
type ContactPatch struct {
	Name  *string `json:"name"`
	Stage *string `json:"stage"`
}

// UpdateContact applies a patch in one statement: all of it or nothing.
func (c *CRM) UpdateContact(ctx context.Context, id int64, p ContactPatch) (Contact, error) {
	const op = "slice.update_contact"
	if p.Name == nil && p.Stage == nil {
		return Contact{}, slicehub.Errorf(op, slicehub.KindInvalid, "empty_patch", "give name or stage")
	}
	if p.Name != nil {
		n := strings.TrimSpace(*p.Name)
		if err := checkText(op, "name", n, maxNameLen); err != nil {
			return Contact{}, err
		}
		p.Name = &n
	}
	if p.Stage != nil && !validStage(*p.Stage) {
		return Contact{}, slicehub.Errorf(op, slicehub.KindInvalid, "invalid_stage", "stage must be one of new, qualified, proposal, won, lost")
	}
	tag, err := c.pool.Exec(ctx, `UPDATE contacts SET name = COALESCE($2, name), stage = COALESCE($3, stage) WHERE id = $1`, id, p.Name, p.Stage)
	if err != nil {
		return Contact{}, dbError(op, err)
	}
	if tag.RowsAffected() == 0 {
		return Contact{}, slicehub.Errorf(op, slicehub.KindNotFound, "contact_not_found", "no contact with id %d", id)
	}
	return c.Contact(ctx, id)
}

// SearchResult is GET /api/search.
type SearchResult struct {
	Messages []Message `json:"messages"`
	Contacts []Contact `json:"contacts"`
}

// searchTerms splits a query into words of letters and digits, the way the
// 'simple' text search configuration does.
func searchTerms(q string) []string {
	return strings.FieldsFunc(strings.ToLower(q), func(r rune) bool { return !unicode.IsLetter(r) && !unicode.IsDigit(r) })
}

// prefixQuery is a tsquery matching every term as a prefix ("" for none).
// The terms are letters and digits only, so nothing in them is tsquery
// syntax.
func prefixQuery(terms []string) string {
	parts := make([]string, len(terms))
	for i, t := range terms {
		parts[i] = t + ":*"
	}
	return strings.Join(parts, " & ")
}

// Search finds messages by PostgreSQL full-text search (every word, as a
// prefix, newest first) and contacts by full text on name and phone plus
// trigram similarity (pg_trgm) for partial names and phone numbers.
func (c *CRM) Search(ctx context.Context, q string, limit int) (SearchResult, error) {
	const op = "slice.search"
	q = strings.TrimSpace(q)
	if q == "" || len(q) > 200 {
		return SearchResult{}, slicehub.Errorf(op, slicehub.KindInvalid, "invalid_query", "q must be 1 to 200 characters")
	}
	res := SearchResult{Messages: []Message{}, Contacts: []Contact{}}
	tsq := prefixQuery(searchTerms(q))
	if tsq != "" {
		rows, err := c.pool.Query(ctx, `SELECT `+messageCols+` FROM messages m
			WHERE m.search @@ to_tsquery('simple', $1) ORDER BY m.sent_at DESC, m.id DESC LIMIT $2`, tsq, limit)
		if err != nil {
			return res, dbError(op, err)
		}
		res.Messages, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (Message, error) { return scanMessage(r) })
		if err != nil {
			return res, dbError(op, err)
		}
		if res.Messages == nil {
			res.Messages = []Message{}
		}
	}
	// Contacts: words, a name fragment, or a phone fragment in any format.
	digits := strings.Map(func(r rune) rune {
		if r >= '0' && r <= '9' {
			return r
		}
		return -1
	}, q)
	like := "%" + strings.NewReplacer(`\`, `\\`, "%", `\%`, "_", `\_`).Replace(q) + "%"
	rows, err := c.pool.Query(ctx, `SELECT `+contactCols+` FROM contacts
		WHERE ($1 <> '' AND search @@ to_tsquery('simple', $1))
		   OR name ILIKE $2
		   OR (length($3) >= 3 AND phone LIKE '%' || $3 || '%')
		ORDER BY similarity(name, $4) DESC, id LIMIT $5`, tsq, like, digits, q, limit)
	if err != nil {
		return res, dbError(op, err)
	}
	res.Contacts, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (Contact, error) { return scanContact(r) })
	if err != nil {
		return res, dbError(op, err)
	}
	if res.Contacts == nil {
		res.Contacts = []Contact{}
	}
	if err := c.withLabels(ctx, res.Contacts); err != nil {
		return res, dbError(op, err)
	}
	return res, nil
}
