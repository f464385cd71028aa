-- The publication the listener's logical slot reads: exactly the cached tables.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = 'orders_cache') THEN
        CREATE PUBLICATION orders_cache FOR TABLE orders, models, materials;
    END IF;
END;
$$;
