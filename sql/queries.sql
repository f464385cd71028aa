-- Named queries of the API and the listener. A block starts with "-- name: <name>" and runs
-- to the next one; Python loads them by name (mescache.queries), so no SQL lives in code.

-- name: order_by_id
SELECT id, customer, model_id, material_id, quantity, params, total_price, status,
       created_at, updated_at
FROM orders
WHERE id = %(id)s;

-- name: dashboard
SELECT id, customer, model_id, material_id, quantity, params, total_price, status,
       created_at, updated_at
FROM orders
WHERE status IN ('new', 'in_progress')
ORDER BY id DESC;

-- name: newest_new
SELECT id, customer, model_id, material_id, quantity, params, total_price, status,
       created_at, updated_at
FROM orders
WHERE status = 'new'
ORDER BY id DESC
LIMIT %(limit)s;

-- name: status_page
SELECT id, customer, model_id, material_id, quantity, params, total_price, status,
       created_at, updated_at
FROM orders
WHERE status = %(status)s AND (%(cursor)s::bigint IS NULL OR id < %(cursor)s::bigint)
ORDER BY id DESC
LIMIT %(limit)s;

-- name: place_order
-- The price is computed from the model and the material in the same statement, so it
-- reflects the catalogue at the moment the order is placed.
INSERT INTO orders (customer, model_id, material_id, quantity, params, total_price)
SELECT %(customer)s, m.id, mat.id, %(quantity)s, %(params)s,
       round((m.base_price + m.volume_cm3 * mat.density_g_cm3 * mat.price_per_gram)
             * %(quantity)s, 2)
FROM models m, materials mat
WHERE m.id = %(model_id)s AND mat.id = %(material_id)s
RETURNING id, customer, model_id, material_id, quantity, params, total_price, status,
          created_at, updated_at;

-- name: catalogue_has
SELECT EXISTS (SELECT 1 FROM models WHERE id = %(model_id)s) AS model,
       EXISTS (SELECT 1 FROM materials WHERE id = %(material_id)s) AS material;

-- name: move_status
-- Conditional on the current status, so two operators racing on one order cannot both win.
UPDATE orders SET status = %(to)s
WHERE id = %(id)s AND status = ANY(%(allowed_from)s)
RETURNING id, customer, model_id, material_id, quantity, params, total_price, status,
          created_at, updated_at;

-- name: status_of
SELECT status FROM orders WHERE id = %(id)s;
