"""The API and the listener behind Redis Sentinel (devtools.redisha): after the master is
killed and Sentinel promotes the replica, reads hit again and the listener applies changes
again; an invalidation the old master acknowledged but never replicated is not lost."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from api.app import create_app
from devtools.redisha import LocalSentinel
from mescache.keys import KeySchema
from tests.integration.conftest import api_settings, http_client
from tests.integration.listener_fixtures import (
    InProcessListener,
    confirmed_past_now,
    eventually,
    listener_settings,
)
from tests.integration.test_listener import dba, drop_slot, order_with_status

KEYS = KeySchema()


@pytest.fixture
async def sentinel_app(database_url: str, redis_sentinel: LocalSentinel) -> AsyncIterator[FastAPI]:
    # The breaker probes Redis again soon, so the test sees the new master quickly.
    application = create_app(api_settings(database_url, redis_sentinel.url, redis_retry_after=0.2))
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def sentinel_client(sentinel_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with http_client(sentinel_app) as http:
        yield http


@pytest.fixture
async def sentinel_listener(
    database_url: str, redis_sentinel: LocalSentinel
) -> AsyncIterator[InProcessListener]:
    running = InProcessListener(listener_settings(database_url, redis_sentinel.url))
    await running.start()
    yield running
    await running.close()
    drop_slot(database_url, running.settings.cdc_slot)


async def _status_is(http: httpx.AsyncClient, order_id: int, status: str, cache: str) -> bool:
    response = await http.get(f"/orders/{order_id}")
    return (
        response.status_code == 200
        and response.json()["status"] == status
        and response.headers.get("x-cache") == cache
    )


async def _hit_with(http: httpx.AsyncClient, order_id: int, status: str) -> bool:
    """A read answered from Redis with `status` (a miss first fills the key)."""
    return await _status_is(http, order_id, status, "miss") or await _status_is(
        http, order_id, status, "hit"
    )


async def test_reads_hit_and_changes_apply_again_after_the_master_is_killed(
    redis_sentinel: LocalSentinel,
    sentinel_listener: InProcessListener,
    sentinel_client: httpx.AsyncClient,
    database_url: str,
) -> None:
    order_id = await order_with_status(database_url, "new")
    await eventually(lambda: _hit_with(sentinel_client, order_id, "new"), what="a first hit")
    old = redis_sentinel.master()

    promoted = await asyncio.to_thread(redis_sentinel.kill_master)
    assert promoted.port != old.port

    await eventually(
        lambda: _hit_with(sentinel_client, order_id, "new"), what="hits again", within=30
    )
    dba(database_url, f"UPDATE orders SET status = 'in_progress' WHERE id = {order_id}")
    await eventually(
        lambda: _hit_with(sentinel_client, order_id, "in_progress"),
        what="the listener's invalidation on the new master",
        within=30,
    )


async def test_an_invalidation_the_old_master_never_replicated_is_not_lost(
    redis_sentinel: LocalSentinel,
    sentinel_listener: InProcessListener,
    sentinel_client: httpx.AsyncClient,
    database_url: str,
) -> None:
    order_id = await order_with_status(database_url, "new")
    name = KEYS.order(order_id).name
    await eventually(lambda: _hit_with(sentinel_client, order_id, "new"), what="a first hit")
    master, replica = redis_sentinel.master(), redis_sentinel.replica()
    master.call("WAIT", 1, 5000)
    assert replica.call("EXISTS", name) == 1  # the replica holds the value now

    redis_sentinel.cut_replication()
    dba(database_url, f"UPDATE orders SET status = 'in_progress' WHERE id = {order_id}")

    async def invalidated_and_confirmed() -> bool:
        slot = sentinel_listener.settings.cdc_slot
        return master.call("EXISTS", name) == 0 and await asyncio.to_thread(
            confirmed_past_now, database_url, slot
        )

    # The old master acknowledged the invalidation and PostgreSQL will never resend it.
    await eventually(invalidated_and_confirmed, what="invalidated on the old master, confirmed")
    promoted = await asyncio.to_thread(redis_sentinel.kill_master)
    assert promoted.port == replica.port
    # The promoted replica never got the invalidation: without the listener's flush after
    # a master change it would serve the old status until the TTL.
    await eventually(
        lambda: _hit_with(sentinel_client, order_id, "in_progress"),
        what="the new status read through the promoted replica",
        within=30,
    )
