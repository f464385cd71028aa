-- Write-behind: the stream entries the writer (orders-writer) has applied. The row is
-- inserted in the same transaction as the status change, so replaying an entry after a
-- crash (committed, not yet acknowledged in Redis) finds it and changes nothing.
-- Not published to the listener: it is not cached. Idempotent.

CREATE TABLE IF NOT EXISTS write_behind_applied (
    entry_id    text PRIMARY KEY,  -- the Redis stream entry id, e.g. 1718000000000-0
    order_id    bigint NOT NULL,
    status      text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS write_behind_applied_order_idx
    ON write_behind_applied (order_id, applied_at);
