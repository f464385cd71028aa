-- The schema's own bookkeeping: the migrations' ledger (mescache.migrate) and the checks
-- the processes make at start-up. Named blocks, loaded by mescache.queries.

-- name: migrate_lock
-- Two processes migrating at once (the API and the listener starting together) take turns.
SELECT pg_advisory_lock(%(lock)s);

-- name: migrate_unlock
SELECT pg_advisory_unlock(%(lock)s);

-- name: migrate_ledger
CREATE TABLE IF NOT EXISTS schema_migrations (
    name text PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- name: migrate_applied
SELECT name FROM schema_migrations;

-- name: migrate_record
INSERT INTO schema_migrations (name) VALUES (%(name)s);

-- name: missing_tables
-- Which of the tables a process needs the database lacks (it has not been migrated).
SELECT name FROM unnest(%(tables)s::text[]) AS name WHERE to_regclass(name) IS NULL;

-- name: ping
-- A round trip that proves a connection alive (readiness, liveness, the writer's lock).
SELECT 1;
