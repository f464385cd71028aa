"""The listener with a silent peer (no FIN, no RST, nothing answered; through the fault
proxy). PostgreSQL silent: it notices within its liveness bound, turns not ready, takes
the slot back from its own lingering walsender and makes the cache fresh again, and never
ends another listener's live stream; the same for notify mode's connections. Redis
silent: nothing is confirmed past unapplied work, and it catches up once Redis answers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import httpx
import psycopg
import pytest
import redis.asyncio

from cdc_listener.settings import ListenerSettings
from devtools.devstack import free_port
from devtools.faultproxy import FaultProxy
from mescache.keys import KeySchema
from tests.conftest import Servers
from tests.integration.listener_fixtures import InProcessListener, eventually, listener_settings
from tests.integration.test_listener import dba, install_notify, order_with_status
from tests.integration.test_listener_redis_down import confirmed_position

LIVENESS = 3.0


@pytest.fixture
async def pg_proxy(servers: Servers) -> AsyncIterator[FaultProxy]:
    """A fault proxy in front of the session's PostgreSQL, for this test alone."""
    async with FaultProxy("127.0.0.1", servers.pg.port) as proxy:
        yield proxy


def slot_holder(database_url: str, slot: str) -> int | None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s", [slot]
        ).fetchone()
    return None if row is None else row[0]


def backend_alive(database_url: str, pid: int) -> bool:
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone()
    return row is not None and row[0] == 1


def proxied_settings(
    proxy: FaultProxy, database_url: str, redis_url: str, **overrides: object
) -> ListenerSettings:
    settings = listener_settings(database_url, redis_url, cdc_liveness_timeout=LIVENESS)
    values = {**settings.model_dump(), "database_url": proxy.url_for(database_url), **overrides}
    return ListenerSettings(**values)


async def cached_status(client: httpx.AsyncClient, order_id: int) -> tuple[str, str]:
    response = await client.get(f"/orders/{order_id}")
    assert response.status_code == 200
    return response.json()["status"], response.headers["x-cache"]


async def test_black_holed_stream_is_noticed_and_the_cache_fresh_again(
    client: httpx.AsyncClient, pg_proxy: FaultProxy, database_url: str, redis_url: str
) -> None:
    port = free_port()
    settings = proxied_settings(pg_proxy, database_url, redis_url, metrics_port=port)
    listener = InProcessListener(settings)
    await listener.start()
    readyz = f"http://127.0.0.1:{port}/readyz"
    try:
        async with httpx.AsyncClient() as http:
            assert (await http.get(readyz)).status_code == 200
            order_id = await order_with_status(database_url, "new")
            await cached_status(client, order_id)
            assert await cached_status(client, order_id) == ("new", "hit")
            old_walsender = slot_holder(database_url, settings.cdc_slot)
            assert old_walsender is not None

            pg_proxy.black_hole_existing()
            dba(database_url, f"UPDATE orders SET status = 'cancelled' WHERE id = {order_id}")
            seen: list[tuple[int, str]] = []

            async def fresh() -> bool:
                ready = (await http.get(readyz)).status_code
                status, _ = await cached_status(client, order_id)
                seen.append((ready, status))
                return status == "cancelled"

            # Far less than wal_sender_timeout (60 s): the slot was taken back, not waited for.
            await eventually(fresh, "the cache fresh again", within=4 * LIVENESS)
            # Stale while silent, and /readyz said so from half the bound on: once it turned
            # 503 it never said ready while the cache was still stale.
            turned = seen.index((503, "new"))
            assert all(ready == 503 for ready, status in seen[turned:] if status == "new")

            async def ready_again() -> bool:
                return (await http.get(readyz)).status_code == 200

            await eventually(ready_again, "ready again")
        assert listener.metrics.silences == 1
        assert listener.metrics.takebacks == 1
        assert not backend_alive(database_url, old_walsender)  # exactly that one was ended
        assert slot_holder(database_url, settings.cdc_slot) not in (None, old_walsender)
    finally:
        await listener.close()


async def test_a_silent_listener_never_ends_another_listeners_live_stream(
    client: httpx.AsyncClient,
    pg_proxy: FaultProxy,
    database_url: str,
    redis_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "cdc_listener")
    silent = InProcessListener(proxied_settings(pg_proxy, database_url, redis_url))
    await silent.start()
    live = InProcessListener(listener_settings(database_url, redis_url))
    live.launch()
    slot = live.settings.cdc_slot

    def standby_waits() -> int:
        return sum(r.getMessage().startswith("standby") for r in caplog.records)

    try:
        await eventually(lambda: asyncio.sleep(0, standby_waits() > 0), "the second listener waits")
        first = slot_holder(database_url, slot)
        assert first is not None
        pg_proxy.black_hole_existing()
        # The server notices the first walsender's silence (as at wal_sender_timeout) and
        # the live listener takes over before the silent one has given up its stream.
        dba(database_url, f"SELECT pg_terminate_backend({first})")
        await eventually(lambda: asyncio.sleep(0, live.metrics.ready), "the live one streams")
        taken = slot_holder(database_url, slot)
        assert taken not in (None, first)
        waits = standby_waits()

        # The silent one gives up its stream, reconnects, finds the slot held by a walsender
        # that is not its own, and waits as a standby.
        await eventually(
            lambda: asyncio.sleep(0, silent.metrics.silences == 1 and standby_waits() > waits),
            "the silent listener waits as a standby",
            within=4 * LIVENESS,
        )
        assert silent.metrics.takebacks == 0
        assert slot_holder(database_url, slot) == taken
        assert live.metrics.ready
        order_id = await order_with_status(database_url, "new")
        await cached_status(client, order_id)
        dba(database_url, f"UPDATE orders SET status = 'cancelled' WHERE id = {order_id}")

        async def fresh() -> bool:
            return (await cached_status(client, order_id))[0] == "cancelled"

        await eventually(fresh, "the live listener applies changes")
    finally:
        await asyncio.gather(silent.close(), live.close())


