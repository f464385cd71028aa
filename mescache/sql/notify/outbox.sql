-- Source 2 (CDC_MODE=notify), for databases that cannot run wal_level=logical.
-- DBA-owned: apply it once (`cdc-listener install-notify` does). Every change of a cached
-- table records a row in cache_outbox in the same transaction, so it is as durable as the
-- change itself, and wakes the listener with NOTIFY. A lost notify loses nothing: the
-- listener also drains the outbox periodically, and deletes rows only after Redis has them.
-- Idempotent.

CREATE TABLE IF NOT EXISTS cache_outbox (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    table_name  text NOT NULL,
    op          text NOT NULL CHECK (op IN ('insert', 'update', 'delete', 'truncate')),
    old_id      bigint,
    new_id      bigint,
    old_status  text,
    new_status  text,
    created_at  timestamptz NOT NULL DEFAULT now()
);
-- Added later (an install made before them gets them here): whose order it is, before and
-- after, and which of the columns the trigger watches changed in an update.
ALTER TABLE cache_outbox ADD COLUMN IF NOT EXISTS old_customer text;
ALTER TABLE cache_outbox ADD COLUMN IF NOT EXISTS new_customer text;
ALTER TABLE cache_outbox ADD COLUMN IF NOT EXISTS changed text[];

-- Trigger arguments, if any, name the columns that matter to the cache: an update that
-- keeps the id and leaves all of them alone records nothing, and one that changes some
-- records which (a material's rename touches its names, not its prices).
CREATE OR REPLACE FUNCTION cache_outbox_record() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    col text;
    watched text[];
BEGIN
    -- Nested tests: OLD and NEW exist only in row-level UPDATE triggers.
    IF TG_OP = 'UPDATE' AND TG_NARGS > 0 THEN
        watched := '{}';
        FOREACH col IN ARRAY TG_ARGV LOOP
            IF to_jsonb(OLD) -> col IS DISTINCT FROM to_jsonb(NEW) -> col THEN
                watched := watched || col;
            END IF;
        END LOOP;
        IF OLD.id = NEW.id AND cardinality(watched) = 0 THEN
            RETURN NULL;
        END IF;
    END IF;
    -- to_jsonb() reads id, status and customer from any of the cached tables (models have
    -- neither status nor customer: NULL).
    IF TG_OP = 'TRUNCATE' THEN
        INSERT INTO cache_outbox (table_name, op) VALUES (TG_TABLE_NAME, 'truncate');
    ELSIF TG_OP = 'INSERT' THEN
        INSERT INTO cache_outbox (table_name, op, new_id, new_status, new_customer)
        VALUES (TG_TABLE_NAME, 'insert', NEW.id, to_jsonb(NEW) ->> 'status',
                to_jsonb(NEW) ->> 'customer');
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO cache_outbox (table_name, op, old_id, new_id, old_status, new_status,
                                  old_customer, new_customer, changed)
        VALUES (TG_TABLE_NAME, 'update', OLD.id, NEW.id,
                to_jsonb(OLD) ->> 'status', to_jsonb(NEW) ->> 'status',
                to_jsonb(OLD) ->> 'customer', to_jsonb(NEW) ->> 'customer', watched);
    ELSE
        INSERT INTO cache_outbox (table_name, op, old_id, old_status, old_customer)
        VALUES (TG_TABLE_NAME, 'delete', OLD.id, to_jsonb(OLD) ->> 'status',
                to_jsonb(OLD) ->> 'customer');
    END IF;
    PERFORM pg_notify('orders_cache', '');
    RETURN NULL;
END;
$$;

CREATE OR REPLACE TRIGGER orders_cache_outbox AFTER INSERT OR UPDATE OR DELETE ON orders
    FOR EACH ROW EXECUTE FUNCTION cache_outbox_record();
CREATE OR REPLACE TRIGGER orders_cache_outbox_truncate AFTER TRUNCATE ON orders
    FOR EACH STATEMENT EXECUTE FUNCTION cache_outbox_record();
CREATE OR REPLACE TRIGGER models_cache_outbox AFTER INSERT OR UPDATE OR DELETE ON models
    FOR EACH ROW EXECUTE FUNCTION cache_outbox_record();
CREATE OR REPLACE TRIGGER models_cache_outbox_truncate AFTER TRUNCATE ON models
    FOR EACH STATEMENT EXECUTE FUNCTION cache_outbox_record();
CREATE OR REPLACE TRIGGER materials_cache_outbox AFTER INSERT OR UPDATE OR DELETE ON materials
    FOR EACH ROW EXECUTE FUNCTION cache_outbox_record('density_g_cm3', 'price_per_gram', 'code', 'name');
CREATE OR REPLACE TRIGGER materials_cache_outbox_truncate AFTER TRUNCATE ON materials
    FOR EACH STATEMENT EXECUTE FUNCTION cache_outbox_record();
CREATE OR REPLACE TRIGGER pricing_rules_cache_outbox
    AFTER INSERT OR UPDATE OR DELETE ON pricing_rules
    FOR EACH ROW EXECUTE FUNCTION cache_outbox_record();
CREATE OR REPLACE TRIGGER pricing_rules_cache_outbox_truncate AFTER TRUNCATE ON pricing_rules
    FOR EACH STATEMENT EXECUTE FUNCTION cache_outbox_record();
CREATE OR REPLACE TRIGGER cache_probe_outbox AFTER INSERT OR UPDATE OR DELETE ON cache_probe
    FOR EACH ROW EXECUTE FUNCTION cache_outbox_record();
