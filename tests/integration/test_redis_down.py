"""With Redis stopped or stalled, reads still answer 200 from PostgreSQL, and only the
first request after a failure pays Redis's timeout (the breaker skips Redis after that)."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from api.app import create_app
from devtools.devstack import RedisServer, ensure_binaries
from tests.integration.conftest import api_settings, http_client

READS = ("/orders/dashboard", "/orders/new", "/orders/1", "/orders?status=done")


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis of this test's own, free to be killed."""
    _, binary = ensure_binaries()
    server = RedisServer(tmp_path / "redis", binary)
    server.start()
    yield server
    if server.proc is not None and server.proc.poll() is None:
        os.kill(server.proc.pid, signal.SIGCONT)
    server.stop()


@pytest.fixture
async def client(database_url: str, own_redis: RedisServer) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(
        api_settings(database_url, own_redis.url(), redis_timeout=0.2, redis_retry_after=0.3)
    )
    async with app.router.lifespan_context(app), http_client(app) as http:
        yield http


async def _read_all(client: httpx.AsyncClient) -> list[httpx.Response]:
    return [await client.get(path) for path in READS]


async def test_reads_answer_from_postgres_while_redis_is_stopped_and_recover(
    client: httpx.AsyncClient, own_redis: RedisServer
) -> None:
    warm = await _read_all(client)
    assert [r.headers["x-cache"] for r in await _read_all(client)] == ["hit"] * len(READS)

    own_redis.kill()
    for _ in range(3):
        down = await _read_all(client)
        assert [r.status_code for r in down] == [200] * len(READS)
        assert [r.headers["x-cache"] for r in down] == ["miss"] * len(READS)
        assert [r.json() for r in down] == [r.json() for r in warm]
    health = (await client.get("/healthz")).json()
    assert health["redis"] == "open"
    assert health["redis_failures"] >= 1
    # every read after the first failure skipped Redis instead of waiting for it
    assert health["reads_without_redis"] >= 3 * len(READS) - 2

    own_redis.start()  # same port, empty
    await asyncio.sleep(0.35)
    await _read_all(client)
    assert [r.headers["x-cache"] for r in await _read_all(client)] == ["hit"] * len(READS)
    assert (await client.get("/healthz")).json()["redis"] == "closed"


async def test_a_stalled_redis_costs_one_timeout_not_one_per_request(
    client: httpx.AsyncClient, own_redis: RedisServer
) -> None:
    await _read_all(client)
    assert own_redis.proc is not None
    os.kill(own_redis.proc.pid, signal.SIGSTOP)  # Redis accepts nothing and answers nothing
    try:
        responses = [await client.get("/orders/dashboard") for _ in range(20)]
    finally:
        os.kill(own_redis.proc.pid, signal.SIGCONT)
    assert [r.status_code for r in responses] == [200] * 20
    health = (await client.get("/healthz")).json()
    # Only the requests that probed Redis waited for its timeout: one, plus one more per
    # retry_after (0.3 s) that the 20 requests took; the rest skipped Redis. The first
    # timed out on its direct hit (api.direct_hits) and was then read through the tripped
    # breaker, so it counts as both; each later probe was a read of its own.
    failures = health["redis_failures"]
    assert failures <= 20 // 3
    assert health["reads_without_redis"] == 20 - (failures - 1)
