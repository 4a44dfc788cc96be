-- +goose Up
-- The warm pool's runtime settings an admin changes (slicectl pool pause,
-- resume, scale): one row, read by every gateway replica at start and again
-- on NOTIFY pool_settings, so that a restart or another replica keeps them.
-- min_warm NULL: the configured -min-warm.
CREATE TABLE pool_settings (
    id         boolean     PRIMARY KEY DEFAULT true CHECK (id),
    paused     boolean     NOT NULL DEFAULT false,
    min_warm   integer     CHECK (min_warm >= 0),
    updated_at timestamptz NOT NULL DEFAULT now(),
    updated_by text        NOT NULL DEFAULT ''
);

-- Admin actions that are not slice transitions (those are in slice_events):
-- disabling a user, pool changes, backups and restores, reading logs. One
-- row per action, with the admin and, for a request made with an API key,
-- the key.
CREATE TABLE admin_audit (
    id      bigserial   PRIMARY KEY,
    at      timestamptz NOT NULL DEFAULT now(),
    actor   text        NOT NULL,
    key_id  bigint,
    action  text        NOT NULL,
    target  text        NOT NULL DEFAULT '',
    detail  jsonb       NOT NULL DEFAULT '{}'
);
CREATE INDEX admin_audit_at ON admin_audit (at);

-- The size of each slice's CRM in the telemetry: its contacts and notes.
ALTER TABLE slice_samples ADD COLUMN contacts bigint NOT NULL DEFAULT 0,
                          ADD COLUMN notes    bigint NOT NULL DEFAULT 0;

-- +goose Down
ALTER TABLE slice_samples DROP COLUMN contacts, DROP COLUMN notes;
DROP TABLE admin_audit;
DROP TABLE pool_settings;
