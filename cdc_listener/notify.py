"""Source 2: the trigger outbox, woken by LISTEN/NOTIFY (for databases without
wal_level=logical).

Delivery contract: at least once, nothing lost. Rows are taken in id order under
FOR UPDATE SKIP LOCKED (two listeners never apply the same rows at once), applied to
Redis, and deleted in the same transaction only after Redis succeeded. A NOTIFY is only a
wake-up: the outbox is drained at least every CDC_NOTIFY_POLL seconds regardless.

Liveness: a LISTEN connection that went silent delivers no notifies and says nothing, so
after every wait the listener asks it a trivial query, and every query (on either
connection) has CDC_LIVENESS_TIMEOUT to answer; a silent connection is dead (StreamSilent)
and the daemon reconnects. Waits are at most a third of the bound, so a live server is
heard from well within it.
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
from cdc_listener.liveness import PROBE_SHARE, application_name, bounded
from cdc_listener.metrics import ListenerMetrics
from cdc_listener.publish import ChangePublisher
from cdc_listener.settings import ListenerSettings
from mescache.db import with_liveness
from mescache.queries import query
from mescache.rules import Change, add_change

log = logging.getLogger("cdc_listener.notify")

CHANNEL = "orders_cache"  # the channel notify/outbox.sql notifies (and outbox_listen hears)
_DRAIN_ROWS = 1000


def outbox_change(row: tuple[Any, ...]) -> Change:
    """An outbox row (table_name, op, old_id, new_id, old_status, new_status, old_customer,
    new_customer, changed) in the rule's terms."""
    table, op, old_id, new_id, old_status, new_status, old_customer, new_customer, changed = row
    old = None if old_id is None else {"id": old_id, "status": old_status, "customer": old_customer}
    new = None if new_id is None else {"id": new_id, "status": new_status, "customer": new_customer}
    return Change(table, op, old, new, None if changed is None else frozenset(changed))


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
        self._liveness = settings.cdc_liveness_timeout

    def _conninfo(self) -> str:
        return with_liveness(
            self.settings.database_url,
            self._liveness,
            application_name=application_name("notify"),
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Listen, drain the outbox on every notify and poll, until `stop` is set."""
        async with (
            await psycopg.AsyncConnection.connect(self._conninfo(), autocommit=True) as listen_conn,
            await psycopg.AsyncConnection.connect(self._conninfo(), autocommit=True) as work_conn,
        ):
            async with bounded(self._liveness, "checking the outbox", work_conn):
                exists = await (await work_conn.execute(query("outbox_exists"))).fetchone()
            if exists is None or exists[0] is None:
                raise SourceUnavailable(
                    "no cache_outbox table: apply mescache/sql/notify/outbox.sql"
                    " (cdc-listener install-notify) first"
                )
            async with bounded(self._liveness, "LISTEN", listen_conn):
                await listen_conn.execute(query("outbox_listen"))
            log.info("listening", extra={"mode": "notify", "channel": CHANNEL})
            self.ready = True
            self.metrics.source_started()
            while not stop.is_set():
                await self.drain(work_conn)
                self.metrics.drained()
                self.metrics.check()
                await self._wait(listen_conn, stop)
                async with bounded(self._liveness, "the LISTEN connection", listen_conn):
                    # Notifies prove nothing about a connection that may be silent: ask.
                    await listen_conn.execute(query("ping"))
                self.metrics.heard()
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
        wait = min(self.settings.cdc_notify_poll, self._liveness * PROBE_SHARE)
        async for _ in conn.notifies(timeout=wait, stop_after=1):
            break

    async def drain(self, conn: psycopg.AsyncConnection[Any]) -> int:
        """Apply and delete every visible outbox row; returns how many."""
        total = 0
        while True:
            async with bounded(self._liveness, "draining the outbox", conn), conn.transaction():
                taken = await conn.execute(query("outbox_take"), {"limit": _DRAIN_ROWS})
                rows = await taken.fetchall()
                if not rows:
                    self.metrics.heard()
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
                await conn.execute(query("outbox_delete"), {"ids": [r[0] for r in rows]})
            # Counted once the deletion committed: a failed commit re-applies the rows.
            self.metrics.heard()
            self.metrics.batch_applied(len(rows), 0, batch.lag, done)
            self.publisher.announce(batch)
            total += len(rows)


async def outbox_backlog(conn: psycopg.AsyncConnection[Any]) -> tuple[int, datetime | None]:
    """How many outbox rows wait, and when the oldest was written."""
    row = await (await conn.execute(query("outbox_backlog"))).fetchone()
    return (0, None) if row is None else (int(row[0]), row[1])
