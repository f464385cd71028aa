"""The orders API: cache-aside reads through Redis, writes to PostgreSQL only.

Nothing here deletes, rewrites or expires a cache key because of a write: the listener
(cdc_listener) follows the database's change stream and does that for every writer. The
one exception is opt-in write-behind, whose pending overlay is argued in mescache.pending.
"""
