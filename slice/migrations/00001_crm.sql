-- +goose Up
-- The CRM of one slice. Each slice has a database of its own, so no tenant
-- column: isolation is the database boundary itself.
CREATE TABLE contacts (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name       text        NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
    -- digits only, with an optional leading '+': the form WhatsApp addresses use
    phone      text        NOT NULL CHECK (phone ~ '^\+?[0-9]{5,15}$'),
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE notes (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    contact_id bigint      NOT NULL REFERENCES contacts (id) ON DELETE CASCADE,
    body       text        NOT NULL CHECK (char_length(body) BETWEEN 1 AND 10000),
    created_at timestamptz NOT NULL DEFAULT now()
);

-- notes are always read per contact, newest id last
CREATE INDEX notes_contact_id_id ON notes (contact_id, id);

-- +goose Down
DROP TABLE notes;
DROP TABLE contacts;
