-- The consistency probe: a tiny table whose changes travel the same path as the orders'
-- (publication, change stream or notify outbox, rule, Redis) to one cache key per row.
-- `cdc-listener check --sample` sets a probe key, changes its row and times how long the
-- listener takes to remove the key. Nothing else reads or writes it. Idempotent.

CREATE TABLE IF NOT EXISTS cache_probe (
    id          integer PRIMARY KEY CHECK (id > 0),
    seq         bigint NOT NULL DEFAULT 0,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_publication WHERE pubname = 'orders_cache')
       AND NOT EXISTS (
           SELECT 1 FROM pg_publication_tables
           WHERE pubname = 'orders_cache' AND schemaname = current_schema()
             AND tablename = 'cache_probe'
       ) THEN
        ALTER PUBLICATION orders_cache ADD TABLE cache_probe;
    END IF;
END;
$$;

-- A database already running CDC_MODE=notify gets the probe's outbox trigger too.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_proc WHERE proname = 'cache_outbox_record') THEN
        CREATE OR REPLACE TRIGGER cache_probe_outbox AFTER INSERT OR UPDATE OR DELETE
            ON cache_probe FOR EACH ROW EXECUTE FUNCTION cache_outbox_record();
    END IF;
END;
$$;
