-- Secrets the server makes for itself at first start and keeps, such as the
-- key of the push socket's tokens (the same on every instance).
CREATE TABLE server_secrets (
    name       TEXT    PRIMARY KEY,
    value      TEXT    NOT NULL,
    created_at INTEGER NOT NULL
);

-- The clients the push socket issued a token to, by token: what each sent
-- when it registered (kept for the operator), and when it last did.
CREATE TABLE socket_clients (
    token         TEXT    PRIMARY KEY,
    imei          TEXT    NOT NULL,
    imsi          TEXT    NOT NULL,
    type          TEXT    NOT NULL,
    brand         TEXT    NOT NULL,
    bundle_id     TEXT    NOT NULL,
    created_at    INTEGER NOT NULL,
    registered_at INTEGER NOT NULL
);

-- The push-socket connections held now, by token, and the instance holding
-- each: one connection per token across every instance.
CREATE TABLE socket_connections (
    token      TEXT    PRIMARY KEY,
    instance   TEXT    NOT NULL,
    since      INTEGER NOT NULL
);

-- Every event sent to a user: the event as sent (with its time), by family.
CREATE TABLE events (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id    INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    family     TEXT    NOT NULL CHECK (family IN ('ring', 'message')),
    type       TEXT    NOT NULL,
    uid        TEXT    NOT NULL,
    time       INTEGER NOT NULL,
    body       TEXT    NOT NULL,
    created_at INTEGER NOT NULL
);

CREATE INDEX events_user_id ON events (user_id, id);
CREATE INDEX events_user_uid ON events (user_id, uid, id);
CREATE INDEX events_created_at ON events (created_at);

-- Events on their way to a push-socket token, until its connection takes
-- them or they expire.
CREATE TABLE queued_events (
    token      TEXT    NOT NULL,
    event_id   INTEGER NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (token, event_id)
);

CREATE INDEX queued_events_expires_at ON queued_events (expires_at);
