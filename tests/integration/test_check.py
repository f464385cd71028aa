"""`cdc-listener check`: finds the keys PostgreSQL contradicts, forgives the ones the
listener is about to fix, and times invalidations end to end through the probe table."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

import httpx
import psycopg
import pytest
import redis.asyncio

from cdc_listener.check import Checker, CheckReport
from cdc_listener.lag_probe import Prober
from mescache.db import make_pool
from mescache.keys import KeySchema
from mescache.settings import CacheSettings
from mescache.store import RedisStore
from tests.integration.listener_fixtures import InProcessListener, eventually
from tests.integration.test_cli import cli
from tests.integration.test_listener import dba, listener, warm

__all__ = ["listener"]  # the fixture, in both modes

WARM_PATHS = (
    "/orders/dashboard",
    "/orders/new",
    "/orders/1",
    "/orders/2",
    "/orders?status=new",
    "/orders?status=done&limit=5",
    "/models/1/price?material=1",
)


async def fill(client: httpx.AsyncClient) -> None:
    for path in WARM_PATHS:
        assert (await client.get(path)).status_code == 200


async def run_check(
    database_url: str,
    redis_url: str,
    grace: float = 0.05,
    sleep: Callable[[float], Awaitable[None]] | None = None,
) -> CheckReport:
    settings = CacheSettings(database_url=database_url, redis_url=redis_url)
    pool = make_pool(database_url, 1, 4, "check-test")
    await pool.open()
    r = redis.asyncio.Redis.from_url(redis_url)
    try:
        checker = (
            Checker(r, pool, KeySchema(), settings)
            if sleep is None
            else Checker(r, pool, KeySchema(), settings, sleep=sleep)
        )
        return await checker.run(grace)
    finally:
        await r.aclose()
        await pool.close()


async def test_a_cache_filled_through_the_api_is_clean(
    client: httpx.AsyncClient, database_url: str, redis_url: str
) -> None:
    await fill(client)
    report = await run_check(database_url, redis_url)
    assert report.stale == []
    assert report.suspects == 0
    assert report.checked == {
        "dashboard": 1,
        "new_orders": 1,
        "order": 2,
        "status_page": 2,
        "price": 1,
    }
    assert report.skipped["tag_set"] == 5  # orders:status:new and :done, 3 price families


async def test_a_change_nobody_invalidated_is_reported_with_its_diff(
    client: httpx.AsyncClient, database_url: str, redis_url: str
) -> None:
    await fill(client)  # no listener runs: nothing will fix what the DBA does next
    dba(
        database_url,
        "UPDATE orders SET quantity = quantity + 1 WHERE id = 1",
        "DELETE FROM orders WHERE id = 2",
        "UPDATE materials SET price_per_gram = price_per_gram * 2 WHERE id = 1",
    )
    report = await run_check(database_url, redis_url)
    stale = {s.name: s for s in report.stale}
    assert stale["order:{2}"].diff == "cached, but PostgreSQL has no such row"
    assert stale["order:{1}"].diff.startswith("quantity: cached ")
    assert "updated_at" in stale["order:{1}"].diff
    assert [s.kind for s in report.stale if s.name.startswith("price:")] == ["price"]
    assert "order:{1}" in report.summary()


async def test_a_key_invalidated_during_the_grace_period_is_not_stale(
    client: httpx.AsyncClient, database_url: str, redis_url: str
) -> None:
    await fill(client)
    dba(database_url, "UPDATE orders SET quantity = quantity + 1 WHERE id = 1")

    async def listener_catches_up(_: float) -> None:
        async with redis.asyncio.Redis.from_url(redis_url) as r:
            await r.set("order:{2}", await r.get("order:{2}") or b"")  # same bytes: not a change
            store = RedisStore(r)
            await store.send(lambda cmds: store.queue_invalidate(cmds, KeySchema().order(1)))

    report = await run_check(database_url, redis_url, sleep=listener_catches_up)
    assert report.suspects == 1
    assert report.stale == []


async def test_a_refill_with_the_old_value_during_grace_is_still_forgiven(
    client: httpx.AsyncClient, database_url: str, redis_url: str
) -> None:
    """A fence that moved means something invalidated the key: the bytes alone do not
    tell that a newer fill happened to store the same value."""
    await fill(client)
    dba(database_url, "UPDATE orders SET quantity = quantity + 1 WHERE id = 1")

    async def invalidated_then_refilled(_: float) -> None:
        async with redis.asyncio.Redis.from_url(redis_url) as r:
            old = await r.get("order:{1}")
            await r.incr("order:{1}#fence")
            await r.set("order:{1}", old or b"")

    report = await run_check(database_url, redis_url, sleep=invalidated_then_refilled)
    assert report.suspects == 1
    assert report.stale == []


async def test_with_the_listener_running_writes_leave_nothing_stale(
    client: httpx.AsyncClient,
    listener: InProcessListener,
    database_url: str,
    redis_url: str,
) -> None:
    await warm(client, 1)
    await fill(client)
    dba(
        database_url,
        "UPDATE orders SET status = 'in_progress' WHERE id IN"
        " (SELECT id FROM orders WHERE status = 'new' ORDER BY id LIMIT 3)",
        "UPDATE orders SET quantity = quantity + 1 WHERE id = 1",
    )
    report = await run_check(database_url, redis_url, grace=2.0)
    assert report.stale == [], report.summary()


@pytest.fixture
def env(database_url: str, redis_url: str) -> dict[str, str]:
    return {"DATABASE_URL": database_url, "REDIS_URL": redis_url}


async def test_cli_exits_3_on_stale_keys_and_0_when_clean(
    client: httpx.AsyncClient, env: dict[str, str], database_url: str
) -> None:
    dba(database_url, "UPDATE orders SET status = 'new' WHERE id = 1")
    await fill(client)
    clean = cli("check", "--grace", "0", env=env)
    assert clean.returncode == 0, clean.stderr
    assert clean.stdout.startswith("checked 7 cached values")
    dba(database_url, "UPDATE orders SET status = 'cancelled' WHERE id = 1")
    stale = cli("check", "--grace", "0.1", env=env)
    assert stale.returncode == 3, stale.stderr
    assert "STALE order:{1} (order): status: cached " in stale.stdout
    as_json = cli("check", "--json", "--grace", "0.1", env=env)
    assert as_json.returncode == 3
    data = json.loads(as_json.stdout)
    assert {s["key"] for s in data["stale"]} >= {"order:{1}", "orders:{dashboard}"}
    assert data["checked"]["order"] == 2


def test_cli_usage_and_unreachable_servers(env: dict[str, str]) -> None:
    for bad in (["--sample", "0"], ["--grace", "soon"], ["--rate", "-1"]):
        done = cli("check", *bad, env=env)
        assert done.returncode == 2, bad
        assert "Traceback" not in done.stderr
    for down in (
        {**env, "REDIS_URL": "redis://127.0.0.1:1/0"},
        {**env, "DATABASE_URL": "postgresql://postgres@127.0.0.1:1/none?connect_timeout=2"},
    ):
        done = cli("check", env=down)
        assert done.returncode == 1, done.stderr
        assert done.stderr.startswith("cdc-listener check: ")
        assert "Traceback" not in done.stderr


async def test_sampling_times_every_invalidation(
    listener: InProcessListener, database_url: str, redis_url: str
) -> None:
    async with redis.asyncio.Redis.from_url(redis_url) as r:
        report = await Prober(database_url, r, KeySchema()).sample(15, rate=50, wait_for=10)
    assert report.missed == 0
    assert len(report.delays) == 15
    assert all(d > 0 for d in report.delays)
    assert report.within(10.0) == 1.0


async def test_sampling_without_a_listener_reports_missed_invalidations(
    env: dict[str, str], database_url: str
) -> None:
    done = cli("check", "--sample", "2", "--rate", "10", "--timeout", "0.3", "--json", env=env)
    assert done.returncode == 3, done.stderr
    data = json.loads(done.stdout)
    assert data["samples"] == 2
    assert data["missed"] == 2
    assert data["within"]["1000ms"] == 0.0

    with psycopg.connect(database_url) as conn:  # the probe rows exist, nothing else moved
        assert conn.execute("SELECT count(*) FROM cache_probe").fetchone() == (21,)

    async def nothing_left() -> bool:
        async with redis.asyncio.Redis.from_url(env["REDIS_URL"]) as r:
            return not await r.keys("probe:[0-9]*")

    await eventually(nothing_left, "probe keys removed")
