-- The stale-token sweep picks the rows last registered before a cutoff, a
-- few hundred at a time: with this index each batch reads the rows it
-- deletes, and a sweep that finds none reads nothing, where a scan would
-- read the whole table every time (on SQLite, while holding the writer).
CREATE INDEX push_tokens_updated_at ON push_tokens (updated_at);
