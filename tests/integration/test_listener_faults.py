"""The listener under faults: kill -9 mid-transaction, a standby taking over, a busy
unpublished table, a visibility-gap fill, a huge transaction, a schema change, refresh."""

from __future__ import annotations

import asyncio
import json
import signal
import threading
from pathlib import Path

import httpx
import psycopg
import pytest
import redis.asyncio

from mescache.keys import KeySchema
from mescache.store import RedisStore
from tests.integration.listener_fixtures import (
    InProcessListener,
    eventually,
    listener_settings,
    spawn_listener,
    wait_ready,
)
from tests.integration.test_listener import dba, drop_slot, warm


def all_orders(database_url: str) -> dict[int, str]:
    with psycopg.connect(database_url) as conn:
        return {r[0]: r[1] for r in conn.execute("SELECT id, status FROM orders")}


async def no_stale_key(r: redis.asyncio.Redis, database_url: str) -> None:
    """Every cached order:{id} agrees with PostgreSQL (waiting for the listener)."""
    truth = all_orders(database_url)

    async def check() -> bool:
        for key in await r.keys("order:{[0-9]*"):
            assert isinstance(key, bytes)  # the test clients never decode responses
            if b"#" in key:
                continue
            cached = json.loads(await r.get(key) or b"null")
            order_id = int(key.split(b":")[1].strip(b"{}"))
            if cached is not None and truth.get(order_id) != cached["status"]:
                return False
        return True

    await eventually(check, "no stale order:{id} key", within=20)


async def test_kill_9_mid_transaction_then_restart_leaves_nothing_stale(
    client: httpx.AsyncClient,
    redis_client: redis.asyncio.Redis,
    database_url: str,
    redis_url: str,
) -> None:
    settings = listener_settings(database_url, redis_url, cdc_recheck_delay=0)
    proc = spawn_listener(settings)
    await wait_ready(settings)
    ids = list(all_orders(database_url))[:120]
    for order_id in ids:
        await client.get(f"/orders/{order_id}")

    # One long transaction is streamed while the listener is killed: the server must send
    # it again, from its Begin, to the next listener.
    stop_writing = threading.Event()

    def writer() -> None:
        with psycopg.connect(database_url) as conn:
            for order_id in ids[:60]:
                conn.execute("UPDATE orders SET status = 'cancelled' WHERE id = %s", [order_id])
                if order_id == ids[30]:
                    stop_writing.wait(10)  # the kill happens here, mid-transaction
            conn.commit()
            for order_id in ids[60:]:
                conn.execute("UPDATE orders SET status = 'cancelled' WHERE id = %s", [order_id])
                conn.commit()

    thread = threading.Thread(target=writer)
    thread.start()
    await asyncio.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    stop_writing.set()
    thread.join(30)
    for order_id in ids:  # refill keys while nobody listens: stale until the restart
        await client.get(f"/orders/{order_id}")

    restarted = spawn_listener(settings)
    try:
        await wait_ready(settings)
        await no_stale_key(redis_client, database_url)
        assert (await client.get(f"/orders/{ids[0]}")).json()["status"] == "cancelled"
    finally:
        restarted.terminate()
        assert restarted.wait(20) == 0  # SIGTERM: finish, confirm, close cleanly
        drop_slot(database_url, settings.cdc_slot)


async def test_kill_9_while_a_large_commit_streams_then_restart(
    client: httpx.AsyncClient,
    redis_client: redis.asyncio.Redis,
    database_url: str,
    redis_url: str,
) -> None:
    settings = listener_settings(database_url, redis_url, cdc_recheck_delay=0)
    proc = spawn_listener(settings)
    await wait_ready(settings)
    ids = list(all_orders(database_url))[:100]
    for order_id in ids:
        await client.get(f"/orders/{order_id}")
    # ~12,000 row changes in one commit: the listener is still receiving or applying it
    # when it dies, so the restarted one must get the whole transaction again.
    statements = ["UPDATE orders SET quantity = quantity + 1"] * 40
    statements.append(f"UPDATE orders SET status = 'cancelled' WHERE id <= {ids[-1]}")
    dba(database_url, *statements)
    await asyncio.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    for order_id in ids:  # readers fill what was invalidated while nobody listens
        await client.get(f"/orders/{order_id}")
    restarted = spawn_listener(settings)
    try:
        await wait_ready(settings)
        await no_stale_key(redis_client, database_url)
    finally:
        restarted.terminate()
        assert restarted.wait(20) == 0
        drop_slot(database_url, settings.cdc_slot)


