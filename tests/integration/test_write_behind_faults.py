"""Write-behind under kill -9: of the writer in the middle of the stream (a transaction in
flight), and of the API while clients submit changes. Every accepted change reaches
PostgreSQL exactly once in effect. Also the refusal of both processes, as processes, to
start on a Redis that persists nothing."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import psycopg
import pytest
import redis
import redis.asyncio
from fastapi import FastAPI
from pydantic_settings import BaseSettings

from api.app import create_app
from devtools.devstack import RedisServer, free_port
from mescache.durability import require_durable
from mescache.errors import RedisNotDurable
from mescache.keys import KeySchema
from mescache.pending import GROUP
from tests.conftest import Servers
from tests.integration.conftest import OPERATOR_KEY, api_settings, http_client
from tests.integration.listener_fixtures import eventually
from tests.integration.writer_fixtures import (
    InProcessWriter,
    applied_entries,
    new_orders,
    process_env,
    spawn_api,
    spawn_writer,
    status_in_db,
    wait_serving,
    writer_settings,
)

KEYS = KeySchema()


@pytest.fixture
async def wb_client(database_url: str, durable_redis_url: str) -> AsyncIterator[httpx.AsyncClient]:
    application: FastAPI = create_app(
        api_settings(database_url, durable_redis_url, write_behind=True)
    )
    async with application.router.lifespan_context(application), http_client(application) as http:
        yield http


def _blocked_writers(database_url: str) -> int:
    """Sessions of this database waiting for a lock (the writer behind our row lock)."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND wait_event_type = 'Lock'"
        ).fetchone()
    return int(row[0]) if row else 0


async def test_kill_9_of_the_writer_mid_stream_loses_and_repeats_nothing(
    wb_client: httpx.AsyncClient, database_url: str, durable_redis_url: str
) -> None:
    orders = new_orders(database_url, 12)
    accepted: dict[str, tuple[int, str]] = {}
    for order_id in orders:
        for status in ("in_progress", "done"):
            resp = await wb_client.patch(f"/orders/{order_id}", json={"status": status})
            assert resp.status_code == 202, resp.text
            accepted[resp.headers["x-pending-write"]] = (order_id, status)
    # Hold the 7th order's row: the writer applies six orders, then waits inside the
    # transaction of the 13th entry, where it dies.
    holder = psycopg.connect(database_url)
    holder.execute("SELECT 1 FROM orders WHERE id = %s FOR UPDATE", [orders[6]])
    settings = writer_settings(database_url, durable_redis_url)
    first = spawn_writer(settings)
    try:
        await eventually(
            lambda: asyncio.to_thread(lambda: _blocked_writers(database_url) == 1),
            "the writer waiting inside the 13th entry's transaction",
        )
        assert len(applied_entries(database_url)) == 12
        first.kill()
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
        holder.rollback()
        holder.close()

    second = spawn_writer(settings)
    try:
        await eventually(
            lambda: asyncio.to_thread(lambda: len(applied_entries(database_url)) == len(accepted)),
            "every accepted change applied after the restart",
            within=60,
        )
    finally:
        second.terminate()
        assert second.wait(15) == 0  # SIGTERM: finishes and exits cleanly

    assert applied_entries(database_url) == accepted
    assert {status_in_db(database_url, o) for o in orders} == {"done"}
    async with redis.asyncio.Redis.from_url(durable_redis_url) as r:
        assert await r.xlen(KEYS.dead_letters()) == 0
        assert (await r.xpending(KEYS.write_stream(), GROUP))["pending"] == 0


async def test_kill_9_of_the_api_while_clients_submit_loses_no_answered_change(
    database_url: str, durable_redis_url: str
) -> None:
    orders = new_orders(database_url, 40)
    port = free_port()
    settings = api_settings(database_url, durable_redis_url, write_behind=True, port=port)
    api = spawn_api(settings)
    base = f"http://127.0.0.1:{port}"
    answered: dict[str, tuple[int, str]] = {}
    try:
        await wait_serving(base, api)

        async def client(mine: list[int]) -> None:
            operator = {"Authorization": f"Bearer {OPERATOR_KEY}"}
            async with httpx.AsyncClient(base_url=base, timeout=5, headers=operator) as http:
                for order_id in mine:
                    for status in ("in_progress", "done"):
                        try:
                            resp = await http.patch(f"/orders/{order_id}", json={"status": status})
                        except httpx.HTTPError:
                            return  # the API is gone
                        if resp.status_code != 202:
                            return
                        answered[resp.headers["x-pending-write"]] = (order_id, status)

        clients = [asyncio.create_task(client(orders[i::4])) for i in range(4)]
        await eventually(lambda: _at_least(answered, 12), "a dozen changes answered")
        api.kill()
        api.wait(10)
        await asyncio.wait_for(asyncio.gather(*clients), 30)
    finally:
        if api.poll() is None:
            api.kill()
    assert 12 <= len(answered) < 2 * len(orders), "the API died mid-stream"

    writer = InProcessWriter(writer_settings(database_url, durable_redis_url))
    await writer.start()
    try:
        await eventually(lambda: _nothing_left(durable_redis_url), "the stream applied")
    finally:
        await writer.close()
    applied = applied_entries(database_url)
    # Every answered change is in PostgreSQL; a change accepted as the API died may be
    # there too (it was in Redis, the answer was lost), never anything twice.
    assert answered.items() <= applied.items()
    for order_id in orders:
        statuses = [s for o, s in applied.values() if o == order_id]
        assert statuses in ([], ["in_progress"], ["in_progress", "done"])
        assert status_in_db(database_url, order_id) == (statuses[-1] if statuses else "new")
    assert writer.writer.dead == 0


