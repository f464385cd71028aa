"""Three API processes (separate uvicorn servers) against one Redis Cluster: a cold key is
filled once across all of them, every process's near copy and live stream follow a raw-SQL
change, and after a load of reads and writes through all three the checker finds nothing
stale."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator

import httpx
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from devtools.redisha import LocalCluster
from mescache.orders import STATUSES
from tests.integration.api_server import ApiProcess
from tests.integration.conftest import OPERATOR_KEY, api_settings
from tests.integration.listener_fixtures import InProcessListener, eventually, listener_settings
from tests.integration.test_cluster_stack import _stale_keys
from tests.integration.test_live import open_streams

OPERATOR = {"Authorization": f"Bearer {OPERATOR_KEY}"}


@pytest.fixture
def three_apis(redis_cluster: LocalCluster, database_url: str) -> Iterator[list[ApiProcess]]:
    # Generous Redis and fill bounds: this is about sharing fills, not about a slow machine
    # (a Redis call past REDIS_TIMEOUT would send its reader to PostgreSQL).
    settings = api_settings(
        database_url, redis_cluster.url, fill_wait=5.0, fill_lease=5.0, redis_timeout=2.0
    )
    servers: list[ApiProcess] = []
    try:
        for _ in range(3):
            servers.append(ApiProcess(settings))
        yield servers
    finally:
        for server in servers:
            server.stop()


def _counter(text: str, name: str, **labels: str) -> float:
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    )


async def _dashboard_ids(http: httpx.AsyncClient, base_url: str) -> set[int]:
    body = (await http.get(base_url + "/orders/dashboard")).json()
    return {int(order["id"]) for order in body["items"]}


async def test_three_api_processes_share_fills_and_follow_every_change(
    three_apis: list[ApiProcess],
    cluster_client: Redis,
    database_url: str,
    redis_cluster: LocalCluster,
) -> None:
    listener = InProcessListener(listener_settings(database_url, redis_cluster.url))
    await listener.start()
    try:
        async with httpx.AsyncClient(headers=OPERATOR, timeout=30) as http:
            # A cold dashboard, asked for by 60 readers spread over the three processes.
            bases = [api.base_url for api in three_apis]
            reads = [http.get(bases[i % 3] + "/orders/dashboard") for i in range(60)]
            answers = await asyncio.gather(*reads)
            assert {r.status_code for r in answers} == {200}
            metrics = [(await http.get(base + "/metrics")).text for base in bases]
            fills = sum(
                _counter(m, "orders_api_cache_fills_total", outcome="stored") for m in metrics
            )
            selects = sum(_counter(m, "orders_api_db_queries_total", kind="read") for m in metrics)
            assert fills == 1
            assert selects == 1  # one SELECT across three processes: one lease per key

            # Every process's near copy and its live stream follow a DBA's change.
            with psycopg.connect(database_url) as conn:
                row = conn.execute(
                    "SELECT id FROM orders WHERE status IN ('new', 'in_progress') LIMIT 1"
                ).fetchone()
            assert row is not None
            order_id = int(row[0])
            for base in bases:
                assert order_id in await _dashboard_ids(http, base)
            async with (
                open_streams(bases[0], 1) as (first,),
                open_streams(bases[1], 1) as (second,),
                open_streams(bases[2], 1) as (third,),
            ):
                for base in bases:  # "ready" comes before a process's feed follows Redis

                    async def live(b: str = base) -> bool:
                        return bool((await http.get(b + "/stats")).json()["live"])

                    await eventually(live, f"{base} follows the change channel")
                with psycopg.connect(database_url, autocommit=True) as conn:
                    conn.execute("UPDATE orders SET status = 'cancelled' WHERE id = %s", [order_id])
                for stream in (first, second, third):
                    await stream.wait_for("change", "the change announced", order_id)
            for base in bases:

                async def gone(b: str = base) -> bool:
                    return order_id not in await _dashboard_ids(http, b)

                await eventually(gone, f"order {order_id} left the dashboard of {base}")

            # A short load through all three, then nothing stale.
            rng = random.Random(9)
            for _ in range(60):
                base = rng.choice(bases)
                path = rng.choice(["/orders/dashboard", f"/orders/{rng.randint(1, 300)}"])
                assert (await http.get(base + path)).status_code == 200
                if rng.random() < 0.3:
                    with psycopg.connect(database_url, autocommit=True) as conn:
                        conn.execute(
                            "UPDATE orders SET status = %s WHERE id = %s",
                            [rng.choice(STATUSES), rng.randint(1, 300)],
                        )

        stale: list[str] = []

        async def nothing_stale() -> bool:
            stale[:] = await _stale_keys(database_url, cluster_client)
            return not stale

        try:
            await eventually(nothing_stale, "no stale key", within=20)
        except AssertionError:
            raise AssertionError(f"stale: {stale}") from None
    finally:
        await listener.close()
