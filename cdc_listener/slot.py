"""The logical replication slot's lifecycle: create on first start, reuse, take back,
report, drop.

Slot management uses an ordinary connection and the SQL functions, so creating a slot
(which waits for running transactions) never blocks the event loop.

Taking back: when a listener's replication connection goes silent it closes it, but the
server may not learn of that until its wal_sender_timeout and keeps the slot held by the
old walsender. The listener remembers its own walsender (pid and start time, found by the
connection's unique application_name) and, reconnecting, ends exactly that backend if it
still holds the slot. Any other holder is another listener's live stream, never ended.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg import errors
from psycopg.rows import TupleRow

from cdc_listener.errors import SourceUnavailable


@dataclass(frozen=True, slots=True)
class SlotStatus:
    """What `cdc-listener status` prints."""

    slot: str
    active: bool
    active_pid: int | None
    confirmed_lsn: str | None
    current_lsn: str
    retained_bytes: int | None  # WAL the slot keeps on the server's disk
    lag_bytes: int | None  # WAL written but not yet confirmed by the listener
    wal_status: str | None


async def check_wal_level(conn: psycopg.AsyncConnection[TupleRow]) -> None:
    level = (await (await conn.execute("SHOW wal_level")).fetchone() or ("?",))[0]
    if level != "logical":
        raise SourceUnavailable(
            f"wal_level is {level}, logical replication needs wal_level=logical"
            " (or run with CDC_MODE=notify)"
        )


async def ensure_slot(conn: psycopg.AsyncConnection[TupleRow], slot: str) -> bool:
    """Make sure the slot exists and is usable; True if it was (re)created just now."""
    row = await (
        await conn.execute(
            "SELECT wal_status FROM pg_replication_slots WHERE slot_name = %s", [slot]
        )
    ).fetchone()
    if row is not None and row[0] != "lost":
        return False
    if row is not None:
        # The server dropped the WAL this slot needed: its position means nothing now.
        await conn.execute("SELECT pg_drop_replication_slot(%s)", [slot])
    try:
        await conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", [slot])
    except errors.DuplicateObject:
        return False  # another listener created it a moment ago, and flushes
    return True


async def slot_status(conn: psycopg.AsyncConnection[TupleRow], slot: str) -> SlotStatus | None:
    cur = await conn.execute(
        """
        SELECT slot_name, active, active_pid, confirmed_flush_lsn::text,
               pg_current_wal_lsn()::text,
               pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint,
               pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint,
               wal_status
        FROM pg_replication_slots WHERE slot_name = %s
        """,
        [slot],
    )
    row = await cur.fetchone()
    return None if row is None else SlotStatus(*row)


async def drop_slot(conn: psycopg.AsyncConnection[TupleRow], slot: str) -> bool:
    """Drop the slot; False if there was none. Fails while a listener holds it."""
    try:
        await conn.execute("SELECT pg_drop_replication_slot(%s)", [slot])
    except errors.UndefinedObject:
        return False
    return True


@dataclass(frozen=True, slots=True)
class Walsender:
    """One backend serving a replication connection: a pid alone may be reused."""

    pid: int
    started: datetime


async def find_walsender(
    conn: psycopg.AsyncConnection[TupleRow], application_name: str
) -> Walsender | None:
    """The walsender of the replication connection opened with `application_name`."""
    row = await (
        await conn.execute(
            "SELECT pid, backend_start FROM pg_stat_activity"
            " WHERE backend_type = 'walsender' AND application_name = %s",
            [application_name],
        )
    ).fetchone()
    return None if row is None else Walsender(row[0], row[1])


async def take_back(
    conn: psycopg.AsyncConnection[TupleRow], slot: str, own: Walsender, within: float = 5.0
) -> bool:
    """End `own` walsender if it still holds `slot`, and wait (up to `within` s) for the
    slot to be free; True if it was ended. A slot held by anyone else is left alone."""
    row = await (
        await conn.execute(
            "SELECT pg_terminate_backend(a.pid) FROM pg_replication_slots s"
            " JOIN pg_stat_activity a ON a.pid = s.active_pid"
            " WHERE s.slot_name = %s AND a.pid = %s AND a.backend_start = %s",
            [slot, own.pid, own.started],
        )
    ).fetchone()
    if row is None or not row[0]:
        return False
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        held = await (
            await conn.execute(
                "SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s", [slot]
            )
        ).fetchone()
        if held is None or held[0] != own.pid:
            break
        await asyncio.sleep(0.02)
    return True
