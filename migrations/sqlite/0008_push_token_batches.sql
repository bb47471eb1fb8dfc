-- PostgreSQL only (its PUTs and POSTs of push tokens in batches, as a
-- function); SQLite's writer batches its writes itself. The version is
-- kept in step.
SELECT 1;
