-- PostgreSQL only (the POST path of its batch function); the version is
-- kept in step.
SELECT 1;
