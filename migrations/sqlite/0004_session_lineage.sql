-- Every session descends from one password login: `login_id` is shared by
-- every session that refreshes rotate from it, `login_at` is when that
-- login was. A reused refresh key revokes the login's sessions, and no
-- refresh extends a login past PUSHTOKEN_SESSION_MAX_AGE. A session from
-- before this migration is its own login, made when it was created.
ALTER TABLE sessions ADD COLUMN login_id INTEGER NOT NULL DEFAULT 0;
ALTER TABLE sessions ADD COLUMN login_at INTEGER NOT NULL DEFAULT 0;
UPDATE sessions SET login_id = id, login_at = created_at;
CREATE INDEX sessions_login_id ON sessions (login_id);

-- Refresh keys used once, kept until they would have expired: a second use
-- is a sign that the key leaked.
CREATE TABLE used_refresh_keys (
    refresh_hash TEXT    PRIMARY KEY,
    user_id      INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    login_id     INTEGER NOT NULL,
    used_at      INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL
);

CREATE INDEX used_refresh_keys_login_id ON used_refresh_keys (login_id);
CREATE INDEX used_refresh_keys_expires_at ON used_refresh_keys (expires_at);
