-- A customer's own orders are listed newest first, a page at a time.
CREATE INDEX IF NOT EXISTS orders_customer_id_idx ON orders (customer, id DESC);
