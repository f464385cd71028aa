"""Source 2: the trigger outbox, woken by LISTEN/NOTIFY (for databases without
wal_level=logical).

Delivery contract: at least once, nothing lost. Rows are taken in id order under
FOR UPDATE SKIP LOCKED (two listeners never apply the same rows at once), applied to
Redis, and deleted in the same transaction only after Redis succeeded. A NOTIFY is only a
wake-up: the outbox is drained at least every CDC_NOTIFY_POLL seconds regardless.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import datetime
from typing import Any

import psycopg

from cdc_listener.apply import Applier, Batch
from cdc_listener.errors import SourceUnavailable
from cdc_listener.metrics import ListenerMetrics
from cdc_listener.publish import ChangePublisher
from cdc_listener.settings import ListenerSettings
from mescache.rules import Change, add_change

log = logging.getLogger("cdc_listener.notify")

CHANNEL = "orders_cache"  # the channel sql/notify/outbox.sql notifies
_DRAIN_ROWS = 1000


def outbox_change(row: tuple[Any, ...]) -> Change:
    """An outbox row (table_name, op, old_id, new_id, old_status, new_status) in the
    rule's terms."""
    table, op, old_id, new_id, old_status, new_status = row
    old = None if old_id is None else {"id": old_id, "status": old_status}
    new = None if new_id is None else {"id": new_id, "status": new_status}
    return Change(table, op, old=old, new=new)


class NotifySource:
    """Drains the outbox on every notify and every poll interval until `stop` is set."""

    def __init__(
        self,
        settings: ListenerSettings,
        applier: Applier,
        publisher: ChangePublisher,
        metrics: ListenerMetrics,
    ) -> None:
        self.settings = settings
        self.applier = applier
        self.publisher = publisher
        self.metrics = metrics
        self.ready = False

    async def run(self, stop: asyncio.Event) -> None:
        async with (
            await psycopg.AsyncConnection.connect(
                self.settings.database_url, autocommit=True
            ) as listen_conn,
            await psycopg.AsyncConnection.connect(
                self.settings.database_url, autocommit=True
            ) as work_conn,
        ):
            exists = await (
                await work_conn.execute("SELECT to_regclass('cache_outbox')")
            ).fetchone()
            if exists is None or exists[0] is None:
                raise SourceUnavailable(
                    "no cache_outbox table: apply sql/notify/outbox.sql"
                    " (cdc-listener install-notify) first"
                )
            await listen_conn.execute(f"LISTEN {CHANNEL}")
            log.info("listening", extra={"mode": "notify", "channel": CHANNEL})
            self.ready = True
            self.metrics.source_started()
            while not stop.is_set():
                await self.drain(work_conn)
                self.metrics.drained()
                await self._wait(listen_conn, stop)
            await self.drain(work_conn)
            log.info("listener stopped", extra={"mode": "notify"})

    async def _wait(self, conn: psycopg.AsyncConnection[Any], stop: asyncio.Event) -> None:
        stopping = asyncio.ensure_future(stop.wait())
        notified = asyncio.ensure_future(self._next_notify(conn))
        await asyncio.wait({stopping, notified}, return_when=asyncio.FIRST_COMPLETED)
        for task in (stopping, notified):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _next_notify(self, conn: psycopg.AsyncConnection[Any]) -> None:
        async for _ in conn.notifies(timeout=self.settings.cdc_notify_poll, stop_after=1):
            break

    async def drain(self, conn: psycopg.AsyncConnection[Any]) -> int:
        """Apply and delete every visible outbox row; returns how many."""
        total = 0
        while True:
            async with conn.transaction():
                rows = await (
                    await conn.execute(
                        "SELECT id, created_at, table_name, op, old_id, new_id, old_status,"
                        " new_status FROM cache_outbox ORDER BY id LIMIT %s"
                        " FOR UPDATE SKIP LOCKED",
                        [_DRAIN_ROWS],
                    )
                ).fetchall()
                if not rows:
                    return total
                self.metrics.received += len(rows)
                batch = Batch()
                for row in rows:
                    add_change(batch.touched, outbox_change(row[2:]))
                batch.commits = len(rows)
                # The row's time is its transaction's start: the lag reads a little long.
                batch.oldest_commit = min(row[1] for row in rows).timestamp()
                batch.bound(self.settings.cdc_max_keys)
                done = await self.applier.apply(batch)
                batch.first_applied(time.time())
                await conn.execute(
                    "DELETE FROM cache_outbox WHERE id = ANY(%s)", [[r[0] for r in rows]]
                )
            # Counted once the deletion committed: a failed commit re-applies the rows.
            self.metrics.batch_applied(len(rows), 0, batch.lag, done)
            self.publisher.announce(batch)
            total += len(rows)


async def outbox_backlog(conn: psycopg.AsyncConnection[Any]) -> tuple[int, datetime | None]:
    """How many outbox rows wait, and when the oldest was written."""
    row = await (
        await conn.execute("SELECT count(*), min(created_at) FROM cache_outbox")
    ).fetchone()
    return (0, None) if row is None else (int(row[0]), row[1])
