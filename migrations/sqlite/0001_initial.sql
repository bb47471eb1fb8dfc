CREATE TABLE users (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    username      TEXT    NOT NULL UNIQUE,
    password_hash TEXT    NOT NULL,
    email         TEXT    UNIQUE,
    phone         TEXT    UNIQUE,
    realm         TEXT,
    created_at    INTEGER NOT NULL
);

-- Session tokens and refresh keys are stored only as SHA-256 hashes.
CREATE TABLE sessions (
    id                 INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id            INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_hash         TEXT    NOT NULL UNIQUE,
    refresh_hash       TEXT    NOT NULL UNIQUE,
    created_at         INTEGER NOT NULL,
    expires_at         INTEGER NOT NULL,
    refresh_expires_at INTEGER NOT NULL
);

CREATE INDEX sessions_user_id ON sessions (user_id);
CREATE INDEX sessions_refresh_expires_at ON sessions (refresh_expires_at);

-- Both families in one table: rows are addressed by (user, family, serial),
-- and a phone's push token is held by at most one row per family.
CREATE TABLE push_tokens (
    user_id       INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    family        TEXT    NOT NULL CHECK (family IN ('ring', 'message')),
    serial        INTEGER NOT NULL CHECK (serial >= 0),
    push_token    TEXT    NOT NULL,
    language      TEXT    NOT NULL,
    dev           INTEGER NOT NULL,
    bundleid      TEXT    NOT NULL,
    os            TEXT    NOT NULL,
    os_token      TEXT    NOT NULL,
    push_platform TEXT    NOT NULL,
    phone_model   TEXT    NOT NULL,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    PRIMARY KEY (user_id, family, serial),
    UNIQUE (family, push_token)
);
