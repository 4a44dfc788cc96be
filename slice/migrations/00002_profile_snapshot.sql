-- +goose Up
-- The latest snapshot of the Chromium profile's login state (IndexedDB, Local
-- Storage, cookies) as a gzipped tar: what a slice placed on a node without
-- its profile directory restores. One row, replaced on every save, so the
-- table never grows; generation counts the saves, and a profile directory
-- records the generation it last matched.
CREATE TABLE profile_snapshot (
    id         smallint    PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    generation bigint      NOT NULL CHECK (generation > 0),
    sha256     bytea       NOT NULL CHECK (octet_length(sha256) = 32),
    data       bytea       NOT NULL,
    files      integer     NOT NULL CHECK (files >= 0),
    alloc_id   text        NOT NULL DEFAULT '',
    taken_at   timestamptz NOT NULL DEFAULT now()
);

-- The data is gzipped already: compressing it again in TOAST only costs CPU.
ALTER TABLE profile_snapshot ALTER COLUMN data SET STORAGE EXTERNAL;

-- +goose Down
DROP TABLE profile_snapshot;
