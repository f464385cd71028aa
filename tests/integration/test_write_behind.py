"""Write-behind against real servers: 202 and the pending status at once, the writer's
commit, the listener's invalidation that never brings back the older status, dead letters,
replays, and the refusal to run on a Redis that forgets."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import cast

import httpx
import psycopg
import pytest
import redis.asyncio
from fastapi import FastAPI

from api.app import create_app
from cdc_listener.settings import ListenerSettings
from mescache.errors import RedisNotDurable
from mescache.keys import KeySchema
from mescache.pending import GROUP
from mescache.store import RedisStore
from tests.integration.conftest import MakeClientKey, api_settings, http_client
from tests.integration.listener_fixtures import (
    InProcessListener,
    eventually,
    listener_settings,
)
from tests.integration.test_listener import install_notify
from tests.integration.writer_fixtures import (
    InProcessWriter,
    applied_entries,
    dba,
    new_orders,
    status_in_db,
    wb_redis,
    writer,
    writer_settings,
)
from writer.apply import EntryApplied, apply_entry
from writer.entries import StatusEntry

__all__ = ["wb_redis", "writer"]  # the fixtures

KEYS = KeySchema()
StreamEntries = list[tuple[bytes, dict[bytes, bytes]]]


async def entries(r: redis.asyncio.Redis, stream: str) -> StreamEntries:
    """A stream's entries, oldest first."""
    # redis-py types replies as bytes or str; the test clients never decode responses.
    return cast(StreamEntries, await r.xrange(stream))


