-- The connection holding each token, not only its instance: a connection
-- that ends forgets its own row, never the row of the connection that took
-- its token after it on the same instance (whose record may reach the
-- database first).
ALTER TABLE socket_connections ADD COLUMN holder TEXT NOT NULL DEFAULT '';
