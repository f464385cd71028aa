"""The stale-set race for prices, replayed deterministically on a real Redis: a price is
computed from three sources (its model, its material, the pricing rules), so a fill must
be fenced out by an invalidation of any of its three families, and by none other."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial

import pytest
import redis.asyncio

from mescache.keys import KeySchema
from mescache.store import RedisStore
from tests.integration.test_store_races import paused_fill, reader

KEYS = KeySchema()
PRICE = KEYS.price(5, 2, "size=17.5")


async def fill_racing(client: redis.asyncio.Redis, family: str) -> tuple[bytes, bytes | str | None]:
    """A reader computes the price from old rows while `family` is invalidated; returns
    what it served and what Redis holds afterwards."""
    store = RedisStore(client)
    fill, invalidated = await paused_fill(client, PRICE, 3600, b'{"total": "100.00"}')
    # The price is in no tag set yet: only the family's fence can stop its fill.
    assert not await client.exists(*PRICE.tags)
    await store.send(
        lambda cmds: store.queue_invalidate_family(cmds, family, KEYS.family_fence(family))
    )
    invalidated.set()
    served = await fill
    return served.body, await client.get(PRICE.name)


@pytest.mark.parametrize(
    "family",
    [KEYS.price_family_of_model(5), KEYS.price_family_of_material(2, 5), KEYS.all_prices(5)],
    ids=["model", "material", "pricing-rules"],
)
async def test_a_price_fill_that_raced_any_of_its_families_is_not_stored(
    redis_client: redis.asyncio.Redis, family: str
) -> None:
    served, stored = await fill_racing(redis_client, family)
    assert served == b'{"total": "100.00"}'  # the reader answers with what it computed
    assert stored is None  # but does not put the old price back
    fresh = await reader(redis_client).get(PRICE, 3600, _const(b'{"total": "120.00"}'))
    assert fresh.body == b'{"total": "120.00"}'
    assert await redis_client.get(PRICE.name) == b'{"total": "120.00"}'


@pytest.mark.parametrize(
    "family",
    [KEYS.price_family_of_model(6), KEYS.price_family_of_material(3, 5)],
    ids=["other-model", "other-material"],
)
async def test_an_unrelated_familys_invalidation_does_not_fence_the_fill(
    redis_client: redis.asyncio.Redis, family: str
) -> None:
    _, stored = await fill_racing(redis_client, family)
    assert stored == b'{"total": "100.00"}'
    for tag in PRICE.tags:
        assert await redis_client.sismember(tag, PRICE.name)


async def test_each_family_invalidation_reaches_a_cached_price(
    redis_client: redis.asyncio.Redis,
) -> None:
    store = RedisStore(redis_client)
    for family in PRICE.tags:
        await reader(redis_client).get(PRICE, 3600, _const(b"price"))
        assert await redis_client.get(PRICE.name) == b"price"
        fence = KEYS.family_fence(family)
        await store.send(partial(store.queue_invalidate_family, family=family, fence=fence))
        assert await redis_client.get(PRICE.name) is None, family


def _const(body: bytes) -> Callable[[], Awaitable[bytes]]:
    async def load() -> bytes:
        return body

    return load
