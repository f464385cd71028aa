"""What the cache asks of its Redis, checked when the listener starts.

Redis 7.0 or later: the listener's invalidations carry the script flag ``allow-oom`` so
that they still delete on a full ``noeviction`` Redis. Every ``maxmemory-policy`` is
supported (noeviction, allkeys-* and volatile-*; see mescache.store for why an evicted key
costs a miss and never a stale hit); write-behind adds its own demands (mescache.durability).
The policy in force is logged, so an operator sees what the cache runs on.
"""

from __future__ import annotations

import logging
from typing import Any, Final, cast

from redis.asyncio import Redis, RedisCluster

from mescache.errors import RedisUnsupported

log = logging.getLogger("mescache.engine")

MIN_VERSION: Final = (7, 0)


def parse_version(text: str) -> tuple[int, ...]:
    """``7.0.15`` → (7, 0, 15); what does not parse counts as 0."""
    parts = []
    for part in text.split(".")[:3]:
        digits = "".join(c for c in part if c.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


async def require_supported(redis: Redis | RedisCluster) -> str:
    """Raise RedisUnsupported unless the server can run the scripts; the eviction policy."""
    if isinstance(redis, RedisCluster):  # one answer per primary: the oldest decides
        every = RedisCluster.PRIMARIES
        info = cast(dict[str, dict[str, Any]], await redis.info("server", target_nodes=every))
        memory = cast(dict[str, dict[str, Any]], await redis.info("memory", target_nodes=every))
        versions = [str(node.get("redis_version", "0")) for node in info.values()]
        policies = {str(node.get("maxmemory_policy", "")) for node in memory.values()}
    else:
        one = await redis.info("server")
        versions = [str(one.get("redis_version", "0"))]
        policies = {str((await redis.info("memory")).get("maxmemory_policy", ""))}
    oldest = min(versions, key=parse_version)
    if parse_version(oldest) < MIN_VERSION:
        raise RedisUnsupported(
            f"Redis {oldest} is too old: the cache needs Redis 7.0 or later (its scripts use "
            "flags so invalidations still run on a full Redis)"
        )
    policy = ",".join(sorted(policies))
    log.info("redis supported", extra={"version": oldest, "maxmemory_policy": policy})
    return policy
