"""The API with a silent peer (every connection black-holed through the fault proxy, new
ones too): Redis silent, reads answer from PostgreSQL; PostgreSQL silent, cached reads
answer from Redis and the others fail with 503; never a hang, and once the peer answers
again no silent connection is reused."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from api.app import create_app
from devtools.faultproxy import FaultProxy
from tests.conftest import Servers
from tests.integration.conftest import api_settings, http_client
from tests.integration.listener_fixtures import eventually

CACHED = ("/orders/dashboard", "/orders/new", "/orders/1", "/orders?status=done")
# A hang guard, not a performance figure: a silent peer without bounds waits for ever.
NO_HANG = 5.0


@pytest.fixture
async def redis_proxy(servers: Servers) -> AsyncIterator[FaultProxy]:
    async with FaultProxy("127.0.0.1", servers.redis.port) as proxy:
        yield proxy


@pytest.fixture
async def pg_proxy(servers: Servers) -> AsyncIterator[FaultProxy]:
    async with FaultProxy("127.0.0.1", servers.pg.port) as proxy:
        yield proxy


async def timed_get(client: httpx.AsyncClient, path: str) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = await asyncio.wait_for(client.get(path), NO_HANG)
    return response, time.monotonic() - started


async def all_hits(client: httpx.AsyncClient) -> bool:
    return all([(await client.get(p)).headers.get("x-cache") == "hit" for p in CACHED])


async def test_reads_answer_from_postgresql_while_redis_is_silent(
    database_url: str, redis_url: str, redis_proxy: FaultProxy
) -> None:
    settings = api_settings(database_url, redis_proxy.url_for(redis_url), redis_retry_after=0.3)
    app = create_app(settings)
    async with app.router.lifespan_context(app), http_client(app) as client:
        warm = [(await client.get(p)).json() for p in CACHED]
        assert await all_hits(client)
        redis_proxy.black_hole()
        took: list[float] = []
        for _ in range(3):
            for path, expected in zip(CACHED, warm, strict=True):
                response, seconds = await timed_get(client, path)
                assert response.status_code == 200
                assert response.headers["x-cache"] == "miss"
                assert response.json() == expected
                took.append(seconds)
            await asyncio.sleep(0.35)  # past REDIS_RETRY_AFTER: the next read probes Redis
        # Each probe paid one REDIS_TIMEOUT at most, the other reads skipped Redis.
        print(f"redis silent: {len(took)} reads, slowest {max(took):.3f} s")
        assert (await client.get("/healthz")).json()["redis"] == "open"

        redis_proxy.heal()  # new connections pass; the silent ones stay silent
        await eventually(lambda: all_hits(client), "hits again")
        for _ in range(3):  # no silent connection left in the pool to time out on
            assert await all_hits(client)


async def test_cached_reads_answer_and_others_fail_fast_while_postgresql_is_silent(
    database_url: str, redis_url: str, pg_proxy: FaultProxy
) -> None:
    settings = api_settings(pg_proxy.url_for(database_url), redis_url, db_timeout=0.5)
    app = create_app(settings)
    async with app.router.lifespan_context(app), http_client(app) as client:
        for path in CACHED:
            await client.get(path)
        assert await all_hits(client)
        pg_proxy.black_hole()
        for _ in range(3):
            for path in CACHED:
                response, _ = await timed_get(client, path)
                assert (response.status_code, response.headers["x-cache"]) == (200, "hit")
            for order_id in (2, 3, 4):  # never read: not cached
                response, seconds = await timed_get(client, f"/orders/{order_id}")
                assert response.status_code == 503
                assert response.json() == {"detail": "database unavailable"}
                print(f"postgresql silent: 503 in {seconds:.3f} s")

        pg_proxy.heal()

        async def answers() -> bool:
            return (await client.get("/orders/5")).status_code == 200

        await eventually(answers, "postgresql answers again")
        for order_id in range(6, 16):  # every pooled connection is a live one
            response, _ = await timed_get(client, f"/orders/{order_id}")
            assert response.status_code == 200
