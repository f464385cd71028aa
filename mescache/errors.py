"""Errors shared by the API and the listener: one root, subclasses that mean something."""


class CacheLayerError(Exception):
    """The orders cache layer failed."""


class QueryNotFound(CacheLayerError):
    """A named query or SQL script is missing from the package (mescache/sql)."""


class MigrationError(CacheLayerError):
    """A schema migration could not be applied."""


class OrderNotFound(CacheLayerError):
    """No order has this id."""


class RedisNotDurable(CacheLayerError):
    """Write-behind needs a Redis that persists every write (appendonly yes)."""


class RedisUnsupported(CacheLayerError):
    """This Redis cannot run the cache's scripts (older than 7.0)."""


class MeshError(CacheLayerError):
    """A stored 3D model mesh is malformed."""


class PricingError(CacheLayerError):
    """A price cannot be computed for this request."""


class ModelNotFound(PricingError):
    """No 3D model has this id."""


class MaterialNotFound(PricingError):
    """No material has this id."""


class BadPriceParams(PricingError):
    """The parameters do not fit the model (a size out of range, a size for an unsized kind)."""


class NoPricingRule(PricingError):
    """No pricing rule covers the model's kind, and there is no default rule."""
