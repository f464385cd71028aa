-- Least privilege: one database login per process, each allowed what it does and no more.
--   mes_api       reads the catalogue and orders, places orders, changes statuses, and
--                 manages api_keys (the API's start-up provisions OPERATOR_API_KEY;
--                 `orders-api keys` runs as it too)
--   mes_listener  REPLICATION (its slot and stream), reads what it caches and checks, and
--                 the probe table (`cdc-listener check --sample`)
--   mes_writer    applies write-behind status changes: a status, its applied-entry record
-- None of them owns a table, alters the schema or deletes a row (the listener's notify
-- outbox aside, granted below where it is installed). They are created without a
-- password: set one (ALTER ROLE mes_api PASSWORD '...') or use another authentication
-- method; roles are cluster-wide, so a second database reuses them.
-- Where the migrating user may not create roles (a managed service), the roles are left
-- to the operator and only the grants to those that exist are made. Idempotent.

DO $$
DECLARE
    wanted text[] := ARRAY['mes_api', 'mes_listener', 'mes_writer'];
    name text;
BEGIN
    FOREACH name IN ARRAY wanted LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = name) THEN
            BEGIN
                EXECUTE format('CREATE ROLE %I LOGIN', name);
            EXCEPTION WHEN insufficient_privilege OR unique_violation THEN
                RAISE NOTICE 'role % not created (%): create it and re-run the grants', name, SQLERRM;
            END;
        END IF;
    END LOOP;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'mes_listener' AND NOT rolreplication) THEN
        BEGIN
            ALTER ROLE mes_listener REPLICATION;
        EXCEPTION WHEN insufficient_privilege THEN
            RAISE NOTICE 'mes_listener needs REPLICATION: grant it (or the service''s replication role)';
        END;
    END IF;
END;
$$;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'mes_api') THEN
        EXECUTE format('GRANT CONNECT ON DATABASE %I TO mes_api', current_database());
        GRANT USAGE ON SCHEMA public TO mes_api;
        GRANT SELECT ON models, materials, pricing_rules, schema_migrations TO mes_api;
        GRANT SELECT, INSERT ON orders TO mes_api;
        GRANT UPDATE (status) ON orders TO mes_api;
        GRANT SELECT, INSERT ON api_keys TO mes_api;
        GRANT UPDATE (label, revoked_at) ON api_keys TO mes_api;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'mes_listener') THEN
        EXECUTE format('GRANT CONNECT ON DATABASE %I TO mes_listener', current_database());
        GRANT USAGE ON SCHEMA public TO mes_listener;
        GRANT SELECT ON orders, models, materials, pricing_rules, schema_migrations
            TO mes_listener;
        GRANT SELECT, INSERT, UPDATE ON cache_probe TO mes_listener;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'mes_writer') THEN
        EXECUTE format('GRANT CONNECT ON DATABASE %I TO mes_writer', current_database());
        GRANT USAGE ON SCHEMA public TO mes_writer;
        GRANT SELECT ON orders TO mes_writer;
        GRANT UPDATE (status) ON orders TO mes_writer;
        GRANT SELECT, INSERT ON write_behind_applied TO mes_writer;
    END IF;
    -- CDC_MODE=notify: the listener drains the outbox, the writer reads how far it got.
    IF to_regclass('cache_outbox') IS NOT NULL THEN
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'mes_listener') THEN
            GRANT SELECT, DELETE ON cache_outbox TO mes_listener;
        END IF;
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'mes_writer') THEN
            GRANT SELECT ON cache_outbox TO mes_writer;
        END IF;
    END IF;
END;
$$;
