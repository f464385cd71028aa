"""The logical replication slot's lifecycle: create on first start, reuse, take back,
report, drop.

Slot management uses an ordinary connection and the SQL functions, so creating a slot
(which waits for running transactions) never blocks the event loop.

The slot lives on the primary, so every connection of the listener asks for one
(:func:`on_primary`). From PostgreSQL 17 the slot is created as a failover slot: a standby
with `sync_replication_slots` keeps a copy, and after its promotion the listener resumes
from that copy with nothing lost. A slot that is missing (PostgreSQL 15/16 after a
failover, a copy never synchronised) or invalidated is (re)created, and the caller flushes
the namespace: one test, :func:`ensure_slot`, covers a first start, a drop and a failover.

Taking back: when a listener's replication connection goes silent it closes it, but the
server may not learn of that until its wal_sender_timeout and keeps the slot held by the
old walsender. The listener remembers its own walsender (pid and start time, found by the
connection's unique application_name) and, reconnecting, ends exactly that backend if it
still holds the slot. Any other holder is another listener's live stream, never ended.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Final

import psycopg
from psycopg import errors
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import TupleRow

from cdc_listener.errors import SourceUnavailable
from mescache.queries import query
from mescache.settings import PRIMARY_ONLY, with_session_attrs

log = logging.getLogger("cdc_listener.slot")

# Failover slots and pg_replication_slots' `failover`, `synced`, `invalidation_reason`.
FAILOVER_SLOTS: Final = 170000


def on_primary(conninfo: str) -> str:
    """`conninfo` asking libpq for the primary: the slot and its stream live there, and a
    standby (or a promoted standby's old primary come back read-only) must be refused."""
    if conninfo_to_dict(conninfo).get("target_session_attrs") in PRIMARY_ONLY:
        return conninfo
    return with_session_attrs(conninfo, "primary")


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
    """SourceUnavailable unless the server runs wal_level=logical."""
    level = (await (await conn.execute(query("wal_level"))).fetchone() or ("?",))[0]
    if level != "logical":
        raise SourceUnavailable(
            f"wal_level is {level}, logical replication needs wal_level=logical"
            " (or run with CDC_MODE=notify)"
        )


async def ensure_slot(conn: psycopg.AsyncConnection[TupleRow], slot: str) -> bool:
    """Make sure the slot exists and is usable; True if it was (re)created just now, so the
    changes before it were never seen.

    An existing slot is trusted only while the server still holds the WAL from its position
    (not invalidated) and, from PostgreSQL 17, only as a failover slot. On a promoted
    standby that is the synchronised copy of the old primary's slot, whose position is at
    or before what the listener confirmed there: the stream resumes from it and replays,
    never skips. A copy that was never synchronised is not there at all (a standby drops
    its unfinished copies when promoted).
    """
    failover = conn.info.server_version >= FAILOVER_SLOTS
    health = query("slot_health" if failover else "slot_health_before_17")
    row = await (await conn.execute(health, {"slot": slot})).fetchone()
    if row is not None and row[0] != "lost" and row[1] is None and (row[2] or not failover):
        return False
    if row is not None:
        # The server dropped the WAL this slot needed, or a conflict voided it: its position
        # means nothing now. On 17+ a slot without failover is recreated as one too: it
        # either predates failover slots here (no standby keeps a copy of it) or was made
        # on this server while it was a standby, never a copy of the primary's.
        why = row[1] or ("wal removed" if row[0] == "lost" else "not a failover slot")
        log.warning("slot unusable, recreating it", extra={"slot": slot, "error": why})
        await conn.execute(query("slot_drop"), {"slot": slot})
    create = query("slot_create_failover" if failover else "slot_create")
    try:
        await conn.execute(create, {"slot": slot})
    except errors.DuplicateObject:
        return False  # another listener created it a moment ago, and flushes
    return True


async def slot_status(conn: psycopg.AsyncConnection[TupleRow], slot: str) -> SlotStatus | None:
    """What `cdc-listener status` reports of the slot; None if there is none."""
    cur = await conn.execute(query("slot_status"), {"slot": slot})
    row = await cur.fetchone()
    return None if row is None else SlotStatus(*row)


@dataclass(frozen=True, slots=True)
class StandbyCopy:
    """One standby's copy of the slot: what an operator checks before promoting it.

    Seen from the primary (`pg_stat_replication`), only the conditions for a copy can be
    told (a physical slot, listed in `synchronized_standby_slots`, a failover slot);
    `synced` and `usable` come from the standby's own `pg_replication_slots`."""

    standby: str  # application_name seen from the primary, host:port on the standby
    seen_from: str  # "primary" or "standby"
    state: str | None  # the walsender's state (streaming, catchup, ...), from the primary
    physical_slot: str | None
    protected: bool | None  # listed in synchronized_standby_slots: the listener waits for it
    synced: bool | None  # a persistent copy synchronised from the primary
    usable: bool | None  # the listener would resume from it after a promotion
    confirmed_lsn: str | None
    reason: str | None  # why the copy is (or may be) unusable


async def is_standby(conn: psycopg.AsyncConnection[TupleRow]) -> bool:
    """Whether this server is a standby (in recovery)."""
    row = await (await conn.execute(query("in_recovery"))).fetchone()
    return bool(row and row[0])


async def copies_seen_from_primary(
    conn: psycopg.AsyncConnection[TupleRow], slot: str
) -> list[StandbyCopy]:
    """Every physical standby streaming from this primary, with what the primary can tell
    of its copy of `slot`."""
    failover_slots = conn.info.server_version >= FAILOVER_SLOTS
    protected: set[str] = set()
    slot_failover = False
    if failover_slots:
        listed = await (await conn.execute(query("synchronized_standby_slots"))).fetchone()
        protected = {n.strip() for n in str(listed[0] if listed else "").split(",") if n.strip()}
        row = await (await conn.execute(query("slot_is_failover"), {"slot": slot})).fetchone()
        slot_failover = bool(row and row[0])
    rows = await (await conn.execute(query("physical_standbys"))).fetchall()
    copies = []
    for name, state, physical, _replayed in rows:
        if not failover_slots:
            reason = (
                f"PostgreSQL {conn.info.server_version // 10000} keeps no copy of a"
                " logical slot: promoting it loses the slot (the listener flushes the cache)"
            )
        elif not slot_failover:
            reason = "the slot is not a failover slot (or does not exist yet)"
        elif physical is None:
            reason = "streams without a physical slot (primary_slot_name): no copy is kept"
        elif physical not in protected:
            reason = "not in synchronized_standby_slots: the listener may get ahead of it"
        else:
            reason = None
        copies.append(
            StandbyCopy(
                standby=name or "-",
                seen_from="primary",
                state=state,
                physical_slot=physical,
                protected=physical in protected if failover_slots else None,
                synced=None,
                usable=False if reason else None,
                confirmed_lsn=None,
                reason=reason,
            )
        )
    return copies


async def copy_on_standby(
    conn: psycopg.AsyncConnection[TupleRow], slot: str, name: str
) -> StandbyCopy:
    """This standby's own copy of `slot`, and whether a promotion would keep it."""
    receiver = await (await conn.execute(query("wal_receiver"))).fetchone()
    state, physical = receiver if receiver is not None else (None, None)
    if conn.info.server_version < FAILOVER_SLOTS:
        return StandbyCopy(
            name, "standby", state, physical, None, False, False, None,
            f"PostgreSQL {conn.info.server_version // 10000} keeps no copy of a logical slot",
        )  # fmt: skip
    row = await (await conn.execute(query("slot_copy_on_standby"), {"slot": slot})).fetchone()
    if row is None:
        reason: str | None = "no copy of the slot (sync_replication_slots, a failover slot?)"
        synced, lsn = False, None
    else:
        synced_flag, temporary, invalidated, lsn, syncing = row
        synced = bool(synced_flag) and not temporary
        if invalidated is not None:
            reason = f"the copy is invalidated ({invalidated})"
        elif not synced_flag:
            reason = "a slot of that name that is not a synchronised copy"
        elif temporary:
            reason = "the copy is not synchronised yet (still temporary)"
        elif not syncing:
            reason = "sync_replication_slots is off: the copy is no longer kept up"
        else:
            reason = None
    usable = reason is None or reason.startswith("sync_replication_slots")
    return StandbyCopy(name, "standby", state, physical, None, synced, usable, lsn, reason)


async def drop_slot(conn: psycopg.AsyncConnection[TupleRow], slot: str) -> bool:
    """Drop the slot; False if there was none. Fails while a listener holds it."""
    try:
        await conn.execute(query("slot_drop"), {"slot": slot})
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
    cur = await conn.execute(query("walsender_of"), {"application_name": application_name})
    row = await cur.fetchone()
    return None if row is None else Walsender(row[0], row[1])


async def take_back(
    conn: psycopg.AsyncConnection[TupleRow], slot: str, own: Walsender, within: float = 5.0
) -> bool:
    """End `own` walsender if it still holds `slot`, and wait (up to `within` s) for the
    slot to be free; True if it was ended. A slot held by anyone else is left alone."""
    ended = {"slot": slot, "pid": own.pid, "started": own.started}
    row = await (await conn.execute(query("walsender_end_own"), ended)).fetchone()
    if row is None or not row[0]:
        return False
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        held = await (await conn.execute(query("slot_holder"), {"slot": slot})).fetchone()
        if held is None or held[0] != own.pid:
            break
        await asyncio.sleep(0.02)
    return True
