"""The listener's operating surface on METRICS_PORT: /metrics series move with the changes
that drive them, /readyz follows streaming and catching up, /healthz answers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import httpx
import psycopg
import pytest
import redis.asyncio
from prometheus_client.parser import text_string_to_metric_families

from cdc_listener.replication import parse_lsn
from devtools.devstack import free_port
from tests.integration.listener_fixtures import InProcessListener, eventually, listener_settings
from tests.integration.test_api_ops import value
from tests.integration.test_listener import dba, drop_slot, gone, install_notify, warm

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(http: httpx.AsyncClient) -> Samples:
    resp = await http.get("/metrics")
    assert resp.status_code == 200
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(resp.text)
        for s in family.samples
    }


async def until(http: httpx.AsyncClient, what: str, check: Callable[[Samples], object]) -> Samples:
    """Scrape until `check(samples)` holds; returns the samples that satisfied it."""
    last: Samples = {}

    async def ok() -> bool:
        nonlocal last
        last = await scrape(http)
        return bool(check(last))

    await eventually(ok, what, within=20)
    return last


def current_lsn(database_url: str) -> int:
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
    assert row is not None
    return parse_lsn(row[0])


@pytest.fixture
async def logical(database_url: str, redis_url: str) -> AsyncIterator[InProcessListener]:
    settings = listener_settings(
        database_url,
        redis_url,
        cdc_refresh=True,  # so both invalidations and refreshes happen
        metrics_port=free_port(),
        metrics_poll_interval=0.2,
    )
    running = InProcessListener(settings)
    await running.start()
    yield running
    await running.close()
    drop_slot(database_url, settings.cdc_slot)


def endpoint(listener: InProcessListener) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{listener.settings.metrics_port}")


async def test_logical_series_move_with_a_dbas_change_and_a_forced_reconnect(
    logical: InProcessListener,
    client: httpx.AsyncClient,
    redis_client: redis.asyncio.Redis,
    database_url: str,
) -> None:
    async with endpoint(logical) as http:
        assert (await http.get("/healthz")).json() == {"status": "ok"}
        ready = await http.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["status"] == "ready"
        before = await until(
            http,
            "retained WAL polled",
            lambda s: ("cdc_listener_slot_retained_wal_bytes", ()) in s,
        )
        assert value(before, "cdc_listener_ready") == 1
        assert value(before, "cdc_listener_changes_received_total") == 0
        assert value(before, "cdc_listener_slot_retained_wal_bytes") >= 0

        row = await client.get("/orders?status=new&limit=1")
        order_id = row.json()["items"][0]["id"]
        await warm(client, order_id)
        dba(database_url, f"UPDATE orders SET status = 'in_progress' WHERE id = {order_id}")
        written = current_lsn(database_url)
        await gone(redis_client, "orders:{new}", "orders:{status:new}")
        after = await until(
            http,
            "the change confirmed",
            lambda s: value(s, "cdc_listener_confirmed_lsn") >= written,
        )
        assert value(after, "cdc_listener_changes_received_total") == 1
        assert value(after, "cdc_listener_changes_applied_total") == 1
        assert value(after, "cdc_listener_transactions_applied_total") == 1
        assert value(after, "cdc_listener_keys_invalidated_total") >= 1  # orders:{new}
        assert value(after, "cdc_listener_keys_refreshed_total") >= 2  # the order, dashboard
        # new, in_progress and the customer's list, sent again by the delayed second pass
        assert value(after, "cdc_listener_families_invalidated_total") in (3, 6)
        assert value(after, "cdc_listener_commit_apply_lag_seconds_count") == 1
        assert 0 <= value(after, "cdc_listener_commit_apply_lag_seconds_sum") < 20
        assert value(after, "cdc_listener_confirmed_lsn") > value(
            before, "cdc_listener_confirmed_lsn"
        )

        # The server drops the stream: the listener reconnects and is ready again.
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots"
                " WHERE slot_name = %s",
                [logical.settings.cdc_slot],
            )
        await until(http, "a reconnect", lambda s: value(s, "cdc_listener_reconnects_total") == 1)
        dba(database_url, f"UPDATE orders SET quantity = quantity + 1 WHERE id = {order_id}")
        await until(
            http,
            "the change after the reconnect",
            lambda s: value(s, "cdc_listener_changes_applied_total") == 2,
        )
        await until(http, "ready", lambda s: value(s, "cdc_listener_ready") == 1)
        assert (await http.get("/readyz")).status_code == 200


async def test_a_standby_is_not_ready_until_it_takes_over(
    database_url: str, redis_url: str
) -> None:
    active = InProcessListener(listener_settings(database_url, redis_url))
    await active.start()
    standby = InProcessListener(
        listener_settings(database_url, redis_url, metrics_port=free_port())
    )
    standby.launch()
    try:
        async with endpoint(standby) as http:

            async def serving() -> bool:
                try:
                    return (await http.get("/healthz")).status_code == 200
                except httpx.TransportError:
                    return False

            await eventually(serving, "the standby's endpoint")
            not_ready = await http.get("/readyz")
            assert not_ready.status_code == 503
            assert not_ready.json()["status"] == "not ready"
            assert not not_ready.json()["streaming"]
            assert value(await scrape(http), "cdc_listener_ready") == 0

            await active.close()
            await until(http, "the standby took over", lambda s: value(s, "cdc_listener_ready"))
            assert (await http.get("/readyz")).json()["status"] == "ready"
    finally:
        await active.close()
        await standby.close()
        drop_slot(database_url, standby.settings.cdc_slot)


async def test_notify_series_move_and_ready_once_the_outbox_is_drained(
    database_url: str, redis_url: str
) -> None:
    install_notify(database_url)
    dba(database_url, "UPDATE orders SET quantity = quantity + 1 WHERE id <= 3")  # pending
    settings = listener_settings(
        database_url,
        redis_url,
        cdc_mode="notify",
        metrics_port=free_port(),
        metrics_poll_interval=0.2,
    )
    running = InProcessListener(settings)
    await running.start()
    try:
        async with endpoint(running) as http:
            assert (await http.get("/readyz")).json()["mode"] == "notify"
            samples = await scrape(http)
            # ready means the three rows pending at start are applied
            assert value(samples, "cdc_listener_changes_applied_total") == 3
            dba(database_url, "UPDATE orders SET quantity = quantity + 1 WHERE id = 4")
            after = await until(
                http,
                "the outbox drained",
                lambda s: (
                    value(s, "cdc_listener_changes_applied_total") == 4
                    and s.get(("cdc_listener_outbox_backlog", ())) == 0
                ),
            )
            assert value(after, "cdc_listener_changes_received_total") == 4
            assert value(after, "cdc_listener_keys_invalidated_total") >= 4
            assert value(after, "cdc_listener_commit_apply_lag_seconds_count") >= 2
    finally:
        await running.close()
