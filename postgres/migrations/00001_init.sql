-- +goose Up
-- The gateway schema: accounts, server-side sessions, slices with their
-- recorded lifecycle, and the one-time bootstrap claims of allocations.

CREATE TABLE users (
    id            bigserial PRIMARY KEY,
    email         text NOT NULL CHECK (email = lower(email) AND length(email) BETWEEN 3 AND 254),
    password_hash text NOT NULL,
    is_admin      boolean NOT NULL DEFAULT false,
    created_at    timestamptz NOT NULL DEFAULT now(),
    disabled_at   timestamptz
);
CREATE UNIQUE INDEX users_email_key ON users (email);

-- Sessions are stored server-side; the cookie carries a random 256-bit token
-- and only its SHA-256 is kept here, so a leaked table grants nothing.
CREATE TABLE sessions (
    token_hash   bytea PRIMARY KEY CHECK (length(token_hash) = 32),
    user_id      bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_seen_at timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL
);
CREATE INDEX sessions_user_id_idx ON sessions (user_id);
CREATE INDEX sessions_expires_at_idx ON sessions (expires_at);

CREATE TABLE slices (
    id               bigserial PRIMARY KEY,
    state            text NOT NULL CHECK (state IN ('provisioning', 'warm', 'assigned', 'suspended', 'failed', 'retired')),
    -- One slice a user (UNIQUE), one user a slice (a single column).
    user_id          bigint UNIQUE REFERENCES users (id),
    job_id           text,
    db_server        text NOT NULL DEFAULT 'default',
    db_name          text NOT NULL,
    restarts         integer NOT NULL DEFAULT 0,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    state_changed_at timestamptz NOT NULL DEFAULT now(),
    CHECK (state <> 'assigned' OR user_id IS NOT NULL),
    CHECK (state <> 'warm' OR user_id IS NULL)
);
CREATE INDEX slices_state_idx ON slices (state);
CREATE UNIQUE INDEX slices_job_id_key ON slices (job_id) WHERE job_id IS NOT NULL;

-- Secrets live apart from the slice rows, so that listing or logging slices
-- can never carry them.
CREATE TABLE slice_secrets (
    slice_id      bigint PRIMARY KEY REFERENCES slices (id) ON DELETE CASCADE,
    db_role       text NOT NULL,
    db_password   text NOT NULL,
    gateway_token text NOT NULL
);

CREATE TABLE slice_events (
    id         bigserial PRIMARY KEY,
    slice_id   bigint NOT NULL REFERENCES slices (id) ON DELETE CASCADE,
    at         timestamptz NOT NULL DEFAULT now(),
    actor      text NOT NULL,
    from_state text,
    to_state   text NOT NULL,
    reason     text NOT NULL DEFAULT ''
);
CREATE INDEX slice_events_slice_id_idx ON slice_events (slice_id, id);

-- Each Nomad allocation may fetch its slice's credentials once.
CREATE TABLE slice_bootstraps (
    alloc_id   text PRIMARY KEY,
    slice_id   bigint NOT NULL REFERENCES slices (id) ON DELETE CASCADE,
    claimed_at timestamptz NOT NULL DEFAULT now()
);

-- Every gateway replica caches session -> slice; a change of assignment or
-- state is announced so that all of them drop the stale entry.
-- +goose StatementBegin
CREATE FUNCTION slices_notify() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('slice_changed', NEW.id::text);
    IF TG_OP = 'UPDATE' AND OLD.user_id IS DISTINCT FROM NEW.user_id AND OLD.user_id IS NOT NULL THEN
        PERFORM pg_notify('user_changed', OLD.user_id::text);
    END IF;
    IF NEW.user_id IS NOT NULL THEN
        PERFORM pg_notify('user_changed', NEW.user_id::text);
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;
-- +goose StatementEnd

CREATE TRIGGER slices_notify AFTER INSERT OR UPDATE ON slices
    FOR EACH ROW EXECUTE FUNCTION slices_notify();

-- +goose Down
DROP TRIGGER slices_notify ON slices;
DROP FUNCTION slices_notify();
DROP TABLE slice_bootstraps;
DROP TABLE slice_events;
DROP TABLE slice_secrets;
DROP TABLE slices;
DROP TABLE sessions;
DROP TABLE users;
