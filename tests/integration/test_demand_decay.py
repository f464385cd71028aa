"""Price request counts decay: after halvings, old demand loses to new demand in what
warm-up reads (the top of the counter, mescache.warm), one API process claims each halving,
and a price asked for once long ago leaves the counter."""

from __future__ import annotations

from typing import cast

import redis.asyncio

from api.demand import Demand
from mescache.keys import KeySchema
from mescache.pricing import PriceRequest
from mescache.store import Counter, RedisStore

HALF_LIFE = 3600.0
KEYS = KeySchema()


def counter(model: int) -> Counter:
    return Counter(KEYS.price_requests(), PriceRequest(model, 1).member())


async def asked(demand: Demand, model: int, times: int) -> None:
    for _ in range(times):
        demand.note(counter(model))
    await demand.flush()


async def top(r: redis.asyncio.Redis) -> list[tuple[str, float]]:
    """The counter's members, most requested first, as warm-up reads them."""
    found = cast(
        list[tuple[bytes, float]],
        await r.zrevrange(KEYS.price_requests(), 0, -1, withscores=True),
    )
    return [(member.decode(), score) for member, score in found]


async def test_old_demand_loses_to_new_demand_after_halvings(redis_url: str) -> None:
    now = [0.0]
    async with redis.asyncio.Redis.from_url(redis_url) as r:
        demand = Demand(RedisStore(r), clock=lambda: now[0])
        demand.halve_every(KEYS.price_requests_halved(), HALF_LIFE)
        await asked(demand, 1, 40)  # last season's favourite
        await asked(demand, 3, 1)  # asked for once
        now[0] += HALF_LIFE  # this process asks again; Redis's clock says none is due
        await asked(demand, 2, 15)  # what is asked for now
        assert [m for m, _ in await top(r)] == ["1:1:size=base", "2:1:size=base", "3:1:size=base"]

        # Two half-lives pass on Redis's clock (the mark is moved back instead of waiting).
        mark = KEYS.price_requests_halved()
        await r.set(mark, int(await r.get(mark) or 0) - round(2 * HALF_LIFE * 1000))
        now[0] += HALF_LIFE * 0.05  # too soon for this process to ask again
        await asked(demand, 2, 1)
        assert dict(await top(r))["1:1:size=base"] == 40  # nothing halved yet

        now[0] += HALF_LIFE * 0.05
        await asked(demand, 2, 14)
        # 40 → 10, (15 + 1) → 4 then + 14 → 18; the price asked for once is dropped.
        assert await top(r) == [("2:1:size=base", 18.0), ("1:1:size=base", 10.0)]

        # Another API process finds the halvings claimed: it halves nothing again.
        other = Demand(RedisStore(r))
        other.halve_every(mark, HALF_LIFE)
        await asked(other, 1, 1)
        assert await top(r) == [("2:1:size=base", 18.0), ("1:1:size=base", 11.0)]


async def test_without_a_half_life_counts_never_decay(redis_url: str) -> None:
    async with redis.asyncio.Redis.from_url(redis_url) as r:
        demand = Demand(RedisStore(r))
        demand.halve_every(KEYS.price_requests_halved(), 0)
        await asked(demand, 1, 3)
        await r.set(KEYS.price_requests_halved(), 0)  # as if halved long ago
        await asked(demand, 1, 1)
        assert await top(r) == [("1:1:size=base", 4.0)]
