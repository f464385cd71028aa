-- The orders schema: 3D models, materials, and the orders that print them.
-- Idempotent: every statement may run again on an up-to-date database.

CREATE TABLE IF NOT EXISTS materials (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    code            text NOT NULL UNIQUE,
    name            text NOT NULL,
    density_g_cm3   numeric(6, 3) NOT NULL CHECK (density_g_cm3 > 0),
    price_per_gram  numeric(10, 2) NOT NULL CHECK (price_per_gram >= 0),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS models (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    sku         text NOT NULL UNIQUE,
    name        text NOT NULL,
    kind        text NOT NULL,
    volume_cm3  numeric(8, 3) NOT NULL CHECK (volume_cm3 > 0),
    base_price  numeric(10, 2) NOT NULL CHECK (base_price >= 0),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS orders (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer     text NOT NULL CHECK (length(customer) BETWEEN 1 AND 200),
    model_id     bigint NOT NULL REFERENCES models (id),
    material_id  bigint NOT NULL REFERENCES materials (id),
    quantity     integer NOT NULL CHECK (quantity BETWEEN 1 AND 10000),
    -- print parameters: ring size, engraving, layer height...
    params       jsonb NOT NULL DEFAULT '{}'::jsonb,
    total_price  numeric(12, 2) NOT NULL CHECK (total_price >= 0),
    status       text NOT NULL DEFAULT 'new'
                 CHECK (status IN ('new', 'in_progress', 'done', 'cancelled')),
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);

-- The change stream must carry the old row so a status move reaches the old status's lists.
ALTER TABLE orders REPLICA IDENTITY FULL;

-- Per-status pages walk ids downwards; the dashboard and the newest orders read a small
-- active slice (about 1% of the table), so a partial index keeps them cheap.
CREATE INDEX IF NOT EXISTS orders_status_id_idx ON orders (status, id DESC);
CREATE INDEX IF NOT EXISTS orders_active_idx ON orders (id DESC)
    WHERE status IN ('new', 'in_progress');
CREATE INDEX IF NOT EXISTS orders_model_idx ON orders (model_id);
CREATE INDEX IF NOT EXISTS orders_material_idx ON orders (material_id);

CREATE OR REPLACE FUNCTION touch_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END;
$$;

CREATE OR REPLACE TRIGGER orders_touch BEFORE UPDATE ON orders
    FOR EACH ROW EXECUTE FUNCTION touch_updated_at();
CREATE OR REPLACE TRIGGER models_touch BEFORE UPDATE ON models
    FOR EACH ROW EXECUTE FUNCTION touch_updated_at();
CREATE OR REPLACE TRIGGER materials_touch BEFORE UPDATE ON materials
    FOR EACH ROW EXECUTE FUNCTION touch_updated_at();
