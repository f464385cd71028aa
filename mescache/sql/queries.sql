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

-- name: model_ids
-- The listener moves a material's (or every rule's) price family in each model's slot.
SELECT id FROM models;

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

-- name: move_status
-- Conditional on the current status, so two operators racing on one order cannot both win.
UPDATE orders SET status = %(to)s
WHERE id = %(id)s AND status = ANY(%(allowed_from)s)
RETURNING id, customer, model_id, material_id, quantity, params, total_price, status,
          created_at, updated_at;

-- name: status_of
SELECT status FROM orders WHERE id = %(id)s;

-- name: api_key_verify
-- Every request with a key not in the API's short-lived cache of verified keys.
SELECT id, prefix, role, customer
FROM api_keys
WHERE key_hash = %(key_hash)s AND revoked_at IS NULL;

-- name: api_key_create
INSERT INTO api_keys (key_hash, prefix, role, customer, label)
VALUES (%(key_hash)s, %(prefix)s, %(role)s, %(customer)s, %(label)s)
RETURNING id, prefix, role, customer, label, created_at, revoked_at;

-- name: api_key_list
SELECT id, prefix, role, customer, label, created_at, revoked_at
FROM api_keys
WHERE %(all)s OR revoked_at IS NULL
ORDER BY id;

-- name: api_key_find
-- A key named on the command line: its id, or its prefix.
SELECT id, prefix, role, customer, label, created_at, revoked_at
FROM api_keys
WHERE id::text = %(ref)s OR prefix = %(ref)s
ORDER BY id;

-- name: api_key_revoke
UPDATE api_keys SET revoked_at = now()
WHERE id = %(id)s AND revoked_at IS NULL
RETURNING id, prefix, role, customer, label, created_at, revoked_at;

-- name: api_key_retire_env_operator
-- The environment's operator key changed: the one it replaces stops working.
UPDATE api_keys SET revoked_at = now()
WHERE label = %(label)s AND role = 'operator' AND revoked_at IS NULL
  AND key_hash <> %(key_hash)s;

-- name: api_key_provision_env_operator
-- Upsert of the environment's operator key. A key that was revoked stays revoked:
-- a restart must not undo a revocation.
INSERT INTO api_keys (key_hash, prefix, role, customer, label)
VALUES (%(key_hash)s, %(prefix)s, 'operator', NULL, %(label)s)
ON CONFLICT (key_hash) DO UPDATE SET label = api_keys.label
RETURNING id, prefix, role, customer, label, created_at, revoked_at;

-- Write-behind (the writer, orders-writer). An entry is recorded in the same transaction
-- as its status change: a replay finds it and changes nothing.

-- name: wb_record_entry
INSERT INTO write_behind_applied (entry_id, order_id, status)
VALUES (%(entry)s, %(id)s, %(to)s)
ON CONFLICT (entry_id) DO NOTHING
RETURNING entry_id;

-- name: wb_position_logical
-- A WAL position at or after every commit made so far (the writer's own included).
SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint;

-- name: wb_listener_position_logical
-- The listener confirms a position only after Redis has the work of every commit up to it.
SELECT (confirmed_flush_lsn - '0/0'::pg_lsn)::bigint
FROM pg_replication_slots
WHERE slot_name = %(slot)s;

-- name: wb_position_notify
SELECT coalesce(max(id), 0) FROM cache_outbox;

-- name: wb_listener_position_notify
-- The listener deletes outbox rows once Redis has them: every id below the oldest left
-- is done (none left: every id so far).
SELECT coalesce(min(id) - 1, 9223372036854775807) FROM cache_outbox;

-- name: price_inputs
-- One round trip that also tells which of the model and the material is missing. The
-- kind's own rule wins over the default rule '*'.
SELECT m.id IS NOT NULL AS has_model, mat.id IS NOT NULL AS has_material,
       m.kind, m.base_price, m.volume_cm3, m.mesh, mat.density_g_cm3, mat.price_per_gram,
       r.kind AS rule_kind, r.labour, r.finishing_per_cm2, r.casting_loss, r.minimum_price,
       r.size_base, r.size_min, r.size_max, r.size_step
FROM (SELECT) AS one
LEFT JOIN models m ON m.id = %(model_id)s
LEFT JOIN materials mat ON mat.id = %(material_id)s
LEFT JOIN LATERAL (
    SELECT * FROM pricing_rules WHERE kind IN (m.kind, '*') ORDER BY kind = '*' LIMIT 1
) r ON true;

-- name: insert_order
-- The total is the price the API computed from the catalogue in the same transaction.
INSERT INTO orders (customer, model_id, material_id, quantity, params, total_price)
VALUES (%(customer)s, %(model_id)s, %(material_id)s, %(quantity)s, %(params)s, %(total_price)s)
RETURNING id, customer, model_id, material_id, quantity, params, total_price, status,
          created_at, updated_at;

-- name: wb_prune_applied
-- Forget applied entries that can never be delivered again: ids below the first entry still
-- kept in the stream (compared as stream ids, milliseconds then sequence, not as text).
DELETE FROM write_behind_applied
WHERE CASE WHEN entry_id ~ '^[0-9]+-[0-9]+$'
           THEN (split_part(entry_id, '-', 1)::numeric, split_part(entry_id, '-', 2)::numeric)
                < (%(ms)s::numeric, %(seq)s::numeric)
           ELSE false END;

-- name: customer_page
-- One customer's orders, newest first, a page at a time (orders_customer_id_idx).
SELECT id, customer, model_id, material_id, quantity, params, total_price, status,
       created_at, updated_at
FROM orders
WHERE customer = %(customer)s AND (%(cursor)s::bigint IS NULL OR id < %(cursor)s::bigint)
ORDER BY id DESC
LIMIT %(limit)s;

-- name: recent_customers
-- Warm-up fills the first page of the customers who ordered last.
SELECT customer FROM orders GROUP BY customer ORDER BY max(id) DESC LIMIT %(limit)s;

-- name: catalogue_models
SELECT id, sku, name, kind FROM models ORDER BY id;

-- name: catalogue_materials
SELECT id, code, name FROM materials ORDER BY id;

-- name: customers_of_orders
-- Whose orders an announced batch touched, before a client's page hears of them.
SELECT id, customer FROM orders WHERE id = ANY(%(ids)s);

-- name: model_mesh
-- A model's mesh for its picture (has_model false: no such model).
SELECT m.id IS NOT NULL AS has_model, m.mesh
FROM (SELECT) AS one
LEFT JOIN models m ON m.id = %(id)s;