async def _at_least(answered: dict[str, tuple[int, str]], count: int) -> bool:
    return len(answered) >= count


async def _nothing_left(redis_url: str) -> bool:
    async with redis.asyncio.Redis.from_url(redis_url) as r:
        groups = await r.xinfo_groups(KEYS.write_stream())
        summary = await r.xpending(KEYS.write_stream(), GROUP)
        return bool(groups) and groups[0]["lag"] == 0 and summary["pending"] == 0


def _run_cli(module: str, settings: BaseSettings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        env=process_env(settings),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_both_processes_refuse_to_start_on_a_redis_without_aof(
    database_url: str, redis_url: str
) -> None:
    settings = api_settings(database_url, redis_url, write_behind=True, port=free_port())
    api = _run_cli("api.main", settings)
    assert api.returncode == 1
    assert "refusing to start in write-behind mode" in api.stderr
    assert "appendonly yes" in api.stderr
    assert "Traceback" not in api.stderr
    writer = _run_cli("writer.cli", settings, "run")
    assert writer.returncode == 1
    assert "orders-writer: refusing to start" in writer.stderr
    assert "Traceback" not in writer.stderr


@pytest.mark.parametrize(("aof", "durable"), [("yes", True), ("no", False)])
async def test_durability_is_read_from_info_where_config_is_renamed(
    servers: Servers, tmp_path: Path, aof: str, durable: bool
) -> None:
    server = RedisServer(
        tmp_path / "redis",
        servers.redis.binary,
        appendonly=aof == "yes",
        extra_args=("--rename-command", "CONFIG", ""),
    )
    server.start()
    try:
        async with redis.asyncio.Redis.from_url(server.url()) as r:
            with pytest.raises(redis.exceptions.ResponseError):
                await r.config_get("appendonly")
            if durable:
                await require_durable(r)
            else:
                with pytest.raises(RedisNotDurable):
                    await require_durable(r)
    finally:
        server.stop()


async def test_an_evicting_redis_is_refused(durable_redis_url: str) -> None:
    async with redis.asyncio.Redis.from_url(durable_redis_url) as r:
        policy = (await r.config_get("maxmemory-policy"))["maxmemory-policy"]
        assert policy is not None
        await r.config_set("maxmemory-policy", "allkeys-lru")
        try:
            with pytest.raises(RedisNotDurable, match="allkeys-lru"):
                await require_durable(r)
        finally:
            await r.config_set("maxmemory-policy", policy)


def test_writer_status_reports_the_backlog_and_the_latest_dead_letters(
    database_url: str, durable_redis_url: str
) -> None:
    with redis.Redis.from_url(durable_redis_url) as r:
        r.xadd(KEYS.write_stream(), {"order_id": "5", "status": "done"})
        r.xadd(KEYS.dead_letters(), {"entry": "1-0", "reason": "unknown order 77"})
    settings = writer_settings(database_url, durable_redis_url)
    shown = _run_cli("writer.cli", settings, "status")
    assert shown.returncode == 0, shown.stderr
    assert "not yet applied: 1" in shown.stdout
    assert "dead letters: 1" in shown.stdout
    assert "unknown order 77" in shown.stdout


def test_the_writer_says_plainly_when_notify_mode_has_no_outbox(
    database_url: str, durable_redis_url: str
) -> None:
    settings = writer_settings(database_url, durable_redis_url, cdc_mode="notify")
    failed = _run_cli("writer.cli", settings, "run")
    assert failed.returncode == 1
    assert "cache_outbox" in failed.stderr
    assert "Traceback" not in failed.stderr


def test_bad_writer_settings_exit_2(database_url: str, durable_redis_url: str) -> None:
    settings = writer_settings(database_url, durable_redis_url)
    env = process_env(settings)
    env["WRITER_MAX_ATTEMPTS"] = "0"
    failed = subprocess.run(
        [sys.executable, "-m", "writer.cli", "run"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert failed.returncode == 2
    assert "WRITER_MAX_ATTEMPTS" in failed.stderr


async def test_kill_9_of_a_durable_redis_keeps_every_accepted_change(
    servers: Servers, tmp_path: Path, database_url: str
) -> None:
    server = RedisServer(tmp_path / "redis", servers.redis.binary, appendonly=True)
    server.start()
    try:
        orders = new_orders(database_url, 5)
        application = create_app(api_settings(database_url, server.url(), write_behind=True))
        accepted: dict[str, tuple[int, str]] = {}
        async with (
            application.router.lifespan_context(application),
            http_client(application) as http,
        ):
            for order_id in orders:
                resp = await http.patch(f"/orders/{order_id}", json={"status": "cancelled"})
                assert resp.status_code == 202
                accepted[resp.headers["x-pending-write"]] = (order_id, "cancelled")
        server.kill()  # SIGKILL: only what reached the append-only file survives
        server.start()  # same port and directory: the file is replayed

        writer = InProcessWriter(writer_settings(database_url, server.url()))
        await writer.start()
        try:
            await eventually(
                lambda: asyncio.to_thread(lambda: applied_entries(database_url) == accepted),
                "every change accepted before the crash applied",
            )
        finally:
            await writer.close()
        assert {status_in_db(database_url, o) for o in orders} == {"cancelled"}
    finally:
        server.stop()
