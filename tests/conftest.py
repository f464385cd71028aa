"""Test servers and per-test isolation.

The session starts its own PostgreSQL (wal_level=logical) and Redis on free ports, so fault
tests may stop them and nothing touches the machine's own services. Each test that asks
for `database_url` gets a fresh database cloned from a migrated template, and each test
that asks for `redis_url` gets a flushed Redis database of its own.

The environment is scrubbed of the product's settings first, so a developer's KEY_PREFIX
or TTL_* cannot change what the tests see.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from api.settings import ApiSettings
from devtools.demo import load_demo_data
from devtools.devstack import PostgresServer, RedisServer, start_servers
from mescache.migrate import apply_migrations
from mescache.settings import CacheSettings

TEMPLATE = "mes_template"

for _name in [
    *list(CacheSettings.model_fields),
    *list(ApiSettings.model_fields),
    "CDC_SLOT",
    "CDC_MODE",
]:
    os.environ.pop(_name.upper(), None)
for _name in list(os.environ):
    if _name.startswith(("WRITER_", "WRITE_BEHIND")):
        os.environ.pop(_name)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "integration" in item.path.parts:
            item.add_marker(pytest.mark.integration)


@dataclass
class Servers:
    pg: PostgresServer
    redis: RedisServer
    workdir: Path


@pytest.fixture(scope="session")
def servers() -> Iterator[Servers]:
    workdir = Path(tempfile.mkdtemp(prefix="mescache-test-"))
    pg, rs = start_servers(workdir)
    try:
        template_url = pg.create_database(TEMPLATE)
        apply_migrations(template_url)
        load_demo_data(template_url, orders=300, models=24)
        yield Servers(pg, rs, workdir)
    finally:
        rs.stop()
        pg.stop("immediate")
        # A session's servers take gigabytes (WAL, a database per test): leave nothing.
        shutil.rmtree(workdir, ignore_errors=True)


_db_numbers = itertools.count()


@pytest.fixture
def database_url(servers: Servers) -> str:
    """A fresh, migrated database with a small demo catalogue (24 models) and 300 orders."""
    return servers.pg.create_database(f"t{next(_db_numbers)}", template=TEMPLATE)


@pytest.fixture
def redis_url(servers: Servers) -> str:
    """A flushed Redis database (1..15) of this test's own."""
    url = servers.redis.url(1 + next(_db_numbers) % 15)
    with redis.Redis.from_url(url) as client:
        client.flushdb()
    return url


@pytest.fixture(scope="session")
def durable_redis(servers: Servers) -> Iterator[RedisServer]:
    """A second Redis with the append-only file on, as write-behind mode requires."""
    server = RedisServer(servers.workdir / "redis-aof", servers.redis.binary, appendonly=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def durable_redis_url(durable_redis: RedisServer) -> str:
    """A flushed database of this test's own on the append-only Redis."""
    url = durable_redis.url(next(_db_numbers) % 16)
    with redis.Redis.from_url(url) as client:
        client.flushdb()
    return url


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[redis.asyncio.Redis]:
    client = redis.asyncio.Redis.from_url(redis_url)
    yield client
    await client.aclose()
