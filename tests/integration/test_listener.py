"""The listener keeps the cache right whoever writes: a DBA's raw SQL invalidates (or
refreshes) the keys the rule names, in both modes, and the next API read is fresh."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import psycopg
import pytest
import redis.asyncio

from cdc_listener.notify import CHANNEL
from mescache.queries import query, script
from tests.integration.listener_fixtures import InProcessListener, eventually, listener_settings


def dba(database_url: str, *statements: str) -> None:
    """A DBA in psql: raw SQL, one transaction."""
    with psycopg.connect(database_url) as conn:
        for statement in statements:
            conn.execute(statement)


def install_notify(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(script("notify/outbox.sql"))


@pytest.fixture(params=["logical", "notify"])
async def listener(
    request: pytest.FixtureRequest, database_url: str, redis_url: str
) -> AsyncIterator[InProcessListener]:
    if request.param == "notify":
        install_notify(database_url)
    running = InProcessListener(listener_settings(database_url, redis_url, cdc_mode=request.param))
    await running.start()
    yield running
    await running.close()
    drop_slot(database_url, running.settings.cdc_slot)


def drop_slot(database_url: str, slot: str) -> None:
    """Inactive slots pin WAL for the whole test cluster: drop them when done."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots"
            " WHERE slot_name = %s AND NOT active",
            [slot],
        )


async def order_with_status(database_url: str, status: str) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT id FROM orders WHERE status = %s ORDER BY id LIMIT 1", [status]
        ).fetchone()
    assert row is not None
    return int(row[0])


async def warm(client: httpx.AsyncClient, order_id: int) -> None:
    for path in (
        "/orders/dashboard",
        "/orders/new",
        f"/orders/{order_id}",
        "/orders?status=new",
        "/orders?status=in_progress",
        "/orders?status=done",
    ):
        assert (await client.get(path)).status_code in (200, 404)


async def gone(r: redis.asyncio.Redis, *keys: str) -> None:
    async def check() -> bool:
        return await r.exists(*keys) == 0

    try:
        await eventually(check, f"{keys} invalidated")
    except AssertionError:
        left = [k for k in keys if await r.exists(k)]
        raise AssertionError(f"still cached: {left}") from None


async def test_a_dbas_status_move_invalidates_exactly_what_the_rule_names(
    listener: InProcessListener,
    client: httpx.AsyncClient,
    redis_client: redis.asyncio.Redis,
    database_url: str,
) -> None:
    order_id = await order_with_status(database_url, "new")
    await warm(client, order_id)
    dba(database_url, f"UPDATE orders SET status = 'in_progress' WHERE id = {order_id}")
    await gone(
        redis_client,
        f"order:{{{order_id}}}",
        "orders:{dashboard}",
        "orders:{new}",
        "orders:{status:new}",
        "orders:{status:in_progress}",
    )
    # a family the move did not touch keeps its pages
    assert await redis_client.exists("orders:{status:done}") == 1
    fresh = (await client.get(f"/orders/{order_id}")).json()
    assert fresh["status"] == "in_progress"
    dashboard = (await client.get("/orders/dashboard")).json()["items"]
    assert {o["status"] for o in dashboard if o["id"] == order_id} == {"in_progress"}
    new_page = (await client.get("/orders?status=new")).json()["items"]
    assert order_id not in {o["id"] for o in new_page}


async def test_insert_delete_and_truncate_reach_the_cache(
    listener: InProcessListener,
    client: httpx.AsyncClient,
    redis_client: redis.asyncio.Redis,
    database_url: str,
) -> None:
    order_id = await order_with_status(database_url, "done")
    await warm(client, order_id)
    dba(
        database_url,
        "INSERT INTO orders (customer, model_id, material_id, quantity, total_price)"
        " VALUES ('walk-in', 1, 1, 1, 10)",
    )
    await gone(redis_client, "orders:{dashboard}", "orders:{new}", "orders:{status:new}")
    assert await redis_client.exists(f"order:{{{order_id}}}", "orders:{status:done}") == 2
    newest = (await client.get("/orders/new")).json()["items"]
    assert newest[0]["customer"] == "walk-in"

    await warm(client, order_id)
    dba(database_url, f"DELETE FROM orders WHERE id = {order_id}")
    await gone(redis_client, f"order:{{{order_id}}}", "orders:{status:done}")
    assert (await client.get(f"/orders/{order_id}")).status_code == 404

    other = await order_with_status(database_url, "done")
    await warm(client, other)
    dba(database_url, "TRUNCATE orders")
    await gone(
        redis_client,
        f"order:{{{other}}}",
        "orders:{dashboard}",
        "orders:{new}",
        "orders:{status:new}",
        "orders:{status:done}",
    )
    assert (await client.get("/orders/dashboard")).json() == {"items": []}
    assert (await client.get(f"/orders/{other}")).status_code == 404


async def test_changes_made_while_stopped_are_applied_after_restart(
    listener: InProcessListener,
    client: httpx.AsyncClient,
    redis_client: redis.asyncio.Redis,
    database_url: str,
) -> None:
    await listener.close()
    order_id = await order_with_status(database_url, "in_progress")
    await warm(client, order_id)
    dba(database_url, f"UPDATE orders SET status = 'done' WHERE id = {order_id}")
    assert await redis_client.exists(f"order:{{{order_id}}}") == 1  # nobody is listening
    restarted = InProcessListener(listener.settings)
    await restarted.start()
    try:
        await gone(
            redis_client, f"order:{{{order_id}}}", "orders:{dashboard}", "orders:{status:done}"
        )
        assert (await client.get(f"/orders/{order_id}")).json()["status"] == "done"
    finally:
        await restarted.close()


async def test_catalogue_changes_touch_their_price_families(
    listener: InProcessListener, redis_client: redis.asyncio.Redis, database_url: str
) -> None:
    await redis_client.sadd("price:{model:1}", "price:{model:1}:1:size=16")
    await redis_client.set("price:{model:1}:1:size=16", b"120.00")
    await redis_client.sadd("price:{model:5}:material:2", "price:{model:5}:2:size=18")
    await redis_client.set("price:{model:5}:2:size=18", b"80.00")
    dba(database_url, "UPDATE models SET base_price = base_price + 1 WHERE id = 1")
    await gone(redis_client, "price:{model:1}:1:size=16", "price:{model:1}")
    assert await redis_client.exists("price:{model:5}:2:size=18") == 1
    dba(database_url, "UPDATE materials SET price_per_gram = price_per_gram + 1 WHERE id = 2")
    await gone(redis_client, "price:{model:5}:2:size=18")


def test_notify_channel_matches_the_shipped_triggers() -> None:
    assert f"pg_notify('{CHANNEL}'" in script("notify/outbox.sql")
    assert query("outbox_listen").as_string().endswith(f"\nLISTEN {CHANNEL};")
