-- +goose Up
-- Telemetry: one row per slice (or node) per collection, kept for the
-- retention period (default 7 days) and pruned by the leader's collector.
-- No foreign key to slices: samples of a retired slice stay readable until
-- they age out, and the collector never has to order its writes.
CREATE TABLE slice_samples (
    slice_id         bigint      NOT NULL,
    at               timestamptz NOT NULL,
    alloc_id         text        NOT NULL DEFAULT '',
    node_id          text        NOT NULL DEFAULT '',
    memory_bytes     bigint      NOT NULL DEFAULT 0,
    memory_max_bytes bigint      NOT NULL DEFAULT 0,
    cpu_percent      double precision NOT NULL DEFAULT 0,
    db_bytes         bigint      NOT NULL DEFAULT 0,
    wa_state         text        NOT NULL DEFAULT '',
    healthy          boolean     NOT NULL DEFAULT false,
    PRIMARY KEY (slice_id, at)
);
-- Pruning deletes by time across all slices.
CREATE INDEX slice_samples_at ON slice_samples (at);

CREATE TABLE node_samples (
    node_id      text        NOT NULL,
    at           timestamptz NOT NULL,
    name         text        NOT NULL DEFAULT '',
    memory_used  bigint      NOT NULL DEFAULT 0,
    memory_total bigint      NOT NULL DEFAULT 0,
    cpu_percent  double precision NOT NULL DEFAULT 0,
    disk_used    bigint      NOT NULL DEFAULT 0,
    disk_total   bigint      NOT NULL DEFAULT 0,
    PRIMARY KEY (node_id, at)
);
CREATE INDEX node_samples_at ON node_samples (at);

-- Alerts: one row per firing. While resolved_at is NULL the alert is
-- active; the partial unique index is what deduplicates, so a second leader
-- (after a failover) cannot fire the same alert again.
CREATE TABLE alerts (
    id          bigserial   PRIMARY KEY,
    rule        text        NOT NULL,
    subject     text        NOT NULL,
    message     text        NOT NULL DEFAULT '',
    fired_at    timestamptz NOT NULL,
    resolved_at timestamptz,
    last_value  double precision NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX alerts_active ON alerts (rule, subject) WHERE resolved_at IS NULL;
CREATE INDEX alerts_fired_at ON alerts (fired_at);

-- +goose Down
DROP TABLE alerts;
DROP TABLE node_samples;
DROP TABLE slice_samples;
