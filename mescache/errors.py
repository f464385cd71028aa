"""The product's one error tree: what the API, the listener and the writer raise on purpose
stands under `MesCacheError`, and its branch says whether trying again can help.

```
MesCacheError
├── Retryable             transient: the same work may succeed later (back off, retry)
│   ├── cdc_listener.errors: StreamEnded ── StreamSilent, SlotInUse (wait as a standby)
│   └── writer.errors: LockLost
└── Fatal                 retrying cannot help: stop and say why, or answer 4xx
    ├── configuration and versions: QueryNotFound, MigrationError, RedisNotDurable,
    │   RedisUnsupported, redisconn.BadRedisUrl, cdc_listener's SourceUnavailable and
    │   StreamRefused, writer's NoOutbox
    ├── bad input: OrderNotFound, MeshError, PricingError ── ModelNotFound,
    │   MaterialNotFound, BadPriceParams, NoPricingRule; api.apikeys.ApiKeyError ── ...;
    │   writer's MalformedEntry, UnknownDeadLetter
    └── a broken stream: cdc_listener's DecodeError, ProtocolViolation
```

`ListenerError` and `WriterError` are the roots of their packages' errors (catch one to
catch all of a package); each of their errors also stands in one branch, and neither root
is raised by itself.

Errors of the libraries below (psycopg, redis-py, the operating system) are sorted into
the same two branches in one place, :func:`is_retryable`: a lost, refused or timed-out
connection is transient; anything else is a bug or a misconfiguration, never retried.
"""

from __future__ import annotations

from typing import Final

import psycopg
from redis.exceptions import RedisClusterException, RedisError


class MesCacheError(Exception):
    """The orders cache failed."""


class Retryable(MesCacheError):
    """A transient failure: the same work may succeed if tried again after a pause."""


class Fatal(MesCacheError):
    """Trying again cannot help: a misconfiguration, an unsupported version or bad input."""


# Transient failures of the libraries below:
# - psycopg's OperationalError: the connection was lost or refused, a statement timed out,
#   a server is shutting down or in recovery;
# - redis-py: every RedisError (connection and timeout errors, and the server's refusals
#   that pass: LOADING, READONLY after a failover, BUSY, OOM under maxmemory) and, on a
#   cluster, the slot-map errors (RedisClusterException, no RedisError);
# - OSError: sockets (ConnectionError, TimeoutError and the like).
TRANSIENT_EXTERNAL: Final = (psycopg.OperationalError, RedisError, RedisClusterException, OSError)


def is_retryable(exc: BaseException) -> bool:
    """Whether trying again may succeed: the product's errors by their branch, the
    libraries' by :data:`TRANSIENT_EXTERNAL`."""
    if isinstance(exc, MesCacheError):
        return isinstance(exc, Retryable)
    return isinstance(exc, TRANSIENT_EXTERNAL)


class QueryNotFound(Fatal):
    """A named query or SQL script is missing from the package (mescache/sql)."""


class MigrationError(Fatal):
    """A schema migration could not be applied."""


class OrderNotFound(Fatal):
    """No order has this id."""


class RedisNotDurable(Fatal):
    """Write-behind needs a Redis that persists every write (appendonly yes)."""


class RedisUnsupported(Fatal):
    """This Redis cannot run the cache's scripts (older than 7.0)."""


class MeshError(Fatal):
    """A stored 3D model mesh is malformed."""


class PricingError(Fatal):
    """A price cannot be computed for this request."""


class ModelNotFound(PricingError):
    """No 3D model has this id."""


class MaterialNotFound(PricingError):
    """No material has this id."""


class BadPriceParams(PricingError):
    """The parameters do not fit the model (a size out of range, a size for an unsized kind)."""


class NoPricingRule(PricingError):
    """No pricing rule covers the model's kind, and there is no default rule."""
