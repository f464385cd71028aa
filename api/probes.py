"""Readiness of the API: PostgreSQL is required, Redis only makes reads cheap.

Without Redis every read is still answered (from PostgreSQL, the breaker skips Redis), so
the API reports itself *degraded* but keeps taking traffic; without PostgreSQL nothing can
be answered or written, so it is not ready (503) and a load balancer should look elsewhere.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import Final

import psycopg
from redis.asyncio import Redis
from redis.exceptions import RedisError

from mescache.db import Pool
from mescache.queries import query

log = logging.getLogger("api.probes")

# Shorter than the health checks' own timeouts (compose: 3 s), long enough for a loaded
# machine to hand out a pooled connection.
PROBE_TIMEOUT: Final = 2.0


@dataclass(frozen=True, slots=True)
class Readiness:
    """What the API can reach now: PostgreSQL (required) and Redis (makes reads cheap)."""

    postgresql: bool
    redis: bool

    @property
    def serving(self) -> bool:
        """Whether the API can answer requests (PostgreSQL is reachable)."""
        return self.postgresql

    @property
    def status(self) -> str:
        """Ready, degraded (no Redis: reads from PostgreSQL) or unavailable."""
        if not self.postgresql:
            return "unavailable"
        return "ready" if self.redis else "degraded"

    def body(self) -> bytes:
        """The JSON body of /readyz."""
        return json.dumps(
            {
                "status": self.status,
                "postgresql": "ok" if self.postgresql else "unreachable",
                "redis": "ok" if self.redis else "unreachable",
            }
        ).encode()


async def readiness(pool: Pool, redis: Redis) -> Readiness:
    """Ask PostgreSQL and Redis at once, each within PROBE_TIMEOUT."""
    postgresql, redis_ok = await asyncio.gather(_postgresql(pool), _redis(redis))
    return Readiness(postgresql, redis_ok)


async def _postgresql(pool: Pool) -> bool:
    try:
        async with asyncio.timeout(PROBE_TIMEOUT):
            async with pool.connection(timeout=PROBE_TIMEOUT) as conn:
                await conn.execute(query("ping"))
    except (psycopg.Error, TimeoutError) as exc:
        log.debug("readiness: postgresql unreachable", extra={"error": str(exc)})
        return False
    return True


async def _redis(redis: Redis) -> bool:
    try:
        async with asyncio.timeout(PROBE_TIMEOUT):
            await redis.ping()
    except (RedisError, OSError, TimeoutError) as exc:
        log.debug("readiness: redis unreachable", extra={"error": str(exc)})
        return False
    return True
