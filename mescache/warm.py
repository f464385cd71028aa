"""Warm-up: fill the hot keys before traffic, so the first operator after a deploy or a
Redis restart does not pay the miss.

The hot keys are those the views of the catalogue (mescache.views) name: the dashboard,
the newest orders, the first page of each status (at the default page size), the
catalogue's names, the first page of the customers who ordered last, and the most
requested prices (the request counter's top entries). Each is filled by the API's own
fenced fill (mescache.fill): take the key's lease, read its fences, run the same query,
store only if no fence moved. A key already cached is
left alone; a key whose lease another reader holds is being filled already. Warm-up never
deletes or rewrites a cached value. A counted price that no longer names a valid request
(the model was deleted, the size no longer fits) is dropped from the counter.

Used by ``cdc-listener warm`` and, with ``WARM_ON_START``, by the API before it serves.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal

from mescache.db import Pool
from mescache.errors import PricingError
from mescache.fill import fenced_fill
from mescache.keys import CacheKey, KeySchema
from mescache.settings import CacheSettings
from mescache.store import RedisStore
from mescache.views import VIEWS, Lookup

log = logging.getLogger("mescache.warm")

Outcome = Literal["filled", "cached", "busy", "fenced", "dropped"]
OUTCOMES: tuple[Outcome, ...] = ("filled", "cached", "busy", "fenced", "dropped")
Loader = Callable[[], Awaitable[bytes]]
Progress = Callable[["Target", Outcome], None]

DEFAULT_LEASE = 2.0  # s: as long as the API's default FILL_LEASE
_CONCURRENCY = 4  # fills at a time: quick, without crowding out the database


@dataclass(frozen=True, slots=True)
class Target:
    """One key to warm and how to compute it."""

    key: CacheKey
    ttl: float
    load: Loader
    counted: str | None = None  # the request counter's member, for prices


@dataclass(slots=True)
class WarmReport:
    """How many keys ended how."""

    outcomes: Counter[Outcome] = field(default_factory=Counter)

    def summary(self) -> str:
        """One line saying what a warm-up did."""
        total = sum(self.outcomes.values())
        parts = ", ".join(f"{self.outcomes[o]} {o}" for o in OUTCOMES if self.outcomes[o])
        return f"{total} hot keys: {parts or 'none'}"


async def hot_targets(
    store: RedisStore, keys: KeySchema, pool: Pool, settings: CacheSettings
) -> list[Target]:
    """The keys to warm: what each view of the catalogue (mescache.views) names, in its
    order (the most requested prices last, most requested first among them)."""
    lookup = Lookup(pool, settings, store, keys)
    targets = []
    for view in VIEWS.values():
        if view.warm is None:
            continue
        for params in await view.warm(lookup):
            counted = None if view.counter is None else view.counter(keys, params).member
            targets.append(
                Target(
                    view.key(keys, params),
                    view.ttl(settings),
                    view.loader(pool, settings, params),
                    counted,
                )
            )
    return targets


async def fill(store: RedisStore, target: Target, lease: float) -> Outcome:
    """One fenced fill, as the API does it on a miss (without waiting for another filler)."""
    filled = await fenced_fill(store, target.key, target.ttl, target.load, lease)
    outcome = filled.outcome
    assert outcome in ("cached", "busy", "filled", "fenced")  # without `failed`: Redis raises
    return outcome


async def warm_targets(
    store: RedisStore,
    keys: KeySchema,
    targets: list[Target],
    lease: float = DEFAULT_LEASE,
    progress: Progress | None = None,
) -> WarmReport:
    """Fill `targets` a few at a time; `progress` hears of each one as it ends."""
    report = WarmReport()
    gate = asyncio.Semaphore(_CONCURRENCY)

    async def one(target: Target) -> None:
        async with gate:
            try:
                outcome = await fill(store, target, lease)
            except PricingError as exc:
                # the counted request is no longer valid: stop warming it
                log.info("warm-up drops price key=%s reason=%s", target.key.name, exc)
                if target.counted is not None:
                    await store.redis.zrem(keys.price_requests(), target.counted)
                outcome = "dropped"
        report.outcomes[outcome] += 1
        if progress is not None:
            progress(target, outcome)

    await asyncio.gather(*(one(t) for t in targets))
    return report


async def warm(
    store: RedisStore,
    keys: KeySchema,
    pool: Pool,
    settings: CacheSettings,
    lease: float = DEFAULT_LEASE,
) -> WarmReport:
    """Find the hot keys and fill them."""
    targets = await hot_targets(store, keys, pool, settings)
    return await warm_targets(store, keys, targets, lease)
