-- +goose Up
-- Accounts beyond sign-in: API keys of the ops CLI, password reset tokens,
-- and the notifications that keep every gateway replica's session cache
-- honest when a session ends or a user changes.

-- Only the SHA-256 of a key is kept: the key is shown once, at creation.
CREATE TABLE admin_keys (
    id           bigserial PRIMARY KEY,
    name         text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    key_hash     bytea NOT NULL CHECK (length(key_hash) = 32),
    created_by   bigint NOT NULL REFERENCES users (id),
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    revoked_at   timestamptz
);
CREATE UNIQUE INDEX admin_keys_key_hash_key ON admin_keys (key_hash);

-- A reset token is random, stored hashed, short-lived and used once.
CREATE TABLE password_resets (
    token_hash bytea PRIMARY KEY CHECK (length(token_hash) = 32),
    user_id    bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    used_at    timestamptz
);
CREATE INDEX password_resets_user_id_idx ON password_resets (user_id);

-- Each replica caches sessions for a few seconds. A logout, a password
-- reset or an expiry sweep on one replica, and an admin disabling a user
-- anywhere (even by hand in psql), must reach the others at once: the
-- gateway LISTENs on user_changed and drops that user's cached sessions.
-- Triggers rather than application code, so that no path can forget.
-- PostgreSQL folds identical notifications of one transaction into one,
-- so a bulk delete costs one notification per user, not per row.
-- +goose StatementBegin
CREATE FUNCTION sessions_notify() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('user_changed', OLD.user_id::text);
    RETURN OLD;
END;
$$ LANGUAGE plpgsql;
-- +goose StatementEnd

CREATE TRIGGER sessions_notify AFTER DELETE ON sessions
    FOR EACH ROW EXECUTE FUNCTION sessions_notify();

-- +goose StatementBegin
CREATE FUNCTION users_notify() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('user_changed', NEW.id::text);
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;
-- +goose StatementEnd

CREATE TRIGGER users_notify AFTER UPDATE ON users
    FOR EACH ROW
    WHEN (OLD.disabled_at IS DISTINCT FROM NEW.disabled_at
       OR OLD.is_admin IS DISTINCT FROM NEW.is_admin
       OR OLD.password_hash IS DISTINCT FROM NEW.password_hash
       OR OLD.email IS DISTINCT FROM NEW.email)
    EXECUTE FUNCTION users_notify();

-- +goose Down
DROP TRIGGER users_notify ON users;
DROP FUNCTION users_notify();
DROP TRIGGER sessions_notify ON sessions;
DROP FUNCTION sessions_notify();
DROP TABLE password_resets;
DROP TABLE admin_keys;
