-- +goose Up
-- Billing: one Stripe customer per user and what Slicehub last learnt of
-- that customer's subscription, the Stripe events already processed (each
-- exactly once), the data exports offered before a slice is retired, and
-- an audit log of every billing decision.

CREATE TABLE billing_accounts (
    user_id              bigint PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    -- Random, fixed at the row's creation: with the user id it makes the
    -- idempotency key of the customer's creation at Stripe, so that a retry
    -- never creates a second customer, and a user id reused by another
    -- database (a reset test environment) never gets an old customer back.
    customer_nonce       text NOT NULL,
    stripe_customer_id   text UNIQUE,
    -- The subscription that decides the entitlement, as last re-read from
    -- Stripe (never as an event said it).
    subscription_id      text,
    status               text NOT NULL DEFAULT '',
    price_id             text NOT NULL DEFAULT '',
    launch_price         boolean NOT NULL DEFAULT false,
    current_period_end   timestamptz,
    cancel_at_period_end boolean NOT NULL DEFAULT false,
    ended_at             timestamptz,
    trial_end            timestamptz,
    -- When Slicehub first saw the subscription past due: the grace period
    -- runs from here. NULL while it is not past due.
    past_due_since       timestamptz,
    complimentary        boolean NOT NULL DEFAULT false,
    complimentary_reason text NOT NULL DEFAULT '',
    -- When billing suspended the user's slice; NULL when billing did not
    -- (an admin's suspension is never lifted by a payment).
    suspended_at         timestamptz,
    synced_at            timestamptz,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX billing_accounts_subscription_key ON billing_accounts (subscription_id) WHERE subscription_id IS NOT NULL;
-- The periodic check only looks at accounts that may owe an action.
CREATE INDEX billing_accounts_attention_idx ON billing_accounts (user_id)
    WHERE status IN ('past_due', 'unpaid', 'paused', 'canceled') OR suspended_at IS NOT NULL;

-- A verified Stripe event is recorded in the transaction that applies it:
-- a redelivery finds its row and does nothing, and a failure rolls the
-- row back with everything else, so Stripe's retry applies it again.
CREATE TABLE billing_events (
    event_id     text PRIMARY KEY,
    type         text NOT NULL,
    livemode     boolean NOT NULL,
    created_at   timestamptz NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    user_id      bigint REFERENCES users (id) ON DELETE SET NULL,
    -- applied, ignored (not about one of our customers, or a type we do
    -- not act on), stale (about a subscription that no longer decides).
    outcome      text NOT NULL
);
CREATE INDEX billing_events_processed_idx ON billing_events (processed_at);

-- Dumps of a slice database made for its user before the slice is
-- retired. Rows outlive the slice: the user downloads the file later.
CREATE TABLE billing_exports (
    id         bigserial PRIMARY KEY,
    user_id    bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    slice_id   bigint REFERENCES slices (id) ON DELETE SET NULL,
    path       text NOT NULL,
    size_bytes bigint NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX billing_exports_user_idx ON billing_exports (user_id, id);

CREATE TABLE billing_audit (
    id       bigserial PRIMARY KEY,
    at       timestamptz NOT NULL DEFAULT now(),
    user_id  bigint REFERENCES users (id) ON DELETE SET NULL,
    actor    text NOT NULL,
    action   text NOT NULL,
    -- The Stripe event that caused it, when one did.
    event_id text NOT NULL DEFAULT '',
    detail   text NOT NULL DEFAULT ''
);
CREATE INDEX billing_audit_user_idx ON billing_audit (user_id, id);

-- +goose Down
DROP TABLE billing_audit;
DROP TABLE billing_exports;
DROP TABLE billing_events;
DROP TABLE billing_accounts;
