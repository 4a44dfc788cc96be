-- +goose Up
-- Admission control (issue 17): a slice reports its own "importing", and a
-- compromised one could report it forever. So an import permit is granted
-- once per link: a row now outlives its permit ('idle': holding nothing)
-- and remembers, per allocation (alloc_id), whether the slice may still
-- take one (import_due: set when the row is first made for an allocation
-- and when a QR code is granted, cleared when an import permit is).
ALTER TABLE admission_permits
    ADD COLUMN alloc_id text NOT NULL DEFAULT '',
    ADD COLUMN import_due boolean NOT NULL DEFAULT true,
    DROP CONSTRAINT admission_permits_kind_check,
    ADD CONSTRAINT admission_permits_kind_check CHECK (kind IN ('idle', 'waiting', 'pairing', 'import'));

-- +goose Down
DELETE FROM admission_permits WHERE kind = 'idle';
ALTER TABLE admission_permits
    DROP CONSTRAINT admission_permits_kind_check,
    ADD CONSTRAINT admission_permits_kind_check CHECK (kind IN ('waiting', 'pairing', 'import')),
    DROP COLUMN import_due,
    DROP COLUMN alloc_id;
