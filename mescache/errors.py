"""Errors shared by the API and the listener: one root, subclasses that mean something."""


class CacheLayerError(Exception):
    """The orders cache layer failed."""


class QueryNotFound(CacheLayerError):
    """A named query is missing from sql/queries.sql."""


class MigrationError(CacheLayerError):
    """A schema migration could not be applied."""


class OrderNotFound(CacheLayerError):
    """No order has this id."""


class RedisNotDurable(CacheLayerError):
    """Write-behind needs a Redis that persists every write (appendonly yes)."""
