"""Cache-aside reads: Redis first; on a miss one fenced fill per key, from PostgreSQL.

- Inside one process, concurrent misses of a key share one fill (a future per key).
- Across processes, a short Redis lease lets one reader fill; the others poll briefly for
  the value (or for the lease, should the leader's fill be fenced out) and then read
  PostgreSQL themselves without storing.
- The fill stores only if no invalidation moved the key's fence since before the SELECT
  (mescache.store), so a reader can never put back a row the listener just invalidated.
- Any Redis failure trips the breaker and the read is served from PostgreSQL (tracked
  near hits aside, below).
- Large values (the dashboard, big status pages) are also kept in process (api.nearcache):
  a hit then asks Redis only whether the value's fence token still stands and sends the
  value again only if it moved, instead of moving the whole body on every request. A near
  copy is never served without that check (see api.nearcache for why it is exact), but
  for the tracked hits below.
- Concurrent reads of one near-kept key share checks: one is in flight per key, and every
  read that arrives meanwhile waits for the next, sent once the first returns. A read thus
  always gets the answer of a check sent after it arrived, as if it had sent its own, and a
  burst of N reads costs two round trips instead of N.
- With ``NEAR_CACHE=tracked`` a near copy the proven invalidation channel vouches for is
  served with no round trip, before the breaker is asked: the channel's heartbeat is its
  own proof that Redis answers (api.tracking says why and for how long that is exact).

Hits, misses, fills and the SELECTs they cost are counted in api.metrics (hits and misses
also feed /stats and the dashboard's hit ratio).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from dataclasses import dataclass
from typing import Final

from redis.exceptions import ResponseError

from api.breaker import RedisBreaker
from api.demand import Demand
from api.metrics import ApiMetrics
from api.nearcache import NearCache, read_names
from mescache.fill import Loader, fenced_fill
from mescache.keys import CacheKey
from mescache.store import FENCE_TTL_MS, REDIS_FAILURES, Counter, RedisStore

log = logging.getLogger("api.cache")


class _Bypass(enum.Enum):
    """What `_cached` returns when Redis must not be asked (the breaker is open)."""

    BYPASS = enum.auto()


_BYPASS: Final = _Bypass.BYPASS


@dataclass(frozen=True, slots=True)
class Read:
    """A read's bytes, and whether they came from the cache."""

    body: bytes
    hit: bool


@dataclass(slots=True)
class _Check:
    """One near check (a `store.read` round trip), shared by every read of the key that
    arrived before it was sent (`sent` turns true just before the command goes out)."""

    task: asyncio.Task[bytes | None] | None = None
    sent: bool = False


