-- +goose Up
-- Route provenance: the allocation the scheduler saw Nomad place for the
-- slice's current job, and the address Nomad gave its http port. The route
-- table accepts a Consul instance only when it is Nomad's registration of
-- exactly this allocation at exactly this address (see consul.Routes).
-- Cleared whenever job_id changes.
ALTER TABLE slices ADD COLUMN alloc_id text, ADD COLUMN alloc_addr text;

-- The low-privilege role that gateway-side code uses to read inside slice
-- databases (telemetry). One row: its password, shared by the replicas.
CREATE TABLE monitor_role (
    only_one boolean PRIMARY KEY DEFAULT true CHECK (only_one),
    rolname  text NOT NULL,
    password text NOT NULL
);

-- +goose Down
DROP TABLE monitor_role;
ALTER TABLE slices DROP COLUMN alloc_addr, DROP COLUMN alloc_id;
