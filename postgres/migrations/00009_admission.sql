-- +goose Up
-- Admission control (issue 17): one pairing permit per slice, per host (the
-- host part of the slice's recorded alloc_addr, which Nomad gives as the
-- node's address). 'waiting': in line for a QR code; 'pairing': shown one;
-- 'import': linked and importing its history. Any gateway replica may
-- serve the gate: rows are changed under a per-host advisory lock.
CREATE TABLE admission_permits (
    slice_id     bigint PRIMARY KEY REFERENCES slices (id) ON DELETE CASCADE,
    host         text NOT NULL,
    kind         text NOT NULL CHECK (kind IN ('waiting', 'pairing', 'import')),
    requested_at timestamptz NOT NULL,
    granted_at   timestamptz,
    seen_at      timestamptz NOT NULL
);
CREATE INDEX admission_permits_host ON admission_permits (host, kind, requested_at, slice_id);

-- +goose Down
DROP TABLE admission_permits;