@pytest.fixture
async def wb_app(database_url: str, durable_redis_url: str) -> AsyncIterator[FastAPI]:
    application = create_app(api_settings(database_url, durable_redis_url, write_behind=True))
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def wb_client(wb_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """Speaks as an operator: status changes are operators' work."""
    async with http_client(wb_app) as http:
        yield http


async def _patch(client: httpx.AsyncClient, order_id: int, status: str) -> httpx.Response:
    return await client.patch(f"/orders/{order_id}", json={"status": status})


async def _status(client: httpx.AsyncClient, order_id: int) -> str:
    resp = await client.get(f"/orders/{order_id}")
    assert resp.status_code == 200, resp.text
    return str(resp.json()["status"])


async def test_patch_answers_202_and_reads_show_the_pending_status_at_once(
    wb_client: httpx.AsyncClient, wb_redis: redis.asyncio.Redis, database_url: str
) -> None:
    (order_id,) = new_orders(database_url, 1)
    assert await _status(wb_client, order_id) == "new"  # now cached
    cached = await wb_redis.get(KEYS.order(order_id).name)

    resp = await _patch(wb_client, order_id, "in_progress")

    assert resp.status_code == 202, resp.text
    assert resp.json()["status"] == "in_progress"
    assert resp.json()["id"] == order_id
    entry = resp.headers["x-pending-write"]
    read = await wb_client.get(f"/orders/{order_id}")
    assert read.json()["status"] == "in_progress"
    assert read.headers["x-pending-write"] == entry
    assert status_in_db(database_url, order_id) == "new"  # nobody waited for PostgreSQL
    # The cached row is left alone: the overlay is a key of its own.
    assert await wb_redis.get(KEYS.order(order_id).name) == cached
    [(stream_id, fields)] = await entries(wb_redis, KEYS.write_stream())
    assert stream_id.decode() == entry
    assert fields[b"order_id"] == str(order_id).encode()
    assert fields[b"status"] == b"in_progress"


async def test_a_client_sees_its_orders_pending_status_and_cannot_change_it(
    wb_app: FastAPI,
    wb_client: httpx.AsyncClient,
    make_client_key: MakeClientKey,
    database_url: str,
) -> None:
    (order_id,) = new_orders(database_url, 1)
    customer = dba(database_url, "SELECT customer FROM orders WHERE id = %s", [order_id])[0][0]
    accepted = await _patch(wb_client, order_id, "in_progress")
    assert accepted.status_code == 202
    async with http_client(wb_app, await make_client_key(customer)) as mine:
        status = await mine.get(f"/orders/{order_id}/status")
        assert status.status_code == 200
        assert status.json()["status"] == "in_progress"
        assert status.headers["x-pending-write"] == accepted.headers["x-pending-write"]
        assert (await mine.get(f"/orders/{order_id}")).json()["status"] == "in_progress"
        assert (await _patch(mine, order_id, "cancelled")).status_code == 403
    async with http_client(wb_app, await make_client_key("someone else")) as other:
        assert (await other.get(f"/orders/{order_id}/status")).status_code == 403


async def test_quick_moves_chain_on_the_pending_status_and_apply_in_order(
    wb_client: httpx.AsyncClient,
    wb_redis: redis.asyncio.Redis,
    writer: InProcessWriter,
    database_url: str,
) -> None:
    (order_id,) = new_orders(database_url, 1)
    first = await _patch(wb_client, order_id, "in_progress")
    second = await _patch(wb_client, order_id, "done")
    assert (first.status_code, second.status_code) == (202, 202)
    # Checked against the pending status (done), not PostgreSQL's (new).
    refused = await _patch(wb_client, order_id, "cancelled")
    assert refused.status_code == 409
    assert "is done" in refused.json()["detail"]

    await writer.start()
    await eventually(
        lambda: asyncio.to_thread(lambda: status_in_db(database_url, order_id) == "done"),
        "both moves applied",
    )
    applied = applied_entries(database_url)
    assert applied == {
        first.headers["x-pending-write"]: (order_id, "in_progress"),
        second.headers["x-pending-write"]: (order_id, "done"),
    }
    assert writer.writer.dead == 0
    # Acknowledged entries are trimmed off the stream (the last delivered one may stay).
    await eventually(lambda: _stream_at_most(wb_redis, 1), "applied entries trimmed")


async def _stream_at_most(r: redis.asyncio.Redis, length: int) -> bool:
    return await r.xlen(KEYS.write_stream()) <= length


async def test_bad_requests_are_refused_before_anything_is_accepted(
    wb_client: httpx.AsyncClient, wb_redis: redis.asyncio.Redis, database_url: str
) -> None:
    missing = await _patch(wb_client, 987654, "done")
    assert missing.status_code == 404
    assert "987654" in missing.json()["detail"]
    (order_id,) = new_orders(database_url, 1)
    illegal = await _patch(wb_client, order_id, "done")
    assert illegal.status_code == 409
    assert "is new" in illegal.json()["detail"]
    unknown = await _patch(wb_client, order_id, "shipped")
    assert unknown.status_code == 422
    assert await wb_redis.xlen(KEYS.write_stream()) == 0
    assert await wb_redis.exists(KEYS.pending(order_id)) == 0


@pytest.mark.parametrize("mode", ["logical", "notify"])
async def test_the_commit_and_the_listeners_invalidation_never_show_the_older_status(
    wb_client: httpx.AsyncClient,
    wb_redis: redis.asyncio.Redis,
    database_url: str,
    durable_redis_url: str,
    mode: str,
) -> None:
    # The listener is stopped with its slot (or outbox) in place: commits wait there.
    if mode == "notify":
        install_notify(database_url)
    settings = listener_settings(database_url, durable_redis_url, cdc_mode=mode)
    listener = InProcessListener(settings)
    await listener.start()
    await listener.close()
    writer = InProcessWriter(writer_settings(database_url, durable_redis_url, cdc_mode=mode))
    try:
        await _commit_then_invalidate(wb_client, wb_redis, writer, database_url, settings)
    finally:
        await writer.close()


async def _commit_then_invalidate(
    wb_client: httpx.AsyncClient,
    wb_redis: redis.asyncio.Redis,
    writer: InProcessWriter,
    database_url: str,
    settings: ListenerSettings,
) -> None:
    (order_id,) = new_orders(database_url, 1)
    assert await _status(wb_client, order_id) == "new"
    stale_row = await wb_redis.get(KEYS.order(order_id).name)
    assert stale_row is not None
    assert json.loads(stale_row)["status"] == "new"
    assert (await _patch(wb_client, order_id, "in_progress")).status_code == 202

    # 1. The writer commits; the cached row still says "new" (nothing invalidated it).
    await writer.start()
    await eventually(
        lambda: asyncio.to_thread(lambda: status_in_db(database_url, order_id) == "in_progress"),
        "the change committed",
    )
    await eventually(lambda: _sealed(wb_redis, order_id), "the overlay sealed after the commit")
    assert await wb_redis.get(KEYS.order(order_id).name) == stale_row
    await asyncio.sleep(0.3)  # several settle rounds: the listener has not confirmed it
    assert await wb_redis.exists(KEYS.pending(order_id)) == 1
    assert await _status(wb_client, order_id) == "in_progress"

    # 2. The listener applies the commit; every read meanwhile shows the new status.
    seen: list[str] = []
    listener = InProcessListener(settings)
    await listener.start()
    try:

        async def settled() -> bool:
            seen.append(await _status(wb_client, order_id))
            return not await wb_redis.exists(KEYS.pending(order_id))

        await eventually(settled, "the overlay removed once the listener applied the commit")
        for _ in range(5):
            seen.append(await _status(wb_client, order_id))
    finally:
        await listener.close()
    assert set(seen) == {"in_progress"}
    cached = await wb_redis.get(KEYS.order(order_id).name)
    assert cached is not None
    assert json.loads(cached)["status"] == "in_progress"  # refilled from PostgreSQL


async def _sealed(r: redis.asyncio.Redis, order_id: int) -> bool:
    return await r.hget(KEYS.pending(order_id), "sealed") == b"1"


async def test_an_illegal_move_against_postgresql_goes_to_the_dead_letters(
    wb_client: httpx.AsyncClient,
    wb_redis: redis.asyncio.Redis,
    writer: InProcessWriter,
    database_url: str,
) -> None:
    (order_id,) = new_orders(database_url, 1)
    accepted = await _patch(wb_client, order_id, "in_progress")
    assert accepted.status_code == 202
    dba(database_url, "UPDATE orders SET status = 'cancelled' WHERE id = %s", [order_id])

    await writer.start()
    await eventually(lambda: _dead_count(wb_redis, 1), "a dead letter")

    [(_, dead)] = await entries(wb_redis, KEYS.dead_letters())
    assert dead[b"entry"].decode() == accepted.headers["x-pending-write"]
    assert b"illegal move" in dead[b"reason"]
    assert b"cancelled" in dead[b"reason"]
    assert status_in_db(database_url, order_id) == "cancelled"
    assert applied_entries(database_url) == {}
    # The pending "in_progress" is gone from reads: they show what PostgreSQL holds.
    assert await _status(wb_client, order_id) == "cancelled"
    assert (await wb_redis.xpending(KEYS.write_stream(), GROUP))["pending"] == 0


async def _dead_count(r: redis.asyncio.Redis, count: int) -> bool:
    return await r.xlen(KEYS.dead_letters()) >= count


async def test_unknown_orders_and_malformed_entries_go_to_the_dead_letters_with_a_reason(
    wb_redis: redis.asyncio.Redis, writer: InProcessWriter, database_url: str
) -> None:
    await wb_redis.xadd(KEYS.write_stream(), {"order_id": "99999999", "status": "done"})
    await wb_redis.xadd(KEYS.write_stream(), {"order_id": "x", "status": "done"})
    await wb_redis.xadd(KEYS.write_stream(), {"order_id": "1", "status": "shipped"})
    (order_id,) = new_orders(database_url, 1)
    await wb_redis.xadd(KEYS.write_stream(), {"order_id": str(order_id), "status": "cancelled"})

    await writer.start()
    await eventually(lambda: _dead_count(wb_redis, 3), "three dead letters")
    await eventually(
        lambda: asyncio.to_thread(lambda: status_in_db(database_url, order_id) == "cancelled"),
        "the good entry after the bad ones applied",
    )
    reasons = [f[b"reason"].decode() for _, f in await entries(wb_redis, KEYS.dead_letters())]
    assert reasons[0] == "unknown order 99999999"
    assert reasons[1].startswith("malformed entry: order_id 'x'")
    assert reasons[2].startswith("malformed entry: 'shipped'")
    assert len(reasons) == 3


async def test_a_replayed_entry_changes_nothing(database_url: str) -> None:
    (order_id,) = new_orders(database_url, 1)
    entry = StatusEntry("1700000000000-0", order_id, "in_progress", "new")
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        assert await apply_entry(conn, entry) == EntryApplied(replay=False)
        # A DBA moves it back; a replay of the entry must not move it forward again.
        dba(database_url, "UPDATE orders SET status = 'new' WHERE id = %s", [order_id])
        before = dba(database_url, "SELECT updated_at FROM orders WHERE id = %s", [order_id])
        assert await apply_entry(conn, entry) == EntryApplied(replay=True)
    assert status_in_db(database_url, order_id) == "new"
    assert dba(database_url, "SELECT updated_at FROM orders WHERE id = %s", [order_id]) == before
    assert list(applied_entries(database_url)) == [entry.entry]


async def test_a_committed_but_unacknowledged_entry_of_a_dead_writer_is_replayed_as_a_no_op(
    wb_client: httpx.AsyncClient,
    wb_redis: redis.asyncio.Redis,
    writer: InProcessWriter,
    database_url: str,
) -> None:
    (order_id,) = new_orders(database_url, 1)
    entry_id = (await _patch(wb_client, order_id, "in_progress")).headers["x-pending-write"]
    # A writer that read the entry, committed it, and died before XACK.
    stream = KEYS.write_stream()
    await wb_redis.xgroup_create(stream, GROUP, id="0")
    await wb_redis.xreadgroup(GROUP, "dead-writer", {stream: ">"})
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        entry = StatusEntry(entry_id, order_id, "in_progress", "new")
        assert await apply_entry(conn, entry) == EntryApplied(replay=False)
    dba(database_url, "UPDATE orders SET status = 'new' WHERE id = %s", [order_id])

    await writer.start()
    await eventually(lambda: _nothing_pending(wb_redis), "the dead writer's entry acknowledged")

    assert status_in_db(database_url, order_id) == "new"  # not applied a second time
    assert list(applied_entries(database_url)) == [entry_id]
    assert await wb_redis.xlen(KEYS.dead_letters()) == 0
    consumers = await wb_redis.xinfo_consumers(stream, GROUP)
    assert [c["name"] for c in consumers] == [writer.writer.consumer.encode()]


async def _nothing_pending(r: redis.asyncio.Redis) -> bool:
    summary = await r.xpending(KEYS.write_stream(), GROUP)
    return summary["pending"] == 0 and bool(summary["consumers"] == [])


async def test_one_writer_is_active_and_a_standby_takes_over(
    database_url: str, durable_redis_url: str
) -> None:
    settings = writer_settings(database_url, durable_redis_url)
    first, second = InProcessWriter(settings), InProcessWriter(settings)
    await first.start()
    await second.start(wait_active=False)
    try:
        await asyncio.sleep(0.6)  # a few standby retries
        assert not second.writer.active.is_set()
        await first.close()
        await eventually(lambda: _is_active(second), "the standby active")
    finally:
        await second.close()


async def _is_active(writer: InProcessWriter) -> bool:
    return writer.writer.active.is_set()


async def test_a_namespace_flush_keeps_pending_writes(
    wb_client: httpx.AsyncClient, wb_redis: redis.asyncio.Redis, database_url: str
) -> None:
    (order_id,) = new_orders(database_url, 1)
    assert (await _patch(wb_client, order_id, "in_progress")).status_code == 202
    await wb_redis.xadd(KEYS.dead_letters(), {"reason": "kept"})

    await RedisStore(wb_redis).flush_matching(KEYS.namespace_pattern(), KEYS.outlives_flush)

    assert await wb_redis.exists(KEYS.order(order_id).name) == 0  # the cache went
    assert await wb_redis.exists(KEYS.pending(order_id)) == 1
    assert await wb_redis.xlen(KEYS.write_stream()) == 1
    assert await wb_redis.xlen(KEYS.dead_letters()) == 1
    assert await _status(wb_client, order_id) == "in_progress"


async def test_the_api_refuses_write_behind_on_a_redis_without_aof(
    database_url: str, redis_url: str
) -> None:

    application = create_app(api_settings(database_url, redis_url, write_behind=True))
    with pytest.raises(RedisNotDurable, match="appendonly yes"):
        async with application.router.lifespan_context(application):
            pass


async def test_the_writer_refuses_a_redis_without_aof(database_url: str, redis_url: str) -> None:
    running = InProcessWriter(writer_settings(database_url, redis_url))
    with pytest.raises(RedisNotDurable, match="append-only file"):
        await running.start()