async def test_notify_mode_notices_silent_connections_and_catches_up(
    client: httpx.AsyncClient, pg_proxy: FaultProxy, database_url: str, redis_url: str
) -> None:
    install_notify(database_url)
    port = free_port()
    settings = proxied_settings(
        pg_proxy, database_url, redis_url, cdc_mode="notify", metrics_port=port
    )
    listener = InProcessListener(settings)
    await listener.start()
    readyz = f"http://127.0.0.1:{port}/readyz"
    try:
        async with httpx.AsyncClient() as http:
            order_id = await order_with_status(database_url, "new")
            await cached_status(client, order_id)
            pg_proxy.black_hole_existing()  # the LISTEN and the outbox connections alike
            dba(database_url, f"UPDATE orders SET status = 'cancelled' WHERE id = {order_id}")
            seen: list[tuple[int, str]] = []

            async def fresh() -> bool:
                ready = (await http.get(readyz)).status_code
                status, _ = await cached_status(client, order_id)
                seen.append((ready, status))
                return status == "cancelled"

            await eventually(fresh, "the cache fresh again", within=4 * LIVENESS)
            assert (503, "new") in seen
        assert listener.metrics.reconnects >= 1
    finally:
        await listener.close()


@pytest.mark.parametrize("mode", ["logical", "notify"])
async def test_with_redis_silent_nothing_is_confirmed_past_unapplied_work(
    servers: Servers, database_url: str, redis_url: str, mode: str
) -> None:
    if mode == "notify":
        install_notify(database_url)
    key = KeySchema("").order(1).name
    async with (
        FaultProxy("127.0.0.1", servers.redis.port) as redis_proxy,
        redis.asyncio.Redis.from_url(redis_url) as r,
    ):
        settings = listener_settings(
            database_url, redis_proxy.url_for(redis_url), cdc_mode=mode, cdc_liveness_timeout=3
        )
        listener = InProcessListener(settings)
        await listener.start()
        try:
            await r.set(key, b"cached before the change")
            redis_proxy.black_hole()
            dba(database_url, "UPDATE orders SET quantity = quantity + 1 WHERE id = 1")
            _, committed = confirmed_position(database_url, mode, settings.cdc_slot)

            async def failed_once() -> bool:
                return listener.metrics.reconnects >= 1

            # The apply timed out on the silent Redis: the listener retries, and nothing
            # past the change was confirmed meanwhile.
            await eventually(failed_once, "the listener gives up on the silent redis")
            confirmed, _ = confirmed_position(database_url, mode, settings.cdc_slot)
            assert confirmed < committed if mode == "logical" else confirmed < 0
            assert await r.exists(key) == 1
            assert not listener.metrics.ready
            assert listener.task is not None
            assert not listener.task.done()

            redis_proxy.heal()

            async def caught_up() -> bool:
                confirmed, _ = confirmed_position(database_url, mode, settings.cdc_slot)
                done = confirmed >= committed if mode == "logical" else confirmed == 0
                return done and await r.exists(key) == 0

            await eventually(caught_up, "the change applied and confirmed", within=40)
        finally:
            await listener.close()


async def test_a_slow_redis_round_trip_is_not_a_silent_stream(
    servers: Servers, database_url: str, redis_url: str
) -> None:
    """An apply that takes longer than the liveness bound (nothing read from the stream
    meanwhile, nothing asked) does not make the stream look dead."""
    key = KeySchema("").order(1).name
    async with (
        FaultProxy("127.0.0.1", servers.redis.port) as redis_proxy,
        redis.asyncio.Redis.from_url(redis_url) as r,
    ):
        settings = listener_settings(
            database_url,
            redis_proxy.url_for(redis_url),
            cdc_liveness_timeout=1,  # the least: a round trip past it is soon had
            cdc_recheck_delay=0,
        )
        listener = InProcessListener(settings)
        await listener.start()
        try:
            await r.set(key, b"cached before the change")
            redis_proxy.set_latency(0.6)  # each way: a round trip past the bound
            dba(database_url, "UPDATE orders SET quantity = quantity + 1 WHERE id = 1")

            async def invalidated() -> bool:
                return await r.exists(key) == 0

            await eventually(invalidated, "the change applied", within=30)
            redis_proxy.set_latency(0)
            await asyncio.sleep(1.5)  # past the bound: a wrong verdict would show by now
            assert listener.metrics.silences == 0
            assert listener.metrics.reconnects == 0
        finally:
            await listener.close()
