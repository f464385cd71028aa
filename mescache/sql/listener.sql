-- The listener's statements: the replication slot's lifecycle (cdc_listener.slot), the
-- stream's position and heartbeat (cdc_listener.logical), the trigger outbox
-- (cdc_listener.notify) and the lag probe (cdc_listener.lag_probe). Named blocks, loaded
-- by mescache.queries.

-- name: wal_level
SHOW wal_level;

-- name: slot_health
-- PostgreSQL 17+: whether the slot was invalidated, and whether it is a failover slot.
SELECT wal_status, invalidation_reason, failover
FROM pg_replication_slots WHERE slot_name = %(slot)s;

-- name: slot_health_before_17
-- Before PostgreSQL 17 a slot has neither an invalidation reason nor failover.
SELECT wal_status, NULL, NULL FROM pg_replication_slots WHERE slot_name = %(slot)s;

-- name: slot_drop
SELECT pg_drop_replication_slot(%(slot)s);

-- name: slot_create_failover
SELECT pg_create_logical_replication_slot(%(slot)s, 'pgoutput', failover => true);

-- name: slot_create
SELECT pg_create_logical_replication_slot(%(slot)s, 'pgoutput');

-- name: slot_status
-- On a standby the WAL position is the one replayed (pg_current_wal_lsn() refuses).
WITH wal AS (SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()
                         ELSE pg_current_wal_lsn() END AS lsn)
SELECT slot_name, active, active_pid, confirmed_flush_lsn::text, wal.lsn::text,
       pg_wal_lsn_diff(wal.lsn, restart_lsn)::bigint,
       pg_wal_lsn_diff(wal.lsn, confirmed_flush_lsn)::bigint,
       wal_status
FROM pg_replication_slots, wal WHERE slot_name = %(slot)s;

-- name: slot_position
-- Where a stream resumes (the slot's confirmed position) and where the server's WAL ends.
SELECT confirmed_flush_lsn::text, pg_current_wal_lsn()::text
FROM pg_replication_slots WHERE slot_name = %(slot)s;

-- name: slot_is_failover
SELECT failover FROM pg_replication_slots WHERE slot_name = %(slot)s;

-- name: slot_holder
SELECT active_pid FROM pg_replication_slots WHERE slot_name = %(slot)s;

-- name: in_recovery
SELECT pg_is_in_recovery();

-- name: synchronized_standby_slots
SHOW synchronized_standby_slots;

-- name: physical_standbys
-- Logical walsenders (the listener itself) stream too: only physical ones count.
SELECT r.application_name, r.state, s.slot_name, r.replay_lsn::text
FROM pg_stat_replication r
LEFT JOIN pg_replication_slots s ON s.active_pid = r.pid
WHERE s.slot_type IS DISTINCT FROM 'logical'
ORDER BY r.application_name;

-- name: wal_receiver
SELECT status, slot_name FROM pg_stat_wal_receiver;

-- name: slot_copy_on_standby
SELECT synced, temporary, invalidation_reason, confirmed_flush_lsn::text,
       current_setting('sync_replication_slots')::bool
FROM pg_replication_slots WHERE slot_name = %(slot)s;

-- name: walsender_of
-- The walsender serving the replication connection opened with this application_name.
SELECT pid, backend_start FROM pg_stat_activity
WHERE backend_type = 'walsender' AND application_name = %(application_name)s;

-- name: walsender_end_own
-- Ends our own walsender (pid and start time: a pid alone may be reused) only while it
-- still holds the slot; any other holder is another listener's live stream.
SELECT pg_terminate_backend(a.pid) FROM pg_replication_slots s
JOIN pg_stat_activity a ON a.pid = s.active_pid
WHERE s.slot_name = %(slot)s AND a.pid = %(pid)s AND a.backend_start = %(started)s;

-- name: stream_heartbeat
-- A tiny WAL record, so a very quiet database gives the slot something to decode past.
SELECT pg_logical_emit_message(false, 'orders_cache.heartbeat', '');

-- name: outbox_exists
SELECT to_regclass('cache_outbox');

-- name: outbox_listen
-- The channel notify/outbox.sql's trigger notifies.
LISTEN orders_cache;

-- name: outbox_take
-- Locked, so a second listener draining at once takes other rows or none.
SELECT id, created_at, table_name, op, old_id, new_id, old_status, new_status,
       old_customer, new_customer, changed
FROM cache_outbox ORDER BY id LIMIT %(limit)s
FOR UPDATE SKIP LOCKED;

-- name: outbox_delete
DELETE FROM cache_outbox WHERE id = ANY(%(ids)s);

-- name: outbox_backlog
SELECT count(*), min(created_at) FROM cache_outbox;

-- name: probe_rows
INSERT INTO cache_probe (id) SELECT generate_series(1, %(rows)s)
ON CONFLICT (id) DO NOTHING;

-- name: probe_quiet_for
-- Seconds since the probe row last changed.
SELECT extract(epoch FROM clock_timestamp() - updated_at)::float8
FROM cache_probe WHERE id = %(id)s;

-- name: probe_touch
UPDATE cache_probe SET seq = seq + 1, updated_at = clock_timestamp() WHERE id = %(id)s;
