"""Warm-up: fill the hot keys before traffic, so the first operator after a deploy or a
Redis restart does not pay the miss.

The hot keys are the dashboard, the newest orders, the first page of each status (at the
default page size), the catalogue's names, the first page of the customers who ordered
last, and the most requested prices (the request counter's top entries).
Each is filled exactly as the API fills a miss: take the key's lease, read its fences,
run the same query, store only if no fence moved (mescache.store). A key already cached is
left alone; a key whose lease another reader holds is being filled already. Warm-up never
deletes or rewrites a cached value. A counted price that no longer names a valid request
(the model was deleted, the size no longer fits) is dropped from the counter.

Used by ``cdc-listener warm`` and, with ``WARM_ON_START``, by the API before it serves.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Literal, cast

from mescache import reads
from mescache.db import Pool
from mescache.errors import PricingError
from mescache.keys import CacheKey, KeySchema
from mescache.orders import STATUSES
from mescache.pricing import PriceRequest
from mescache.settings import CacheSettings
from mescache.store import RedisStore

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
    """The keys to warm, the most requested prices last (most requested first among them)."""
    limit, page = settings.new_orders_limit, settings.page_limit_default
    targets = [
        Target(keys.dashboard(), settings.ttl_dashboard, lambda: reads.dashboard_json(pool)),
        Target(keys.new_orders(), settings.ttl_new, lambda: reads.newest_json(pool, limit)),
    ]
    for status in STATUSES:
        targets.append(
            Target(
                keys.status_page(status, None, page),
                settings.ttl_status,
                partial(reads.status_page_json, pool, status, None, page),
            )
        )
    targets.append(
        Target(keys.catalogue(), settings.ttl_catalogue, partial(reads.catalogue_json, pool))
    )
    for customer in await reads.recent_customers(pool, settings.warm_customers):
        targets.append(
            Target(
                keys.customer_page(customer, None, page),
                settings.ttl_customer,
                partial(reads.customer_page_json, pool, customer, None, page),
            )
        )
    if settings.warm_prices:
        top = cast(
            list[bytes],
            await store.redis.zrevrange(keys.price_requests(), 0, settings.warm_prices - 1),
        )
        for raw in top:
            member = raw.decode()
            try:
                request = PriceRequest.from_member(member)
            except PricingError:
                await store.redis.zrem(keys.price_requests(), member)
                continue
            targets.append(
                Target(
                    keys.price(request.model_id, request.material_id, request.params()),
                    settings.ttl_price,
                    partial(reads.price_json, pool, request),
                    counted=member,
                )
            )
    return targets


async def fill(store: RedisStore, target: Target, lease: float) -> Outcome:
    """One fenced fill, as the API does it on a miss (without waiting for another filler)."""
    token = secrets.token_hex(8)
    ticket = await store.begin_fill(target.key, lease, token)
    if ticket.value is not None:
        return "cached"
    if not ticket.leased:
        return "busy"
    try:
        body = await target.load()
    except BaseException:
        await store.release(target.key, token)
        raise
    stored = await store.finish_fill(target.key, body, target.ttl, ticket.fence, token)
    return "filled" if stored else "fenced"


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
