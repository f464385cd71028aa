-- Pricing: the geometry of each 3D model and the workshop's pricing rules.
-- Idempotent: every statement may run again on an up-to-date database.

-- The model's closed triangle mesh in the compact form of mescache/mesh.py. A model
-- without one is priced from volume_cm3 alone.
ALTER TABLE models ADD COLUMN IF NOT EXISTS mesh bytea;

-- A material's price depends on its density and price per gram only: with the old row in
-- the change stream, a rename touches no cached price.
ALTER TABLE materials REPLICA IDENTITY FULL;

-- One row per model kind; kind '*' applies to kinds without a row of their own.
-- Sized kinds (rings) are modelled at size_base, an inner diameter in mm, and may be asked
-- for between size_min and size_max in steps of size_step.
CREATE TABLE IF NOT EXISTS pricing_rules (
    id                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind               text NOT NULL UNIQUE,
    labour             numeric(10, 2) NOT NULL CHECK (labour >= 0),
    finishing_per_cm2  numeric(10, 4) NOT NULL CHECK (finishing_per_cm2 >= 0),
    casting_loss       numeric(5, 4) NOT NULL DEFAULT 0.05
                       CHECK (casting_loss >= 0 AND casting_loss < 1),
    minimum_price      numeric(10, 2) NOT NULL DEFAULT 0 CHECK (minimum_price >= 0),
    size_base          numeric(5, 2),
    size_min           numeric(5, 2),
    size_max           numeric(5, 2),
    size_step          numeric(5, 2),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT pricing_rules_sizes CHECK (
        (size_base IS NULL AND size_min IS NULL AND size_max IS NULL AND size_step IS NULL)
        OR (size_base > 0 AND size_step > 0 AND 0 < size_min
            AND size_min <= size_base AND size_base <= size_max)
    )
);

CREATE OR REPLACE TRIGGER pricing_rules_touch BEFORE UPDATE ON pricing_rules
    FOR EACH ROW EXECUTE FUNCTION touch_updated_at();

INSERT INTO pricing_rules (kind, labour, finishing_per_cm2, casting_loss, minimum_price,
                           size_base, size_min, size_max, size_step)
VALUES ('*',             40.00, 1.5000, 0.05,  50.00, NULL, NULL, NULL, NULL),
       ('ring',          60.00, 2.0000, 0.06,  80.00, 17.0, 14.0, 24.0, 0.5),
       ('wedding ring',  90.00, 2.5000, 0.06, 120.00, 17.0, 14.0, 24.0, 0.5),
       ('pendant',       50.00, 1.8000, 0.05,  60.00, NULL, NULL, NULL, NULL),
       ('earring',       35.00, 1.8000, 0.05,  40.00, NULL, NULL, NULL, NULL),
       ('bracelet link', 25.00, 1.2000, 0.05,  30.00, NULL, NULL, NULL, NULL),
       ('brooch',        70.00, 2.0000, 0.05,  90.00, NULL, NULL, NULL, NULL)
ON CONFLICT (kind) DO NOTHING;

-- The listener follows pricing rules too, in both modes.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_publication WHERE pubname = 'orders_cache' AND NOT puballtables)
       AND NOT EXISTS (SELECT 1 FROM pg_publication_tables
                       WHERE pubname = 'orders_cache' AND tablename = 'pricing_rules'
                         AND schemaname = current_schema()) THEN
        ALTER PUBLICATION orders_cache ADD TABLE pricing_rules;
    END IF;
    -- Where the notify outbox is installed already, keep it complete.
    IF to_regproc('cache_outbox_record') IS NOT NULL THEN
        CREATE OR REPLACE TRIGGER pricing_rules_cache_outbox
            AFTER INSERT OR UPDATE OR DELETE ON pricing_rules
            FOR EACH ROW EXECUTE FUNCTION cache_outbox_record();
        CREATE OR REPLACE TRIGGER pricing_rules_cache_outbox_truncate AFTER TRUNCATE ON pricing_rules
            FOR EACH STATEMENT EXECUTE FUNCTION cache_outbox_record();
        CREATE OR REPLACE TRIGGER materials_cache_outbox
            AFTER INSERT OR UPDATE OR DELETE ON materials
            FOR EACH ROW EXECUTE FUNCTION cache_outbox_record('density_g_cm3', 'price_per_gram');
    END IF;
END;
$$;
