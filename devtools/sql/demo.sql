-- The development stack's statements: private databases (devstack) and the demo data
-- (demo). Named blocks; {name} and {template} are identifiers filled in with psycopg.sql.

-- name: database_drop
DROP DATABASE IF EXISTS {name} WITH (FORCE);

-- name: database_create
CREATE DATABASE {name};

-- name: database_create_from
CREATE DATABASE {name} TEMPLATE {template};

-- name: demo_seed
-- The orders' random() draws repeat for a given seed.
SELECT setseed(%(seed)s);

-- name: demo_material
INSERT INTO materials (code, name, density_g_cm3, price_per_gram)
VALUES (%s, %s, %s, %s) ON CONFLICT (code) DO NOTHING;

-- name: demo_model
INSERT INTO models (sku, name, kind, volume_cm3, base_price, mesh)
VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (sku) DO NOTHING;

-- name: demo_materials
SELECT id, density_g_cm3, price_per_gram FROM materials;

-- name: demo_model_ids
SELECT id FROM models ORDER BY id;

-- name: demo_prices_table
-- The unit prices computed in Python, joined into the orders below.
CREATE TEMPORARY TABLE demo_prices (
    model_id bigint, material_id bigint, size numeric, pick int, sizes int,
    unit numeric(12, 2)
) ON COMMIT DROP;

-- name: demo_prices_copy
COPY demo_prices FROM STDIN;

-- name: demo_orders
WITH picks AS (
    SELECT i,
           (SELECT array_agg(id) FROM models) AS model_ids,
           (SELECT array_agg(id) FROM materials) AS material_ids,
           -- a low-discrepancy sequence rather than random(): even a small
           -- demo gets its share of new and in-progress orders
           (i * 0.6180339887498949) %% 1 AS r
    FROM generate_series(1, %(n)s) AS i
), rows AS (
    SELECT i,
           model_ids[1 + floor(random() * cardinality(model_ids))::int] AS model_id,
           material_ids[1 + floor(random() * cardinality(material_ids))::int]
               AS material_id,
           1 + floor(random() * 3)::int AS quantity,
           floor(random() * 1000)::int AS size_pick,
           CASE WHEN r < 0.004 THEN 'in_progress'
                WHEN r < 0.010 THEN 'new'
                WHEN r < 0.93 THEN 'done'
                ELSE 'cancelled' END AS status,
           now() - make_interval(mins => (%(n)s - i) * 5) AS created_at
    FROM picks
)
INSERT INTO orders (customer, model_id, material_id, quantity, params,
                    total_price, status, created_at, updated_at)
SELECT 'client-' || (1 + floor(random() * 20000)::int),
       r.model_id, r.material_id, r.quantity,
       CASE WHEN p.size IS NULL THEN jsonb_build_object('layer_um', 25)
            ELSE jsonb_build_object('size', p.size, 'layer_um', 25) END,
       p.unit * r.quantity,
       r.status, r.created_at, r.created_at
FROM rows r
JOIN demo_prices p ON p.model_id = r.model_id AND p.material_id = r.material_id
                  AND p.pick = r.size_pick %% p.sizes
ORDER BY r.i;

-- name: demo_analyze
ANALYZE orders;
