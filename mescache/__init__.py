"""Code both processes share: settings, the key schema, the invalidation rules, the fenced
Redis store and the orders' SQL. Written once, imported by the API and the listener."""
