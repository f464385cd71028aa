"""The start-up check of write-behind mode: Redis must keep what it acknowledged.

In write-behind mode an accepted status change lives only in Redis until the writer has
committed it to PostgreSQL. A Redis that persists nothing (or only periodic snapshots)
loses those changes on a restart, so the API and the writer refuse to start unless the
append-only file is on, and unless the eviction policy could never evict a key without a
TTL (the stream and the pending overlays have none).

On a Redis Cluster write-behind is refused: its overlay and stream script touches an
order's overlay and the one stream of the namespace together, which a cluster allows only
if every order's keys shared the stream's hash slot (the whole workload on one shard).

`CONFIG GET` is the first source; managed services often rename or disable CONFIG, and
then `INFO persistence` / `INFO memory` say the same.
"""

from __future__ import annotations

from typing import cast

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from mescache.errors import RedisNotDurable
from mescache.redisconn import is_cluster

# Policies that may evict a key without a TTL: a pending write could vanish.
_UNSAFE_EVICTION = frozenset({"allkeys-lru", "allkeys-lfu", "allkeys-random"})


async def _settings(redis: Redis) -> tuple[bool, str]:
    """(append-only file on, maxmemory policy)."""
    try:
        config = cast(
            dict[str, str],
            await redis.config_get("appendonly") | await redis.config_get("maxmemory-policy"),
        )
        return _text(config.get("appendonly")) == "yes", _text(config.get("maxmemory-policy"))
    except ResponseError:
        pass  # CONFIG renamed or refused: INFO carries the same facts
    persistence = await redis.info("persistence")
    memory = await redis.info("memory")
    return (
        str(persistence.get("aof_enabled", "0")) == "1",
        _text(memory.get("maxmemory_policy")),
    )


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value or "")


async def require_durable(redis: Redis) -> None:
    """Raise RedisNotDurable with what to change, unless this Redis may hold pending writes."""
    if is_cluster(redis):
        raise RedisNotDurable(
            "write-behind cannot run on a Redis Cluster (its overlay and stream script needs"
            " them in one hash slot): use a single Redis or Sentinel, or set"
            " WRITE_BEHIND=false."
        )
    aof, policy = await _settings(redis)
    if not aof:
        raise RedisNotDurable(
            "write-behind needs Redis with the append-only file on (appendonly yes, "
            "appendfsync everysec or always): this Redis would lose accepted status changes "
            "on a restart. Turn AOF on, or set WRITE_BEHIND=false."
        )
    if policy in _UNSAFE_EVICTION:
        raise RedisNotDurable(
            f"write-behind cannot run with maxmemory-policy {policy}: it may evict pending "
            "status changes. Use noeviction or a volatile-* policy."
        )
