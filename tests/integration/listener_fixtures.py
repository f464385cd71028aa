"""Helpers to run the listener beside the API in tests: in-process or as a real process."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable

import psycopg

from cdc_listener import daemon
from cdc_listener.metrics import ListenerMetrics
from cdc_listener.settings import ListenerSettings


def listener_settings(database_url: str, redis_url: str, **overrides: object) -> ListenerSettings:
    values: dict[str, object] = {
        "database_url": database_url,
        # slots are named cluster-wide: one per test database
        "cdc_slot": "slot_" + database_url.rsplit("/", 1)[1],
        "redis_url": redis_url,
        "cdc_recheck_delay": 0.05,
        "cdc_standby_retry": 0.3,
        "cdc_status_interval": 0.2,
        "cdc_notify_poll": 0.5,
        # The probe commits to cache_probe: tests that count changes must not see it.
        "cdc_probe_interval": 0,
    }
    values.update(overrides)
    return ListenerSettings(**values)  # type: ignore[arg-type]


class InProcessListener:
    """The daemon as a task of the test's event loop."""

    def __init__(self, settings: ListenerSettings) -> None:
        self.settings = settings
        self.stop = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.metrics = ListenerMetrics(settings.cdc_mode, settings.cdc_slot)

    def launch(self) -> asyncio.Task[None]:
        """Start the daemon without waiting for it to be ready (a standby never is)."""
        self.task = asyncio.create_task(
            daemon.run(self.settings, self.stop, signals=False, metrics=self.metrics)
        )
        return self.task

    async def start(self) -> None:
        """Until the daemon reports ready: streaming, and caught up with what was pending
        (the slot turns active earlier, while it is being created)."""
        task = self.launch()

        async def ready() -> bool:
            if task.done():
                task.result()  # raises what the daemon died of
                raise AssertionError("the listener stopped before it was ready")
            return self.metrics.ready

        await eventually(ready, what="listener ready")

    async def close(self) -> None:
        self.stop.set()
        if self.task is not None:
            await asyncio.wait_for(self.task, 15)


def spawn_listener(settings: ListenerSettings) -> subprocess.Popen[bytes]:
    """The daemon as a separate process (so a test can kill -9 it)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CDC_", "TTL_"))}
    env.update({name.upper(): str(value) for name, value in settings.model_dump().items()})
    return subprocess.Popen(
        [sys.executable, "-m", "cdc_listener.cli", "run"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=None,  # inherited: pytest shows it when a test fails
    )


async def wait_ready(settings: ListenerSettings, pid: int | None = None) -> None:
    """Until the slot is active (held by `pid` if given), or the outbox listener listens."""

    def ready() -> bool:
        with psycopg.connect(settings.database_url, autocommit=True) as conn:
            if settings.cdc_mode == "notify":
                row = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'LISTEN %%'"
                    " AND datname = current_database()"
                ).fetchone()
                return row is not None and row[0] > 0
            # Held by a walsender: while pg_create_logical_replication_slot runs, the slot
            # shows active too, before the listener has flushed and started streaming.
            row = conn.execute(
                "SELECT s.active AND EXISTS (SELECT 1 FROM pg_stat_activity a"
                "  WHERE a.pid = s.active_pid AND a.backend_type = 'walsender'), s.active_pid"
                " FROM pg_replication_slots s WHERE s.slot_name = %s",
                [settings.cdc_slot],
            ).fetchone()
            if row is None or not row[0]:
                return False
            if pid is None:
                return True
            owner = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = %s AND client_port IS NOT NULL",
                [row[1]],
            ).fetchone()
            return owner is not None and owner[0] > 0

    await eventually(lambda: asyncio.to_thread(ready), what="listener ready")


async def eventually(check: Callable[[], Awaitable[bool]], what: str, within: float = 15.0) -> None:
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for: {what}")
        await asyncio.sleep(0.02)


def confirmed_past_now(database_url: str, slot: str) -> bool:
    """Whether the slot's confirmed position has reached the server's WAL end."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT confirmed_flush_lsn >= pg_current_wal_lsn() FROM pg_replication_slots"
            " WHERE slot_name = %s",
            [slot],
        ).fetchone()
    return bool(row and row[0])
