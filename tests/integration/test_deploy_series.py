"""Every series an alert rule or a dashboard panel of deploy/ uses exists in the /metrics of
the real processes (the API as uvicorn, the listener as `cdc-listener run`), and every
series they export is on the dashboard."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import psycopg
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from cdc_listener.metrics import ListenerMetrics
from devtools.devstack import free_port
from mescache.keys import KeySchema
from tests.deploy_files import family, panel_expressions, rule_expressions, series_in
from tests.integration.api_server import ApiProcess
from tests.integration.conftest import api_settings
from tests.integration.listener_fixtures import eventually, listener_settings, spawn_listener

# Exported only by a listener in notify mode (the test runs one in logical mode).
NOTIFY_ONLY = {"cdc_listener_outbox_backlog"}
# Polled on an ordinary connection after start-up, so absent from the first scrapes.
POLLED = {
    "cdc_listener_slot_retained_wal_bytes",
    "cdc_listener_slot_lag_bytes",
    "cdc_listener_write_behind_dead_letters",
}


def sample_names(text: str) -> set[str]:
    return {s.name for f in text_string_to_metric_families(text) for s in f.samples}


@pytest.fixture
def exported(database_url: str, redis_url: str) -> Iterator[set[str]]:
    """The sample names of both processes' /metrics, once the listener is ready and has
    polled the slot and the dead-letter stream (which holds two entries)."""
    with redis.Redis.from_url(redis_url) as client:
        for reason in ("illegal move", "unknown order"):
            client.xadd(KeySchema("").dead_letters(), {"reason": reason})
    api = ApiProcess(api_settings(database_url, redis_url))
    settings = listener_settings(
        database_url, redis_url, metrics_port=free_port(), metrics_poll_interval=0.2
    )
    listener = spawn_listener(settings)
    try:
        names: set[str] = set()

        async def scraped() -> bool:
            nonlocal names
            async with httpx.AsyncClient() as http:
                try:
                    got = await http.get(f"http://127.0.0.1:{settings.metrics_port}/metrics")
                except httpx.TransportError:
                    return False
                listener_names = sample_names(got.text)
                api_names = sample_names((await http.get(api.base_url + "/metrics")).text)
            names = listener_names | api_names
            return (
                "cdc_listener_ready 1.0" in got.text
                and "cdc_listener_write_behind_dead_letters 2.0" in got.text
                and listener_names >= POLLED
            )

        asyncio.run(eventually(scraped, "both processes export their series", within=30))
        yield names
    finally:
        listener.terminate()
        listener.wait(20)
        api.stop()
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots"
                " WHERE slot_name = %s AND NOT active",
                [settings.cdc_slot],
            )


def notify_only_names() -> set[str]:
    metrics = ListenerMetrics("notify", "orders_cache")
    metrics.outbox_backlog = 0
    return sample_names(metrics.exposition().decode())


def test_rules_panels_and_the_processes_agree_on_every_series(exported: set[str]) -> None:
    # Everything a rule or a panel uses exists...
    available = exported | (notify_only_names() & NOTIFY_ONLY)
    used = {f"alert {name}": series_in(expr) for name, expr in rule_expressions().items()} | {
        f"panel {title}": set().union(*(series_in(e) for e in exprs))
        for title, exprs in panel_expressions().items()
    }
    missing = {
        where: sorted(names - available) for where, names in used.items() if names - available
    }
    assert missing == {}
    assert NOTIFY_ONLY.isdisjoint(exported)  # logical mode: the exception is real
    # ...and everything the processes export is on the dashboard.
    on_panels = {
        family(s) for exprs in panel_expressions().values() for e in exprs for s in series_in(e)
    }
    families = {family(s) for s in exported if s.startswith(("orders_api_", "cdc_listener_"))}
    assert families - on_panels == set()
    assert {"cdc_listener_ready", "orders_api_cache_hits"} <= families  # both were scraped
