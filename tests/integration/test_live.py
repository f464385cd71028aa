"""What keeps the operator's dashboard live: the listener announces each applied batch
(after its keys are gone), the API fans the announcements out over one Redis subscription
to every open /events stream, and /stats reports the hit ratio and the lag."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import httpx
import psycopg
import pytest
import redis.asyncio

from tests.integration.api_server import ApiProcess
from tests.integration.conftest import OPERATOR_KEY, MakeClientKey, api_settings
from tests.integration.listener_fixtures import InProcessListener, eventually, listener_settings
from tests.integration.test_listener import (
    dba,
    drop_slot,
    listener,
    order_with_status,
)

__all__ = ["listener"]  # the fixture, in both modes

CHANNEL = "cache:changes"
OPERATOR = {"Authorization": f"Bearer {OPERATOR_KEY}"}


@pytest.fixture
async def logical_listener(database_url: str, redis_url: str) -> AsyncIterator[InProcessListener]:
    running = InProcessListener(listener_settings(database_url, redis_url))
    await running.start()
    yield running
    await running.close()
    drop_slot(database_url, running.settings.cdc_slot)


@pytest.fixture
def api_server(database_url: str, redis_url: str) -> Iterator[ApiProcess]:
    server = ApiProcess(api_settings(database_url, redis_url, events_ping=0.3))
    yield server
    server.stop()


async def next_message(pubsub: redis.asyncio.client.PubSub, within: float = 15.0) -> bytes:
    async with asyncio.timeout(within):
        while True:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if message is not None:
                return bytes(message["data"])


@dataclass
class Stream:
    """One open /events stream, read in the background like a page reads it."""

    events: list[tuple[str, dict[str, object]]] = field(default_factory=list)
    comments: int = 0
    task: asyncio.Task[None] | None = None

    async def wait_for(self, kind: str, what: str, order_id: int | None = None) -> None:
        def seen() -> bool:
            return any(
                name == kind and (order_id is None or order_id in (data.get("orders") or []))  # type: ignore[operator]
                for name, data in self.events
            )

        async def check() -> bool:
            if self.task is not None and self.task.done():
                self.task.result()  # the stream failed: say why
            return seen()

        await eventually(check, what)


async def _read(client: httpx.AsyncClient, stream: Stream) -> None:
    async with client.stream("GET", "/events", timeout=None) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        name, data = "message", ""
        async for line in resp.aiter_lines():
            if line.startswith(":"):
                stream.comments += 1
            elif line.startswith("event:"):
                name = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                data += line.split(":", 1)[1].strip()
            elif not line and data:
                stream.events.append((name, json.loads(data)))
                name, data = "message", ""


def _resyncs(stream: Stream) -> int:
    return len([name for name, _ in stream.events if name == "resync"])


async def _live(stream: Stream) -> bool:
    return any(
        name == "resync" or (name == "ready" and data.get("live") is True)
        for name, data in stream.events
    )


@contextlib.asynccontextmanager
async def open_streams(base_url: str, count: int) -> AsyncIterator[list[Stream]]:
    async with httpx.AsyncClient(base_url=base_url, headers=OPERATOR) as client:
        streams = [Stream() for _ in range(count)]
        for stream in streams:
            stream.task = asyncio.create_task(_read(client, stream))
        try:
            for stream in streams:
                await stream.wait_for("ready", "the stream is ready")
            # "ready" comes as soon as a page is subscribed to the process's feed; the feed
            # holds its Redis subscription once it says "live", or sends its "resync".
            for stream in streams:
                await eventually(functools.partial(_live, stream), "the feed is subscribed")
            yield streams
        finally:
            for stream in streams:
                assert stream.task is not None
                stream.task.cancel()
                with contextlib.suppress(asyncio.CancelledError, httpx.HTTPError):
                    await stream.task


async def test_each_batch_is_announced_once_its_keys_are_gone(
    listener: InProcessListener,
    client: httpx.AsyncClient,
    redis_client: redis.asyncio.Redis,
    database_url: str,
) -> None:
    order_id = await order_with_status(database_url, "new")
    assert (await client.get("/orders/dashboard")).status_code == 200
    async with redis_client.pubsub() as pubsub:
        await pubsub.subscribe(CHANNEL)
        dba(database_url, f"UPDATE orders SET status = 'in_progress' WHERE id = {order_id}")
        message = json.loads(await next_message(pubsub))
        # Announced only after Redis has the work: a page refetching now reads fresh data.
        assert await redis_client.exists("orders:{dashboard}", f"order:{{{order_id}}}") == 0
    assert message["orders"] == [order_id]
    assert message["commits"] == 1
    assert 0 <= message["lag_ms"] < 60_000
    if listener.settings.cdc_mode == "logical":
        with psycopg.connect(database_url) as conn:
            row = conn.execute("SELECT %s::pg_lsn <= pg_current_wal_lsn()", [message["lsn"]])
            assert row.fetchone() == (True,)
    else:
        assert message["lsn"] is None


async def test_a_failed_announcement_neither_stops_nor_holds_back_the_listener(
    database_url: str, redis_url: str, redis_client: redis.asyncio.Redis
) -> None:
    # A Redis user that may do everything but PUBLISH: the apply succeeds, the announce fails.
    user = "nopublish_" + database_url.rsplit("/", 1)[1]
    await redis_client.acl_setuser(
        user,
        enabled=True,
        passwords=["+secret"],
        keys=["*"],
        channels=["*"],
        categories=["+@all"],
        commands=["-publish"],
    )
    restricted = redis_url.replace("redis://", f"redis://{user}:secret@")
    running = InProcessListener(listener_settings(database_url, restricted))
    await running.start()
    try:
        order_id = await order_with_status(database_url, "new")
        await redis_client.set(f"order:{{{order_id}}}", b"stale")
        dba(database_url, f"UPDATE orders SET status = 'cancelled' WHERE id = {order_id}")
        with psycopg.connect(database_url, autocommit=True) as conn:
            row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
        assert row is not None
        after_update = row[0]

        async def applied_and_confirmed() -> bool:
            if await redis_client.exists(f"order:{{{order_id}}}"):
                return False
            with psycopg.connect(database_url, autocommit=True) as conn:
                confirmed = conn.execute(
                    "SELECT confirmed_flush_lsn >= %s::pg_lsn FROM pg_replication_slots"
                    " WHERE slot_name = %s",
                    [after_update, running.settings.cdc_slot],
                ).fetchone()
            return confirmed == (True,)

        await eventually(applied_and_confirmed, "the change applied and confirmed")
        assert running.task is not None
        assert not running.task.done()
    finally:
        await running.close()
        drop_slot(database_url, running.settings.cdc_slot)
        await redis_client.acl_deluser(user)


async def test_open_pages_share_one_subscription_and_see_every_change(
    logical_listener: InProcessListener,
    api_server: ApiProcess,
    redis_client: redis.asyncio.Redis,
    database_url: str,
) -> None:
    async with open_streams(api_server.base_url, 3) as streams:
        numsub = await redis_client.pubsub_numsub(CHANNEL)
        assert numsub == [(CHANNEL.encode(), 1)]
        order_id = await order_with_status(database_url, "new")
        dba(database_url, f"UPDATE orders SET status = 'in_progress' WHERE id = {order_id}")
        for stream in streams:
            await stream.wait_for("change", f"order {order_id} announced", order_id)

        async def kept_alive() -> bool:
            return all(stream.comments >= 2 for stream in streams)

        await eventually(kept_alive, "keep-alive comments on every stream")

        async with httpx.AsyncClient(base_url=api_server.base_url, headers=OPERATOR) as http:
            await http.get("/orders/dashboard")
            await http.get("/orders/dashboard")
            stats = (await http.get("/stats")).json()
        assert stats["live"] is True
        assert stats["pages"] == 3
        assert stats["hits"] >= 1
        assert stats["misses"] >= 1
        assert stats["hit_ratio"] == stats["hits"] / (stats["hits"] + stats["misses"])
        assert 0 <= stats["invalidation_lag_ms"] < 60_000
        assert stats["last_lsn"]


async def test_pages_resync_after_the_subscription_is_lost(
    logical_listener: InProcessListener,
    api_server: ApiProcess,
    redis_client: redis.asyncio.Redis,
    database_url: str,
) -> None:
    async with open_streams(api_server.base_url, 1) as (stream,):
        resyncs = _resyncs(stream)  # the one of the feed's start, before the kill
        await redis_client.client_kill_filter(_type="pubsub")

        async def resynced() -> bool:
            return _resyncs(stream) > resyncs

        await eventually(resynced, "a resync after the subscription came back")

        async def resubscribed() -> bool:
            return await redis_client.pubsub_numsub(CHANNEL) == [(CHANNEL.encode(), 1)]

        await eventually(resubscribed, "the feed subscribed again")
        order_id = await order_with_status(database_url, "in_progress")
        dba(database_url, f"UPDATE orders SET status = 'done' WHERE id = {order_id}")
        await stream.wait_for("change", f"order {order_id} announced", order_id)


async def test_the_api_stops_promptly_with_pages_open(api_server: ApiProcess) -> None:
    async with open_streams(api_server.base_url, 2):
        # uvicorn re-raises the SIGTERM it handled once it has shut down cleanly
        assert await asyncio.to_thread(api_server.stop) in (0, -15)


async def test_the_start_page_and_its_assets_are_served(client: httpx.AsyncClient) -> None:
    page = await client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert 'src="/page/dashboard.js"' in page.text
    for asset, kind in (("/page/dashboard.js", "javascript"), ("/page/dashboard.css", "css")):
        resp = await client.get(asset)
        assert resp.status_code == 200
        assert kind in resp.headers["content-type"]
    # the page is not part of the API's schema; the live endpoints are
    paths = set((await client.get("/openapi.json")).json()["paths"])
    assert "/" not in paths
    assert {"/events", "/stats"} <= paths


async def test_the_live_endpoints_are_for_operators(
    anonymous_client: httpx.AsyncClient, make_client_key: MakeClientKey
) -> None:
    client_key = {"Authorization": f"Bearer {await make_client_key('Anna K.')}"}
    for path in ("/events", "/stats"):
        assert (await anonymous_client.get(path)).status_code == 401
        assert (await anonymous_client.get(path, headers=client_key)).status_code == 403


async def test_stats_shows_the_lag_without_any_page_on_events(
    logical_listener: InProcessListener, client: httpx.AsyncClient, database_url: str
) -> None:
    """A process no dashboard streams from still reports the lag once /stats was asked."""
    first = (await client.get("/stats")).json()
    assert first["pages"] == 0
    assert first["invalidation_lag_ms"] is None  # nothing announced since

    async def following() -> bool:
        return bool((await client.get("/stats")).json()["live"])

    await eventually(following, "the change feed followed after /stats")
    order_id = await order_with_status(database_url, "new")
    dba(database_url, f"UPDATE orders SET quantity = quantity + 1 WHERE id = {order_id}")

    async def lag_shown() -> bool:
        return (await client.get("/stats")).json()["invalidation_lag_ms"] is not None

    await eventually(lag_shown, "the invalidation lag in /stats")
    stats = (await client.get("/stats")).json()
    assert 0 <= stats["invalidation_lag_ms"] < 60_000
    assert stats["last_lsn"]
    assert stats["pages"] == 0
