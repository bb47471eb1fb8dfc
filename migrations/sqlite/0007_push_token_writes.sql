-- PostgreSQL only (its PUT of a push token as a function); on
-- SQLite every write runs on the writer's connection, statement by
-- statement, with nothing to save. The version is kept in step.
SELECT 1;
