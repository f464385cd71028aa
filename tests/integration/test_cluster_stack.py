"""The whole product on a real Redis Cluster (3 masters, 3 replicas): the API hits, the
listener invalidates, warm-up and the checker run, the fence races are refused, and a master
failover (forced, then a kill -9) under read and raw-SQL write load ends with nothing stale
while reads keep answering."""

from __future__ import annotations

import asyncio
import random
import time

import httpx
import psycopg
import pytest
from redis.asyncio import Redis

from api.app import create_app
from api.breaker import RedisBreaker
from api.readthrough import Read, ReadThrough
from cdc_listener.check import Checker
from devtools.redisha import LocalCluster
from mescache.db import make_pool
from mescache.keys import CacheKey, KeySchema
from mescache.orders import STATUSES
from mescache.settings import CacheSettings
from mescache.store import Commands, RedisStore
from tests.integration.conftest import api_settings, http_client
from tests.integration.listener_fixtures import InProcessListener, eventually, listener_settings
from tests.integration.test_cli import cli

KEYS = KeySchema()


def _dba(database_url: str, sql: str, *params: object) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql, list(params))


async def _stale_keys(database_url: str, redis: Redis) -> list[str]:
    settings = CacheSettings(database_url=database_url, redis_url="redis://unused")
    pool = make_pool(database_url, 0, 4, "checker")
    await pool.open()
    try:
        report = await Checker(redis, pool, KEYS, settings).run(grace=1.0)
        assert sum(report.checked.values()) > 0
        return [s.name for s in report.stale]
    finally:
        await pool.close()


async def test_the_api_and_the_listener_keep_the_cache_right_on_a_cluster(
    redis_cluster: LocalCluster, cluster_client: Redis, database_url: str
) -> None:
    url = redis_cluster.url
    app = create_app(api_settings(database_url, url))
    listener = InProcessListener(listener_settings(database_url, url))
    await listener.start()
    paths = ["/orders/dashboard", "/orders/new", "/orders/7", "/orders?status=new&limit=20"]
    paths.append("/models/1/price?material=1&size=17")
    try:
        async with app.router.lifespan_context(app), http_client(app) as http:
            for path in paths:
                assert (await http.get(path)).status_code == 200, path
                assert (await http.get(path)).headers["x-cache"] == "hit", path
            _dba(database_url, "UPDATE orders SET status = 'cancelled' WHERE id = 7")
            _dba(database_url, "UPDATE models SET base_price = base_price + 5 WHERE id = 1")
            _dba(database_url, "UPDATE materials SET price_per_gram = price_per_gram + 1")

            async def fresh() -> bool:
                one = (await http.get("/orders/7")).json()
                return bool(one["status"] == "cancelled")

            await eventually(fresh, "order 7 cancelled through the cache")
            assert await _stale_keys(database_url, cluster_client) == []
        env = {"DATABASE_URL": database_url, "REDIS_URL": url}
        assert cli("warm", env=env).returncode == 0
        checked = cli("check", "--grace", "0.5", env=env)
        assert checked.returncode == 0, checked.stdout + checked.stderr
    finally:
        await listener.close()


def _reader(client: Redis) -> ReadThrough:
    return ReadThrough(RedisStore(client), RedisBreaker(1.0), lease=2.0, wait=1.0)


@pytest.mark.parametrize(
    "key",
    [KEYS.order(7), KEYS.status_page("new", None, 50), KEYS.price(5, 2, "size=17")],
    ids=["order", "page", "price"],
)
async def test_a_fill_that_raced_an_invalidation_is_refused_on_a_cluster(
    redis_cluster: LocalCluster, cluster_client: Redis, key: CacheKey
) -> None:
    store = RedisStore(cluster_client)
    selected, resume = asyncio.Event(), asyncio.Event()

    async def slow_select() -> bytes:
        selected.set()
        await resume.wait()
        return b"old row"

    fill = asyncio.create_task(_reader(cluster_client).get(key, 60, slow_select))
    await selected.wait()

    def invalidate(cmds: Commands) -> None:
        if key.tags:
            for family in key.tags:
                store.queue_invalidate_family(cmds, family, KEYS.family_fence(family))
        else:
            store.queue_invalidate(cmds, key)

    await store.send(invalidate)
    resume.set()
    assert (await fill) == Read(b"old row", hit=False)
    assert await store.get(key) is None

    async def new_row() -> bytes:
        return b"new row"

    assert (await _reader(cluster_client).get(key, 60, new_row)).body == b"new row"
    assert await store.get(key) == b"new row"


async def _read_load(http: httpx.AsyncClient, until: float, failures: list[str]) -> int:
    rng, reads = random.Random(3), 0
    while time.monotonic() < until:
        status = rng.choice(STATUSES)
        path = rng.choice(
            [f"/orders/{rng.randint(1, 300)}", f"/orders?status={status}", "/orders/dashboard"]
        )
        resp = await http.get(path)
        if resp.status_code != 200:
            failures.append(f"{path}: {resp.status_code}")
        reads += 1
    return reads


async def _write_load(database_url: str, until: float) -> int:
    rng, writes = random.Random(5), 0
    while time.monotonic() < until:
        await asyncio.to_thread(
            _dba,
            database_url,
            "UPDATE orders SET status = %s WHERE id = %s",
            rng.choice(STATUSES),
            rng.randint(1, 300),
        )
        writes += 1
        await asyncio.sleep(0.05)
    return writes


async def test_a_master_failover_under_load_leaves_nothing_stale(
    redis_cluster: LocalCluster, cluster_client: Redis, database_url: str
) -> None:
    url = redis_cluster.url
    app = create_app(api_settings(database_url, url, redis_retry_after=0.2))
    listener = InProcessListener(listener_settings(database_url, url))
    await listener.start()
    failures: list[str] = []
    try:
        async with app.router.lifespan_context(app), http_client(app) as http:
            until = time.monotonic() + 12
            load = [asyncio.create_task(_read_load(http, until, failures)) for _ in range(3)]
            writer = asyncio.create_task(_write_load(database_url, until))
            await asyncio.sleep(2)
            dashboard_master = redis_cluster.master_for(KEYS.dashboard().name)
            await asyncio.to_thread(redis_cluster.failover, dashboard_master)
            await asyncio.sleep(2)
            order_master = redis_cluster.master_for(KEYS.order(1).name)
            await asyncio.to_thread(redis_cluster.kill_master, order_master)
            reads = sum(await asyncio.gather(*load))
            writes = await writer
        assert reads > 50
        assert writes > 20
        assert failures == []  # reads kept answering (from PostgreSQL while a shard moved)

        stale: list[str] = []

        async def nothing_stale() -> bool:
            stale[:] = await _stale_keys(database_url, cluster_client)
            return not stale

        try:
            await eventually(nothing_stale, "no stale key after the failovers", within=30)
        except AssertionError:
            raise AssertionError(f"stale after the failovers: {stale}") from None
    finally:
        await listener.close()