async def test_a_standby_takes_over_when_the_active_listener_dies(
    client: httpx.AsyncClient,
    redis_client: redis.asyncio.Redis,
    database_url: str,
    redis_url: str,
) -> None:
    settings = listener_settings(database_url, redis_url)
    active = spawn_listener(settings)
    await wait_ready(settings)
    standby = spawn_listener(settings)
    try:
        await asyncio.sleep(1.0)
        assert standby.poll() is None  # waiting, not failed
        active.send_signal(signal.SIGKILL)
        active.wait(10)
        await wait_ready(settings, pid=standby.pid)
        await client.get("/orders/1")
        dba(database_url, "UPDATE orders SET quantity = quantity + 1 WHERE id = 1")

        async def invalidated() -> bool:
            return await redis_client.exists("order:{1}") == 0

        await eventually(invalidated, "the standby invalidates", within=10)
    finally:
        standby.terminate()
        standby.wait(20)
        drop_slot(database_url, settings.cdc_slot)


async def test_a_busy_unpublished_table_does_not_make_the_slot_pin_wal(
    database_url: str, redis_url: str
) -> None:
    settings = listener_settings(database_url, redis_url, cdc_heartbeat_interval=0.5)
    listener = InProcessListener(settings)
    await listener.start()
    try:
        dba(database_url, "CREATE TABLE scratch (id bigserial, payload text)")
        for _ in range(20):  # ~ 40 MB of WAL the slot does not care about
            dba(
                database_url,
                "INSERT INTO scratch (payload)"
                " SELECT repeat(md5(random()::text), 64) FROM generate_series(1, 1000)",
            )
        dba(database_url, "CHECKPOINT")

        def lag_and_retained() -> tuple[int, int]:
            with psycopg.connect(database_url, autocommit=True) as conn:
                row = conn.execute(
                    "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn),"
                    " pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)"
                    " FROM pg_replication_slots WHERE slot_name = %s",
                    [settings.cdc_slot],
                ).fetchone()
            assert row is not None
            return int(row[0]), int(row[1])

        async def bounded() -> bool:
            lag, retained = await asyncio.to_thread(lag_and_retained)
            return lag < 1_000_000 and retained < 8_000_000

        await eventually(bounded, "slot follows the WAL end", within=30)
    finally:
        await listener.close()
        drop_slot(database_url, settings.cdc_slot)


async def test_a_fill_in_the_visibility_gap_is_removed_by_the_second_pass(
    redis_client: redis.asyncio.Redis, database_url: str, redis_url: str
) -> None:
    settings = listener_settings(database_url, redis_url, cdc_recheck_delay=1.0)
    listener = InProcessListener(settings)
    await listener.start()
    key = KeySchema().order(1)
    try:
        await redis_client.set(key.name, b"cached before")
        dba(database_url, "UPDATE orders SET quantity = quantity + 1 WHERE id = 1")

        async def first_pass() -> bool:
            return await redis_client.exists(key.name) == 0

        await eventually(first_pass, "first invalidation")
        # A reader whose snapshot did not yet see the commit fills now, with the old row.
        await redis_client.set(key.name, b"old row read in the gap")

        async def second_pass() -> bool:
            return await redis_client.exists(key.name) == 0

        await eventually(second_pass, "second pass", within=5)
    finally:
        await listener.close()
        drop_slot(database_url, settings.cdc_slot)


async def test_a_huge_transaction_invalidates_the_family_instead_of_each_key(
    client: httpx.AsyncClient,
    redis_client: redis.asyncio.Redis,
    database_url: str,
    redis_url: str,
) -> None:
    settings = listener_settings(database_url, redis_url, cdc_max_keys=50)
    listener = InProcessListener(settings)
    await listener.start()
    try:
        for order_id in (1, 2, 3):
            await client.get(f"/orders/{order_id}")
        dba(database_url, "UPDATE orders SET quantity = quantity + 1 WHERE id <= 200")
        await eventually(
            lambda: _none_left(redis_client, "order:{1}", "order:{2}", "order:{3}"), "family flush"
        )
    finally:
        await listener.close()
        drop_slot(database_url, settings.cdc_slot)


async def _none_left(r: redis.asyncio.Redis, *keys: str) -> bool:
    return await r.exists(*keys) == 0


