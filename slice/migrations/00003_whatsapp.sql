-- +goose Up
-- WhatsApp conversations, synced by the page adapter (slice/adapter), and the
-- CRM fields around them: a pipeline stage and labels per contact.
--
-- pg_trgm is a trusted extension (PostgreSQL 13+), so the slice's role,
-- which owns its database, may create it: no superuser step is needed.
CREATE EXTENSION IF NOT EXISTS pg_trgm;

-- wa_id is the contact's WhatsApp user ("15550001@c.us") once a chat linked
-- it; a contact typed in by hand has none until a chat with its phone
-- arrives, and is then merged (SetContactWA).
ALTER TABLE contacts
    ADD COLUMN wa_id text UNIQUE,
    ADD COLUMN stage text NOT NULL DEFAULT 'new'
        CHECK (stage IN ('new', 'qualified', 'proposal', 'won', 'lost')),
    ADD COLUMN search tsvector GENERATED ALWAYS AS (to_tsvector('simple'::regconfig, name || ' ' || phone)) STORED;
CREATE INDEX contacts_search ON contacts USING gin (search);
CREATE INDEX contacts_name_trgm ON contacts USING gin (name gin_trgm_ops);
CREATE INDEX contacts_phone_trgm ON contacts USING gin (phone gin_trgm_ops);
CREATE INDEX contacts_phone ON contacts (phone);

CREATE TABLE labels (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name       text        NOT NULL UNIQUE CHECK (char_length(name) BETWEEN 1 AND 50),
    color      text        NOT NULL DEFAULT '' CHECK (color = '' OR color ~ '^#[0-9a-fA-F]{6}$'),
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE contact_labels (
    contact_id bigint NOT NULL REFERENCES contacts (id) ON DELETE CASCADE,
    label_id   bigint NOT NULL REFERENCES labels (id) ON DELETE CASCADE,
    PRIMARY KEY (contact_id, label_id)
);
CREATE INDEX contact_labels_label ON contact_labels (label_id);

CREATE TABLE chats (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- WhatsApp's chat id ("15550001@c.us", "...@g.us")
    wa_id           text        NOT NULL UNIQUE CHECK (char_length(wa_id) BETWEEN 1 AND 200),
    contact_id      bigint      REFERENCES contacts (id) ON DELETE SET NULL,
    name            text        NOT NULL DEFAULT '',
    unread          integer     NOT NULL DEFAULT 0 CHECK (unread >= 0),
    last_message_at timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX chats_last_message ON chats (last_message_at DESC NULLS LAST, id DESC);

CREATE TABLE messages (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    chat_id         bigint      NOT NULL REFERENCES chats (id) ON DELETE CASCADE,
    -- WhatsApp's serialized message id: what makes every import, catch-up
    -- and live event an upsert, never a duplicate
    wa_id           text        NOT NULL UNIQUE CHECK (char_length(wa_id) BETWEEN 1 AND 300),
    from_me         boolean     NOT NULL,
    body            text        NOT NULL DEFAULT '',
    -- WhatsApp's message type: chat, image, video, audio, ptt, document, sticker...
    type            text        NOT NULL DEFAULT 'chat',
    media_mimetype  text,
    media_size      bigint      CHECK (media_size IS NULL OR media_size >= 0),
    status          text        NOT NULL CHECK (status IN ('pending', 'sent', 'delivered', 'read', 'failed')),
    sent_at         timestamptz NOT NULL,
    -- Outgoing messages posted through the API: one row per key, and the
    -- moment the one WhatsApp send was attempted (NULL: not yet).
    idempotency_key text        UNIQUE CHECK (idempotency_key IS NULL OR char_length(idempotency_key) BETWEEN 1 AND 200),
    send_started_at timestamptz,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    search          tsvector GENERATED ALWAYS AS (to_tsvector('simple'::regconfig, body)) STORED
);
CREATE INDEX messages_chat_time ON messages (chat_id, sent_at DESC, id DESC);
CREATE INDEX messages_search ON messages USING gin (search);
CREATE INDEX messages_time ON messages (sent_at DESC, id DESC);
CREATE INDEX messages_unsent ON messages (id) WHERE status = 'pending' AND from_me;

-- The history import's checkpoint: one row. cursor is the WhatsApp id of
-- the last chat imported completely (chats go in id order); done once all
-- are in.
CREATE TABLE sync_state (
    id             smallint    PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    history_cursor text        NOT NULL DEFAULT '',
    history_done   boolean     NOT NULL DEFAULT false,
    updated_at     timestamptz NOT NULL DEFAULT now()
);
INSERT INTO sync_state DEFAULT VALUES;

-- +goose Down
DROP TABLE sync_state;
DROP TABLE messages;
DROP TABLE chats;
DROP TABLE contact_labels;
DROP TABLE labels;
ALTER TABLE contacts DROP COLUMN search, DROP COLUMN stage, DROP COLUMN wa_id;
