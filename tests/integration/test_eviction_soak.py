"""The cache on a real Redis that runs out of memory under every eviction policy: readers
that overflow its `maxmemory`, raw-SQL writers, the listener; afterwards the checker finds
nothing stale, and every change reached the reads that show it meanwhile.

`EVICTION_SOAK_SECONDS` sets how long each policy is loaded (`make test` a few seconds,
`make soak` longer).
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest
import redis.asyncio

from api.app import create_app
from cdc_listener.check import Checker
from devtools.devstack import RedisServer
from mescache.db import make_pool
from mescache.keys import KeySchema
from mescache.orders import STATUSES
from mescache.settings import CacheSettings
from tests.conftest import Servers
from tests.integration.conftest import api_settings, http_client
from tests.integration.listener_fixtures import InProcessListener, eventually, listener_settings

SECONDS = float(os.environ.get("EVICTION_SOAK_SECONDS", "4"))
POLICIES = [
    "allkeys-lru",
    "allkeys-lfu",
    "allkeys-random",
    "volatile-lru",
    "volatile-lfu",
    "volatile-random",
    "volatile-ttl",
    "noeviction",
]


@pytest.fixture(scope="session")
def small_redis(servers: Servers) -> Iterator[RedisServer]:
    """A Redis whose `maxmemory` each test sets just below what its load has filled."""
    server = RedisServer(servers.workdir / "redis-small", servers.redis.binary)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def evicting(small_redis: RedisServer, request: pytest.FixtureRequest) -> str:
    url = small_redis.url(0)
    client = redis.asyncio.Redis.from_url(url)
    await client.flushall()
    await client.config_set("maxmemory", 0)
    await client.config_set("maxmemory-policy", request.param)
    await client.config_resetstat()
    await client.aclose()
    return url


async def _readers(http: httpx.AsyncClient, until: float) -> int:
    """Reads of every kind, with page sizes and cursors enough to overflow it."""
    reads = 0
    rng = random.Random(7)
    while time.monotonic() < until:
        choice = rng.random()
        if choice < 0.4:
            path = f"/orders/{rng.randint(1, 300)}"
        elif choice < 0.8:
            status = rng.choice(STATUSES)
            cursor = rng.choice(["", f"&cursor={rng.randint(2, 300)}"])
            path = f"/orders?status={status}&limit={rng.randint(1, 200)}{cursor}"
        elif choice < 0.9:
            path = f"/models/{rng.randint(1, 24)}/price?material={rng.randint(1, 3)}"
        else:
            path = "/orders/dashboard"
        resp = await http.get(path)
        assert resp.status_code in (200, 404), resp.text
        reads += 1
    return reads


def _write(database_url: str, rng: random.Random) -> tuple[int, str]:
    """A DBA's raw status change (any status: the rules of the API do not bind psql)."""
    order_id, status = rng.randint(1, 300), rng.choice(STATUSES)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("UPDATE orders SET status = %s WHERE id = %s", [status, order_id])
        if rng.random() < 0.2:
            conn.execute("UPDATE materials SET price_per_gram = price_per_gram + 0.01 WHERE id = 1")
    return order_id, status


async def _shows(http: httpx.AsyncClient, order_id: int, status: str) -> bool:
    """Whether the reads that show this order agree with its status now."""
    one = (await http.get(f"/orders/{order_id}")).json()
    if one["status"] != status:
        return False
    page: dict[str, Any] = (await http.get(f"/orders?status={status}&limit=200")).json()
    listed = {o["id"] for o in page["items"]}
    return order_id in listed or page["next_cursor"] is not None


@pytest.mark.parametrize("evicting", POLICIES, indirect=True)
async def test_nothing_stale_on_an_evicting_redis(database_url: str, evicting: str) -> None:
    settings = api_settings(database_url, evicting, redis_retry_after=0.2)
    app = create_app(settings)
    listener = InProcessListener(listener_settings(database_url, evicting))
    await listener.start()
    rng = random.Random(11)
    try:
        async with app.router.lifespan_context(app), http_client(app) as http:
            until = time.monotonic() + SECONDS
            load = [asyncio.create_task(_readers(http, until)) for _ in range(4)]
            squeeze = asyncio.create_task(_squeeze(evicting, SECONDS / 2))
            writes = 0
            while time.monotonic() < until:
                order_id, status = await asyncio.to_thread(_write, database_url, rng)
                writes += 1
                # Each change reaches the reads that show it (a stale page would stay so
                # until its TTL, far past this bound).
                await eventually(
                    lambda o=order_id, s=status: _shows(http, o, s),  # type: ignore[misc]
                    f"order {order_id} shown as {status}",
                    within=10,
                )
            reads = sum(await asyncio.gather(*load))
            await squeeze
            # The load's last values may all be gone (eviction makes room for the values in
            # flight too): a last round of reads leaves values for the checker to compare.
            reads += await _readers(http, time.monotonic() + 1.0)
        assert writes > 3
        assert reads > 100
        await _no_stale_keys(database_url, evicting)
        info = await _info(evicting)
        # The soak's figures (shown by `make soak`, which runs this with -s).
        print(
            f"eviction soak {evicting_policy(info)}: {SECONDS:g} s, {reads} reads,"
            f" {writes} raw-SQL changes each seen through the API, {info['evicted_keys']} keys"
            " evicted, 0 stale keys"
        )
        if evicting_policy(info) != "noeviction":
            assert int(info["evicted_keys"]) > 0, (
                f"the load did not overflow the Redis ({reads} reads)"
            )
    finally:
        await listener.close()


async def _squeeze(url: str, after: float) -> None:
    """Once the load has filled the cache for a while, cap the memory a little above what it
    uses: soon every new value costs an eviction (of whatever the policy picks), while most
    of the cache stays (a cap below the server's own overhead would evict everything)."""
    await asyncio.sleep(after)
    client = redis.asyncio.Redis.from_url(url)
    try:
        used = int((await client.info("memory"))["used_memory"])
        await client.config_set("maxmemory", used + 200_000)
    finally:
        await client.aclose()


async def _info(url: str) -> dict[str, Any]:
    client = redis.asyncio.Redis.from_url(url)
    try:
        return {**await client.info("stats"), **await client.info("memory")}
    finally:
        await client.aclose()


def evicting_policy(info: dict[str, Any]) -> str:
    return str(info["maxmemory_policy"])


async def _no_stale_keys(database_url: str, redis_url: str) -> None:
    settings = CacheSettings(database_url=database_url, redis_url=redis_url)
    pool = make_pool(database_url, 0, 4, "checker")
    await pool.open()
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        report = await Checker(client, pool, KeySchema(), settings).run(grace=1.0)
        assert report.stale == [], report.summary()
        assert sum(report.checked.values()) > 0
    finally:
        await client.aclose()
        await pool.close()
