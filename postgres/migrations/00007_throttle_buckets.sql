-- +goose Up
-- Login, signup and password-reset budgets shared by every gateway
-- replica: one token bucket per (budget, key), where key is an email or a
-- client address prefix. Each replica also keeps its own in memory, which
-- turns floods away before they reach this table.
CREATE TABLE throttle_buckets (
    name       text             NOT NULL,
    key        text             NOT NULL,
    tokens     double precision NOT NULL,
    updated_at timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (name, key)
);
-- Pruning deletes the buckets that have been full for a while.
CREATE INDEX throttle_buckets_updated_at ON throttle_buckets (updated_at);

-- +goose Down
DROP TABLE throttle_buckets;