class ReadThrough:
    """Serves a key from Redis, or fills it from a loader under a lease and a fence."""

    def __init__(
        self,
        store: RedisStore,
        breaker: RedisBreaker,
        lease: float,
        wait: float,
        *,
        single_flight: bool = True,
        near: NearCache | None = None,
        metrics: ApiMetrics | None = None,
    ) -> None:
        self.store = store
        self.near = near if near is not None else NearCache(0, 0)
        self.breaker = breaker
        self.lease = lease
        # Without single flight every miss reads PostgreSQL (naive cache-aside); only the
        # lease holder stores, so the fence still guards the value.
        self.wait = wait if single_flight else 0.0
        self.single_flight = single_flight
        self.metrics = metrics or ApiMetrics(breaker)
        self._inflight: dict[str, asyncio.Future[Read]] = {}
        self._checks: dict[str, _Check] = {}  # the newest near check of each key
        self.demand = Demand(store)

    @property
    def hits(self) -> int:
        """Reads this process answered from Redis."""
        return self.metrics.hits

    @property
    def misses(self) -> int:
        """Reads this process answered from PostgreSQL."""
        return self.metrics.misses

    async def get(
        self, key: CacheKey, ttl: float, load: Loader, counter: Counter | None = None
    ) -> Read:
        """The key's value, filled by `load` on a miss; `counter` counts the request once
        it is known to name something that exists (a valid value, or a load that worked)."""
        read = await self._get(key, ttl, load)
        if counter is not None:
            self.demand.note(counter)
        if read.hit:
            self.metrics.hits += 1
        else:
            self.metrics.misses += 1
        return read

    async def close(self) -> None:
        """Send the counts still pending (before the Redis client closes)."""
        await self.demand.close()
        await self.near.close()

    async def _load(self, load: Loader) -> bytes:
        self.metrics.db_reads += 1
        return await load()

    async def hit(self, key: CacheKey) -> bytes | None:
        """The key's cached value if the cache holds a valid one (counted as a hit), else
        None: no fill, no database read, no lease. While the breaker is tripped it asks
        nothing of Redis (the caller's full read probes it); a failure trips it."""
        if self.breaker.state != "closed":
            tracked = self.near.tracked_hit(key.name)
            if tracked is not None:
                self.metrics.hits += 1
            return tracked
        value = await self._cached(key)
        if value is None or value is _BYPASS:
            return None
        self.metrics.hits += 1
        return value

    async def _get(self, key: CacheKey, ttl: float, load: Loader) -> Read:
        value = await self._cached(key)
        if value is _BYPASS:
            return Read(await self._load(load), hit=False)
        if value is not None:
            return Read(value, hit=True)
        if not self.single_flight:
            return await self._fill(key, ttl, load)
        return await self._fill_once(key, ttl, load)

    async def _cached(self, key: CacheKey) -> bytes | _Bypass | None:
        """The valid cached value, None on a miss, or `_BYPASS` when Redis is not to be
        asked (the breaker is open, or the call just failed and tripped it)."""
        tracked = self.near.tracked_hit(key.name)  # a copy the proven channel vouches for
        if tracked is not None:
            return tracked
        if not self.breaker.allow():
            return _BYPASS
        try:
            if self.near.wants(key.name):
                value = await self._near_get(key)
            else:
                value = await self.store.get(key)
                if value is not None:
                    self.near.note_large(key.name, value)
        except REDIS_FAILURES as exc:
            self.breaker.failed(exc)
            return _BYPASS
        self.breaker.succeeded()
        return value

    async def _near_get(self, key: CacheKey) -> bytes | None:
        """The value, from this process if Redis confirms its token, else from Redis; a check
        not yet sent is joined, else one is queued behind the one in flight."""
        newest = self._checks.get(key.name)
        if newest is not None and not newest.sent:
            assert newest.task is not None
            return await asyncio.shield(newest.task)
        check = _Check()
        ahead = newest.task if newest is not None else None
        check.task = asyncio.get_running_loop().create_task(self._shared_check(key, check, ahead))
        check.task.add_done_callback(_retrieve)
        self._checks[key.name] = check
        return await asyncio.shield(check.task)

    async def _shared_check(
        self, key: CacheKey, check: _Check, ahead: asyncio.Task[bytes | None] | None
    ) -> bytes | None:
        try:
            if ahead is not None and not ahead.done():
                await asyncio.wait([ahead])  # one check in flight per key; its outcome is its own
            check.sent = True
            return await self._near_check(key)
        finally:
            if self._checks.get(key.name) is check:
                del self._checks[key.name]

    async def _near_check(self, key: CacheKey) -> bytes | None:
        entry = self.near.lookup(key.name)
        watch, names = self.near.watch(key.name), read_names(key)  # tracked: api.tracking
        store = watch.store if watch is not None and watch.store is not None else self.store
        started = time.monotonic()
        held = entry.token if entry else b""
        try:
            reply = await store.read(key, held)
        except ResponseError:
            if store is self.store:
                raise
            # The tracked node refused (on a cluster: a slot that moved): the main client
            # answers, and the copy is not marked.
            watch = None
            reply = await self.store.read(key, held)
        if entry is not None and reply.unchanged:
            self.near.confirm(key.name, reply.pttl_ms, watch=watch, names=names)
            return entry.body
        if reply.value is None:
            self.near.drop(key.name)
            return None
        if 0 < reply.pttl_ms <= FENCE_TTL_MS:
            deadline = started + reply.pttl_ms / 1000
            self.near.keep(key.name, reply.token, reply.value, deadline, watch=watch, names=names)
        else:
            self.near.drop(key.name)
        return reply.value

    async def _fill_once(self, key: CacheKey, ttl: float, load: Loader) -> Read:
        """Fill, or share the fill another request of this process already leads."""
        shared = self._inflight.get(key.name)
        if shared is not None:
            try:
                return await asyncio.shield(shared)
            except asyncio.CancelledError:
                if not shared.cancelled():
                    raise  # this request itself was cancelled
                # The leading request went away (client gone): fill on our own.
                return await self._fill(key, ttl, load)
        future: asyncio.Future[Read] = asyncio.get_running_loop().create_future()
        self._inflight[key.name] = future
        try:
            result = await self._fill(key, ttl, load)
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # marked retrieved: waiters re-raise it, nobody else must
            raise
        else:
            future.set_result(result)
            return result
        finally:
            del self._inflight[key.name]

    async def _fill(self, key: CacheKey, ttl: float, load: Loader) -> Read:
        fill_started = time.perf_counter()
        filled = await fenced_fill(
            self.store,
            key,
            ttl,
            lambda: self._load(load),
            self.lease,
            wait=self.wait,
            load_when_busy=True,
            failed=self.breaker.failed,
        )
        assert filled.body is not None  # loaded when busy: never None here
        if filled.outcome == "cached":
            self.near.note_large(key.name, filled.body)
            return Read(filled.body, hit=True)
        if filled.outcome == "unleased":
            self.metrics.fills_unleased.inc()
        elif filled.outcome == "filled":
            self.metrics.fills_stored.inc()
            if ttl * 1000 <= FENCE_TTL_MS:
                # Redis now holds this body under the fence the fill was checked against.
                self.near.keep(key.name, filled.fence, filled.body, filled.stored_at + ttl)
        elif filled.outcome == "fenced":
            self.metrics.fills_fenced.inc()
            log.debug("fill fenced out by an invalidation", extra={"key": key.name})
        if filled.outcome in ("filled", "fenced"):
            self.metrics.fill_seconds.observe(time.perf_counter() - fill_started)
        return Read(filled.body, hit=False)


def _retrieve(task: asyncio.Task[bytes | None]) -> None:
    """Mark a shared check's failure as seen: its readers may all have gone away."""
    if not task.cancelled():
        task.exception()
