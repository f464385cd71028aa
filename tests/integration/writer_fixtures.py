"""Helpers to run write-behind in tests: the writer in-process or as a real process, the API
as a real uvicorn process, and the database facts the tests check."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import httpx
import psycopg
import pytest
import redis.asyncio
from pydantic import SecretStr
from pydantic_settings import BaseSettings

from tests.integration.listener_fixtures import eventually
from writer.settings import WriterSettings
from writer.worker import Writer


def writer_settings(database_url: str, redis_url: str, **overrides: object) -> WriterSettings:
    values: dict[str, object] = {
        "database_url": database_url,
        "redis_url": redis_url,
        "cdc_slot": "slot_" + database_url.rsplit("/", 1)[1],  # the listener fixtures' slot
        "writer_claim_idle": 0.3,
        "writer_standby_retry": 0.2,
        "writer_block": 0.2,
        "writer_settle_poll": 0.05,
        "writer_trim_interval": 0.5,
    }
    values.update(overrides)
    return WriterSettings(**values)  # type: ignore[arg-type]


class InProcessWriter:
    """The writer as a task of the test's event loop."""

    def __init__(self, settings: WriterSettings) -> None:
        self.writer = Writer(settings)
        self.task: asyncio.Task[None] | None = None

    async def start(self, wait_active: bool = True) -> None:
        self.task = asyncio.create_task(self.writer.run())
        if wait_active:
            await eventually(self._active, "writer active")

    async def _active(self) -> bool:
        if self.task is not None and self.task.done():
            self.task.result()  # raises what stopped it
        return self.writer.active.is_set()

    async def close(self) -> None:
        self.writer.stop.set()
        if self.task is not None:
            await asyncio.wait_for(self.task, 15)


def process_env(settings: BaseSettings) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CDC_", "TTL_", "WRITER_", "WRITE_BEHIND"))
    }
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        secret = value.get_secret_value() if isinstance(value, SecretStr) else value
        env[name.upper()] = str(secret)
    return env


def spawn_writer(settings: WriterSettings) -> subprocess.Popen[bytes]:
    """`orders-writer run` as a separate process (so a test can kill -9 it)."""
    return subprocess.Popen(
        [sys.executable, "-m", "writer.cli", "run"],
        env=process_env(settings),
        stdout=subprocess.DEVNULL,
        stderr=None,  # inherited: pytest shows it when a test fails
    )


def spawn_api(settings: BaseSettings) -> subprocess.Popen[bytes]:
    """`orders-api` (uvicorn) as a separate process."""
    return subprocess.Popen(
        [sys.executable, "-m", "api.main"],
        env=process_env(settings),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def wait_serving(base_url: str, proc: subprocess.Popen[bytes]) -> None:
    async def serving() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"the API exited with {proc.returncode}")
        try:
            async with httpx.AsyncClient(base_url=base_url, timeout=2) as http:
                return (await http.get("/healthz")).status_code == 200
        except httpx.HTTPError:
            return False

    await eventually(serving, "API serving", within=30)


def dba(database_url: str, statement: str, params: Any = None) -> list[tuple[Any, ...]]:
    """A statement from outside the product (psql): returns its rows, if any."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        cur = conn.execute(statement, params)
        return cur.fetchall() if cur.description else []


def new_orders(database_url: str, count: int) -> list[int]:
    rows = dba(
        database_url,
        "INSERT INTO orders (customer, model_id, material_id, quantity, total_price)"
        " SELECT 'wb-' || i, 1, 1, 1, 10 FROM generate_series(1, %s) AS i RETURNING id",
        [count],
    )
    return sorted(r[0] for r in rows)


def status_in_db(database_url: str, order_id: int) -> str:
    return str(dba(database_url, "SELECT status FROM orders WHERE id = %s", [order_id])[0][0])


def applied_entries(database_url: str) -> dict[str, tuple[int, str]]:
    rows = dba(database_url, "SELECT entry_id, order_id, status FROM write_behind_applied")
    return {r[0]: (r[1], r[2]) for r in rows}


@pytest.fixture
async def wb_redis(durable_redis_url: str) -> AsyncIterator[redis.asyncio.Redis]:
    """A client of this test's database on the append-only Redis write-behind needs."""
    client = redis.asyncio.Redis.from_url(durable_redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def writer(database_url: str, durable_redis_url: str) -> AsyncIterator[InProcessWriter]:
    """The writer running in this test's event loop."""
    running = InProcessWriter(writer_settings(database_url, durable_redis_url))
    yield running
    await running.close()
