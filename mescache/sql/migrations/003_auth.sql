-- API keys: who may call the orders API, and as whom.
-- A key is a long random token shown once when it is made; only its SHA-256 is kept,
-- with a short non-secret prefix (the key's first characters) to tell keys apart.
-- Idempotent: every statement may run again on an up-to-date database.

CREATE TABLE IF NOT EXISTS api_keys (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    key_hash    bytea NOT NULL UNIQUE CHECK (length(key_hash) = 32),
    prefix      text NOT NULL CHECK (length(prefix) BETWEEN 4 AND 16),
    role        text NOT NULL CHECK (role IN ('operator', 'client')),
    -- A client key acts for exactly one customer (orders.customer); an operator for none.
    customer    text CHECK (customer IS NULL OR length(customer) BETWEEN 1 AND 200),
    label       text NOT NULL DEFAULT '' CHECK (length(label) <= 200),
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz,
    CONSTRAINT api_keys_customer_iff_client CHECK ((role = 'client') = (customer IS NOT NULL))
);

CREATE INDEX IF NOT EXISTS api_keys_prefix_idx ON api_keys (prefix);
