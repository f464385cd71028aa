"""Applying one status change to PostgreSQL, idempotently.

One transaction records the stream entry in ``write_behind_applied`` and moves the order
with the API's own write (mescache.writes), under the same condition as a synchronous
PATCH (the move must be legal from the row's current status). The entry id is the primary
key, so a replay (the writer died after the commit, before acknowledging in Redis) finds it
and changes nothing; a replay racing the first attempt waits on the key and then does
nothing either.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import psycopg
from psycopg.rows import tuple_row

from mescache import writes
from mescache.queries import query
from writer.entries import StatusEntry
from writer.errors import NoOutbox

Mode = Literal["logical", "notify"]


@dataclass(frozen=True, slots=True)
class EntryApplied:
    """Committed now (`replay` false) or by an earlier attempt (`replay` true)."""

    replay: bool


@dataclass(frozen=True, slots=True)
class Rejected:
    """PostgreSQL refused the change; `actual` is the order's status there (None: no order)."""

    reason: str
    actual: str | None


Outcome = EntryApplied | Rejected

Connection = psycopg.AsyncConnection[Any]


async def apply_entry(conn: Connection, entry: StatusEntry) -> Outcome:
    """Apply `entry` in one transaction on an autocommit connection."""
    params = {"entry": entry.entry, "id": entry.order_id, "to": entry.status}
    outcome: Outcome
    async with conn.transaction() as txn, conn.cursor(row_factory=tuple_row) as cur:
        await cur.execute(query("wb_record_entry"), params)
        if await cur.fetchone() is None:
            return EntryApplied(replay=True)
        if await writes.move_status(conn, entry.order_id, entry.status) is not None:
            return EntryApplied(replay=False)
        actual = await writes.status_of(conn, entry.order_id)
        if actual is None:
            outcome = Rejected(f"unknown order {entry.order_id}", None)
        else:
            outcome = Rejected(
                f"illegal move: order {entry.order_id} is {actual} in PostgreSQL,"
                f" cannot move it to {entry.status}",
                actual,
            )
        # Nothing of a refused change may stay, not even its entry.
        raise psycopg.Rollback(txn)
    return outcome


async def position(conn: Connection, mode: Mode) -> int:
    """A position at or after every commit made so far, in the listener's terms."""
    try:
        cur = await conn.execute(query(f"wb_position_{mode}"))
    except psycopg.errors.UndefinedTable:
        raise NoOutbox(
            "CDC_MODE=notify but the database has no cache_outbox: install it"
            " (cdc-listener install-notify) or set CDC_MODE to the listener's mode"
        ) from None
    row = await cur.fetchone()
    return int(row[0]) if row is not None and row[0] is not None else 0


async def listener_position(conn: Connection, mode: Mode, slot: str) -> int:
    """How far the listener has applied commits to Redis (0 when it has no slot yet)."""
    params = {"slot": slot} if mode == "logical" else None
    cur = await conn.execute(query(f"wb_listener_position_{mode}"), params)
    row = await cur.fetchone()
    return int(row[0]) if row is not None and row[0] is not None else 0