async def test_refresh_writes_what_a_fresh_read_would_and_survives_a_schema_change(
    client: httpx.AsyncClient,
    redis_client: redis.asyncio.Redis,
    database_url: str,
    redis_url: str,
) -> None:
    settings = listener_settings(database_url, redis_url, cdc_refresh=True)
    listener = InProcessListener(settings)
    await listener.start()
    try:
        order_id = int((await client.get("/orders?status=new&limit=1")).json()["items"][0]["id"])
        await warm(client, order_id)
        dba(database_url, f"UPDATE orders SET status = 'in_progress' WHERE id = {order_id}")

        async def refreshed() -> bool:
            body = await redis_client.get(f"order:{{{order_id}}}")
            return body is not None and json.loads(body)["status"] == "in_progress"

        await eventually(refreshed, "order refreshed from the row image")
        hit = await client.get(f"/orders/{order_id}")
        assert hit.headers["x-cache"] == "hit"  # operators never take the miss
        await redis_client.delete(f"order:{{{order_id}}}")
        miss = await client.get(f"/orders/{order_id}")
        assert miss.headers["x-cache"] == "miss"
        assert hit.content == miss.content  # the row image serializes like a SELECT

        async def dashboard_refreshed() -> bool:
            body = await redis_client.get("orders:{dashboard}")
            items = json.loads(body)["items"] if body else []
            return any(o["id"] == order_id and o["status"] == "in_progress" for o in items)

        await eventually(dashboard_refreshed, "dashboard recomputed")

        dba(
            database_url,
            "ALTER TABLE orders ADD COLUMN engraver text",
            f"UPDATE orders SET status = 'done', engraver = 'ivan' WHERE id = {order_id}",
        )

        async def after_ddl() -> bool:
            body = await redis_client.get(f"order:{{{order_id}}}")
            return body is not None and json.loads(body)["status"] == "done"

        await eventually(after_ddl, "refresh after a new Relation message")
    finally:
        await listener.close()
        drop_slot(database_url, settings.cdc_slot)


def test_the_api_never_deletes_rewrites_or_expires_a_key() -> None:
    api = Path(__file__).resolve().parents[2] / "api"
    forbidden = (
        ".delete(",
        ".unlink(",
        ".expire",
        ".pexpire",
        "flushdb",
        "flushall",
        "queue_",
        "flush_matching",
        ".getdel(",
        "invalidate(",
        "refresh(",
    )
    for source in api.rglob("*.py"):
        text = source.read_text()
        for word in forbidden:
            assert word not in text, f"{source.name} contains {word!r}"


@pytest.mark.parametrize("mode", ["logical"])
async def test_sigterm_confirms_what_was_applied(
    database_url: str, redis_url: str, mode: str
) -> None:
    settings = listener_settings(database_url, redis_url, cdc_mode=mode)
    proc = spawn_listener(settings)
    await wait_ready(settings)
    dba(database_url, "UPDATE orders SET quantity = quantity + 1 WHERE id = 1")
    with psycopg.connect(database_url, autocommit=True) as conn:
        written = conn.execute("SELECT pg_current_wal_lsn()").fetchone()
    await asyncio.sleep(0.5)
    proc.terminate()
    assert proc.wait(20) == 0
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT confirmed_flush_lsn >= %s::pg_lsn FROM pg_replication_slots"
            " WHERE slot_name = %s",
            [str(written[0]) if written else "0/0", settings.cdc_slot],
        ).fetchone()
    assert row == (True,)
    drop_slot(database_url, settings.cdc_slot)


async def test_a_new_slot_flushes_the_namespace_before_ready(
    client: httpx.AsyncClient,
    redis_client: redis.asyncio.Redis,
    database_url: str,
    redis_url: str,
) -> None:
    settings = listener_settings(database_url, redis_url)
    first = InProcessListener(settings)
    await first.start()
    await first.close()

    def released() -> bool:
        # The server lets go of the slot a moment after the listener disconnects.
        with psycopg.connect(database_url, autocommit=True) as conn:
            row = conn.execute(
                "SELECT active FROM pg_replication_slots WHERE slot_name = %s",
                [settings.cdc_slot],
            ).fetchone()
        return row is not None and not row[0]

    await eventually(lambda: asyncio.to_thread(released), "slot released")
    await warm(client, 1)
    dba(database_url, "UPDATE orders SET quantity = quantity + 1 WHERE id = 1")
    drop_slot(database_url, settings.cdc_slot)  # the change above is lost with the slot
    cached = await redis_client.dbsize()
    assert cached > 0
    # a fill that read the database before the flush must not land after it
    ticket = await RedisStore(redis_client).begin_fill(KeySchema().order(2), 5, "t")
    assert ticket.leased

    second = InProcessListener(settings)
    await second.start()
    try:
        assert await redis_client.exists("order:{1}", "orders:{dashboard}") == 0
        assert not await RedisStore(redis_client).finish_fill(
            KeySchema().order(2), b"old", 60, ticket.fence, "t"
        )
        assert (await client.get("/orders/1")).headers["x-cache"] == "miss"
    finally:
        await second.close()
        drop_slot(database_url, settings.cdc_slot)
