"""Warm-up: `cdc-listener warm` and WARM_ON_START fill the hot keys through the fenced fill
path, leave cached keys alone, drop counted prices that are no longer valid, and a warm-up
that cannot reach its servers says so (the CLI) or costs nothing (the API)."""

from __future__ import annotations

import httpx
import redis.asyncio

from api.app import create_app
from mescache.orders import STATUSES
from tests.integration.conftest import api_settings, http_client
from tests.integration.listener_fixtures import eventually
from tests.integration.test_cli import cli

HOT_ORDER_KEYS = [
    "orders:{dashboard}",
    "orders:{new}",
    *(f"orders:{{status:{s}}}:page:first:50" for s in STATUSES),
    "catalogue:{names}",
]


async def count_requests(r: redis.asyncio.Redis, counts: dict[str, int]) -> None:
    await r.zadd("stats:price-requests", counts)


async def test_warm_fills_the_hot_keys_and_the_most_requested_prices(
    database_url: str, redis_url: str, redis_client: redis.asyncio.Redis
) -> None:
    await count_requests(
        redis_client,
        {
            "1:1:size=17": 50,  # the most requested
            "2:3:size=base": 40,
            "999999:1:size=base": 30,  # a model since deleted
            "1:1:size=40": 20,  # a size that does not fit (any more)
            "3:2:size=base": 1,  # asked once: below the top 4
        },
    )
    env = {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "WARM_PRICES": "4",
        "WARM_CUSTOMERS": "2",
        "TTL_NEW": "600",  # the second run must find the first one's keys, however slow
    }
    done = cli("warm", env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "warm: 13 hot keys: 11 filled, 2 dropped"
    assert await redis_client.exists(*HOT_ORDER_KEYS) == len(HOT_ORDER_KEYS)
    assert (
        await redis_client.exists("price:{model:1}:1:size=17", "price:{model:2}:3:size=base") == 2
    )
    assert not await redis_client.exists("price:{model:3}:2:size=base")
    # filled as the API fills: registered in the families the listener invalidates
    assert await redis_client.sismember("price:{model:2}:material:3", "price:{model:2}:3:size=base")
    assert await redis_client.sismember(
        "orders:{status:done}", "orders:{status:done}:page:first:50"
    )
    remaining = await redis_client.zrange("stats:price-requests", 0, -1)
    assert set(remaining) == {b"1:1:size=17", b"2:3:size=base", b"3:2:size=base"}

    # a second run rewrites nothing cached; the dropped entries made room in the top 4
    before = await redis_client.get("orders:{dashboard}")
    again = cli("warm", env=env)
    assert again.stdout.strip() == "warm: 12 hot keys: 1 filled, 11 cached"
    assert await redis_client.exists("price:{model:3}:2:size=base")
    assert await redis_client.get("orders:{dashboard}") == before


async def test_what_warm_fills_the_api_serves_as_a_hit(
    database_url: str,
    redis_url: str,
    client: httpx.AsyncClient,
    redis_client: redis.asyncio.Redis,
) -> None:
    for _ in range(2):
        await client.get("/models/1/price", params={"material": 1, "size": "17.0"})
    await client.get("/models/2/price", params={"material": 1})
    counted = [(b"1:1:size=17", 2.0), (b"2:1:size=base", 1.0)]

    async def all_counted() -> bool:  # counts leave the read path, a moment later
        found = await redis_client.zrevrange("stats:price-requests", 0, -1, withscores=True)
        return bool(found == counted)

    await eventually(all_counted, "the requests counted")
    # Redis restarted empty, but for the counts (as if persisted apart): the first
    # operator after warm-up pays no miss
    await redis_client.flushdb()
    await count_requests(redis_client, {member.decode(): int(score) for member, score in counted})
    env = {"DATABASE_URL": database_url, "REDIS_URL": redis_url, "WARM_PRICES": "1"}
    assert cli("warm", env=env).returncode == 0
    for path in (
        "/orders/dashboard",
        "/orders/new",
        "/orders?status=done",
        "/models/1/price?material=1&size=17",
    ):
        assert (await client.get(path)).headers["x-cache"] == "hit", path
    assert (await client.get("/models/2/price?material=1")).headers["x-cache"] == "miss"


def test_warm_on_unreachable_servers_exits_1_with_a_message(database_url: str) -> None:
    for env in (
        {"DATABASE_URL": database_url, "REDIS_URL": "redis://127.0.0.1:1/0"},
        {
            "DATABASE_URL": "postgresql://postgres@127.0.0.1:1/none?connect_timeout=2",
            "REDIS_URL": "redis://127.0.0.1:1/0",
        },
    ):
        done = cli("warm", env=env)
        assert done.returncode == 1, done.stderr
        assert done.stderr.startswith("cdc-listener warm: ")
        assert "Traceback" not in done.stderr


async def test_the_api_warms_before_serving_when_asked(
    database_url: str, redis_url: str, redis_client: redis.asyncio.Redis
) -> None:
    await count_requests(redis_client, {"1:1:size=17": 3})
    app = create_app(api_settings(database_url, redis_url, warm_on_start=True))
    async with app.router.lifespan_context(app):
        # warmed before the first request could be served
        assert await redis_client.exists(*HOT_ORDER_KEYS) == len(HOT_ORDER_KEYS)
        assert await redis_client.exists("price:{model:1}:1:size=17")
        async with http_client(app) as http:
            assert (await http.get("/orders/dashboard")).headers["x-cache"] == "hit"


async def test_the_api_starts_and_serves_when_warm_up_finds_redis_down(
    database_url: str,
) -> None:
    app = create_app(api_settings(database_url, "redis://127.0.0.1:1/0", warm_on_start=True))
    async with app.router.lifespan_context(app), http_client(app) as http:
        resp = await http.get("/orders/dashboard")
        assert resp.status_code == 200
        assert resp.json()["items"]


async def test_warm_up_is_off_by_default(app: object, redis_client: redis.asyncio.Redis) -> None:
    assert not await redis_client.exists(*HOT_ORDER_KEYS)
