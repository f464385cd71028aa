"""The listener with Redis down: it confirms nothing it could not apply, and when Redis
comes back (with the keys it held before) it invalidates what changed meanwhile."""

from __future__ import annotations

import asyncio
import time

import psycopg
import pytest
import redis.asyncio

from devtools.devstack import RedisServer
from tests.integration.listener_fixtures import InProcessListener, eventually, listener_settings
from tests.integration.test_listener import dba, drop_slot, install_notify
from tests.integration.test_redis_down import own_redis

__all__ = ["own_redis"]


def confirmed_position(database_url: str, mode: str, slot: str) -> tuple[int, int]:
    """(confirmed LSN of the slot, or -pending outbox rows in notify mode; current LSN)."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        if mode == "notify":
            pending = conn.execute("SELECT count(*) FROM cache_outbox").fetchone()
            return -(pending[0] if pending else 0), 0
        row = conn.execute(
            "SELECT (confirmed_flush_lsn - '0/0'::pg_lsn)::bigint,"
            " (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint"
            " FROM pg_replication_slots WHERE slot_name = %s",
            [slot],
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


@pytest.mark.parametrize("mode", ["logical", "notify"])
async def test_changes_committed_while_redis_is_down_are_applied_when_it_returns(
    database_url: str, own_redis: RedisServer, mode: str
) -> None:
    if mode == "notify":
        install_notify(database_url)
    settings = listener_settings(database_url, own_redis.url(), cdc_mode=mode)
    listener = InProcessListener(settings)
    await listener.start()
    try:
        async with redis.asyncio.Redis.from_url(own_redis.url()) as r:
            await r.set("order:{1}", b"cached before the change")
            await r.set("canary", b"kept across the restart")
            await r.save()  # the restarted server loads these keys again
        own_redis.kill()

        dba(database_url, "UPDATE orders SET quantity = quantity + 1 WHERE id = 1")
        _, committed = confirmed_position(database_url, mode, settings.cdc_slot)
        # For a while, with the listener retrying, nothing past the change is confirmed.
        until = time.monotonic() + 1.5
        while time.monotonic() < until:
            confirmed, _ = confirmed_position(database_url, mode, settings.cdc_slot)
            assert confirmed < committed if mode == "logical" else confirmed < 0
            await asyncio.sleep(0.1)
        assert listener.task is not None
        assert not listener.task.done()  # retrying, not dead

        own_redis.start()  # same port and folder: the saved keys are back, one now stale
        async with redis.asyncio.Redis.from_url(own_redis.url()) as r:
            assert await r.get("canary") == b"kept across the restart"

            async def invalidated() -> bool:
                return await r.exists("order:{1}") == 0

            await eventually(invalidated, "order:1 invalidated after redis returned", within=40)

        async def confirmed_past_the_change() -> bool:
            confirmed, _ = confirmed_position(database_url, mode, settings.cdc_slot)
            return confirmed >= committed if mode == "logical" else confirmed == 0

        await eventually(confirmed_past_the_change, "the change confirmed", within=20)
    finally:
        await listener.close()
        drop_slot(database_url, settings.cdc_slot)
