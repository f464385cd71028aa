-- The write-behind writer's sessions and its lock (writer.worker). Named blocks, loaded by
-- mescache.queries; the writes themselves are in queries.sql.

-- name: writer_session
-- This session's backend: its pid and start time (a pid alone may be reused).
SELECT pid, backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid();

-- name: writer_lock
-- One active writer per stream; the others stand by.
SELECT pg_try_advisory_lock(hashtext('orders-writer:' || %(stream)s));

-- name: writer_end_sessions
-- Ends the sessions of this writer's last connections (pid and start time) that went silent.
SELECT a.pid, pg_terminate_backend(a.pid) FROM pg_stat_activity a
JOIN unnest(%(pids)s::int[], %(starts)s::timestamptz[]) AS mine(pid, started)
ON a.pid = mine.pid AND a.backend_start = mine.started;

-- name: sessions_alive
SELECT 1 FROM pg_stat_activity WHERE pid = ANY(%(pids)s);
