-- Secrets the server makes for itself at first start and keeps, such as the
-- key of the push socket's tokens (the same on every instance).
CREATE TABLE server_secrets (
    name       TEXT    PRIMARY KEY,
    value      TEXT    NOT NULL,
    created_at BIGINT  NOT NULL
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
    created_at    BIGINT  NOT NULL,
    registered_at BIGINT  NOT NULL
);
