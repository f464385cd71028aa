"""The API's operating surface: /metrics series move with the traffic that drives them, and
/readyz tells ready, degraded (Redis down) and unavailable (PostgreSQL down) apart."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
import redis.asyncio
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from api.app import create_app
from devtools.devstack import RedisServer
from tests.integration.conftest import api_settings, http_client
from tests.integration.test_redis_down import own_redis  # noqa: F401  # fixture

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(client: httpx.AsyncClient) -> Samples:
    """Every sample of /metrics by (name, sorted labels)."""
    resp = await client.get("/metrics")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(resp.text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


async def test_a_miss_then_a_hit_move_their_counters_and_the_fill_is_timed(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    before = await scrape(client)
    assert value(before, "orders_api_cache_hits_total") == 0
    assert value(before, "orders_api_cache_misses_total") == 0
    assert (await client.get("/orders/1")).headers["x-cache"] == "miss"
    assert (await client.get("/orders/1")).headers["x-cache"] == "hit"
    after = await scrape(client)
    assert value(after, "orders_api_cache_misses_total") == 1
    assert value(after, "orders_api_cache_hits_total") == 1
    assert value(after, "orders_api_cache_fills_total", outcome="stored") == 1
    assert value(after, "orders_api_cache_fill_duration_seconds_count") == 1
    assert value(after, "orders_api_cache_fill_duration_seconds_sum") > 0
    assert value(after, "orders_api_db_queries_total", kind="read") == 1
    assert value(after, "orders_api_redis_circuit_open") == 0
    # the plain accessors another page may show
    metrics = app.state.ctx.metrics
    assert (metrics.hits, metrics.misses) == (1, 1)


async def test_writes_count_as_database_queries_and_a_fenced_fill_is_told_apart(
    client: httpx.AsyncClient, app: FastAPI, redis_client: redis.asyncio.Redis
) -> None:
    resp = await client.patch("/orders/1", json={"status": "cancelled"})
    assert resp.status_code in (200, 409)
    assert value(await scrape(client), "orders_api_db_queries_total", kind="write") == 1

    # an invalidation lands while the fill's SELECT runs: the fill must not store
    cache = app.state.ctx.cache
    keys = app.state.ctx.keys

    async def load_then_invalidate() -> bytes:
        await redis_client.incr(keys.order(2).fence)
        return b"{}"

    await cache.get(keys.order(2), 60, load_then_invalidate)
    samples = await scrape(client)
    assert value(samples, "orders_api_cache_fills_total", outcome="fenced") == 1
    assert value(samples, "orders_api_cache_fills_total", outcome="stored") == 0


async def test_metrics_are_per_app(database_url: str, redis_url: str) -> None:
    apps = [create_app(api_settings(database_url, redis_url)) for _ in range(2)]
    async with (
        apps[0].router.lifespan_context(apps[0]),
        apps[1].router.lifespan_context(apps[1]),
        http_client(apps[0]) as first,
        http_client(apps[1]) as second,
    ):
        assert (await first.get("/orders/dashboard")).status_code == 200
        assert value(await scrape(first), "orders_api_cache_misses_total") == 1
        assert value(await scrape(second), "orders_api_cache_misses_total") == 0


@pytest.fixture
async def fragile(database_url: str, own_redis: RedisServer) -> AsyncIterator[httpx.AsyncClient]:  # noqa: F811
    app = create_app(
        api_settings(database_url, own_redis.url(), redis_timeout=0.2, redis_retry_after=30)
    )
    async with app.router.lifespan_context(app), http_client(app) as http:
        yield http


async def test_redis_stopped_opens_the_circuit_and_readyz_says_degraded(
    fragile: httpx.AsyncClient,
    own_redis: RedisServer,  # noqa: F811
) -> None:
    ready = await fragile.get("/readyz")
    assert (ready.status_code, ready.json()["status"]) == (200, "ready")

    own_redis.kill()
    for _ in range(3):
        assert (await fragile.get("/orders/dashboard")).status_code == 200
    samples = await scrape(fragile)
    assert value(samples, "orders_api_redis_circuit_open") == 1
    assert value(samples, "orders_api_redis_errors_total") >= 1
    assert value(samples, "orders_api_redis_bypassed_reads_total") >= 1
    assert value(samples, "orders_api_cache_misses_total") == 3
    assert value(samples, "orders_api_db_queries_total", kind="read") == 3

    degraded = await fragile.get("/readyz")
    assert degraded.status_code == 200
    assert degraded.json() == {"status": "degraded", "postgresql": "ok", "redis": "unreachable"}


async def test_readyz_is_503_while_postgresql_is_unreachable(redis_url: str) -> None:
    unreachable = "postgresql://postgres:s3cret@127.0.0.1:1/mes?connect_timeout=1"
    app = create_app(api_settings(unreachable, redis_url, pool_min_size=0, operator_api_key=None))
    async with app.router.lifespan_context(app), http_client(app, None) as http:
        assert (await http.get("/healthz")).status_code == 200  # alive nonetheless
        resp = await http.get("/readyz")
    assert resp.status_code == 503
    assert resp.json() == {"status": "unavailable", "postgresql": "unreachable", "redis": "ok"}
