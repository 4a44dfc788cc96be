-- +goose Up
-- The scheduler's bookkeeping beyond the state machine of 00001: when a
-- slice's database became ready and its current job was dispatched (the
-- progress a waiting user follows), what is left to do once it is retired
-- (final dump, then drop after retention), and the failures that count
-- against its restart budget.

ALTER TABLE slices
    ADD COLUMN db_ready_at   timestamptz,
    ADD COLUMN dispatched_at timestamptz,
    -- Retired slices only: whether the database may hold a user's data and
    -- so must be dumped before it is dropped, where the dump went, and
    -- when the database was dropped (NULL: still there).
    ADD COLUMN needs_dump    boolean NOT NULL DEFAULT false,
    ADD COLUMN dump_path     text,
    ADD COLUMN db_dropped_at timestamptz;

-- The retention step of every reconcile looks for these; keep it cheap
-- however many slices were ever retired.
CREATE INDEX slices_retired_pending_idx ON slices (id) WHERE state = 'retired' AND db_dropped_at IS NULL;

-- Failures count against a slice's restart budget within a window, and the
-- window must survive a change of leader, so they are kept here rather than
-- in the leader's memory. observed is Nomad's cumulative count for job_id
-- (task restarts plus failed allocations) when the row was written, so a
-- new leader that sees the same count adds nothing; a repair by the
-- scheduler itself (re-dispatch) adds 1 with observed 0.
CREATE TABLE slice_failures (
    id       bigserial PRIMARY KEY,
    slice_id bigint NOT NULL REFERENCES slices (id) ON DELETE CASCADE,
    job_id   text NOT NULL,
    at       timestamptz NOT NULL,
    observed integer NOT NULL CHECK (observed >= 0),
    added    integer NOT NULL CHECK (added > 0),
    reason   text NOT NULL
);
CREATE INDEX slice_failures_slice_idx ON slice_failures (slice_id, at);

-- +goose Down
DROP TABLE slice_failures;
DROP INDEX slices_retired_pending_idx;
ALTER TABLE slices
    DROP COLUMN db_ready_at,
    DROP COLUMN dispatched_at,
    DROP COLUMN needs_dump,
    DROP COLUMN dump_path,
    DROP COLUMN db_dropped_at;
