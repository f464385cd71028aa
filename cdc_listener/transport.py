"""A small asyncio transport for the streaming replication protocol over psycopg's pgconn.

psycopg has no replication API, but a connection opened with ``replication="database"``
accepts START_REPLICATION and its pgconn exposes the CopyBoth primitives. Waiting is done
with the event loop's reader/writer callbacks; `get_copy_data` is only ever called in its
non-blocking form (the blocking one would hold the GIL). Framing lives in
cdc_listener.replication; this module only moves bytes.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import psycopg
from psycopg import pq
from psycopg.rows import TupleRow

from cdc_listener.errors import SlotInUse, StreamEnded, StreamRefused, StreamSilent
from mescache.db import with_liveness

_OBJECT_IN_USE = b"55006"


class ReplicationStream:
    """One replication connection in CopyBoth mode."""

    def __init__(self, conn: psycopg.AsyncConnection[TupleRow], liveness: float) -> None:
        self._conn = conn
        self._pg = conn.pgconn
        self._pg.nonblocking = 1
        self._liveness = liveness

    @classmethod
    async def connect(
        cls, conninfo: str, application_name: str, liveness: float
    ) -> ReplicationStream:
        """`application_name` names this connection's walsender on the server (unique per
        connection, so the listener can find it again); `liveness` bounds every wait for
        the server, here and in the kernel (keepalives, tcp_user_timeout)."""
        conn = await psycopg.AsyncConnection.connect(
            with_liveness(conninfo, liveness, application_name=application_name),
            replication="database",
            autocommit=True,
        )
        return cls(conn, liveness)

    async def start(self, slot: str, publication: str) -> None:
        """START_REPLICATION from the slot's confirmed position (0/0 means "the slot's")."""
        # Replication commands take no parameters; both names are validated identifiers.
        command = (
            f"START_REPLICATION SLOT {slot} LOGICAL 0/0 "
            f"(proto_version '1', publication_names '{publication}')"
        )
        self._pg.send_query(command.encode())
        await self._flush()
        deadline = time.monotonic() + self._liveness
        while True:
            self._pg.consume_input()
            if not self._pg.is_busy():
                break
            if time.monotonic() >= deadline:
                raise StreamSilent(f"no answer to START_REPLICATION in {self._liveness:g} s")
            await self._wait(readable=True, within=deadline - time.monotonic())
        result = self._pg.get_result()
        if result is None:
            raise StreamEnded("no answer to START_REPLICATION")
        if result.status == pq.ExecStatus.COPY_BOTH:
            return
        message = result.get_error_message() or self._pg.get_error_message()
        if result.error_field(pq.DiagnosticField.SQLSTATE) == _OBJECT_IN_USE:
            raise SlotInUse(message.strip())
        raise StreamRefused(f"START_REPLICATION failed: {message.strip()}")

    def read_nowait(self) -> memoryview | None:
        """The next CopyData body if one is already here, else None."""
        size, data = self._pg.get_copy_data(1)
        if size == 0:
            self._pg.consume_input()
            size, data = self._pg.get_copy_data(1)
        if size > 0:
            return data
        if size == 0:
            return None
        result = self._pg.get_result()
        detail = result.get_error_message() if result is not None else ""
        raise StreamEnded(
            f"replication stream ended: {detail or self._pg.get_error_message()}".strip()
        )

    async def read(self, within: float, *interrupts: asyncio.Future[Any]) -> memoryview | None:
        """The next CopyData body, or None if nothing arrived `within` seconds or one of
        `interrupts` completed first."""
        data = self.read_nowait()
        if data is not None:
            return data
        await self._wait(readable=True, within=within, interrupts=interrupts)
        return self.read_nowait()

    async def send(self, body: bytes) -> None:
        """Send one CopyData message (a status update) and flush it."""
        if self._pg.put_copy_data(body) != 1:
            raise StreamEnded(f"could not send: {self._pg.get_error_message()}")
        await self._flush()

    async def close(self) -> None:
        """Close the replication connection."""
        await self._conn.close()

    async def _flush(self) -> None:
        """Until libpq's output buffer is on the wire. A peer that stopped reading fills
        the socket's buffer: past the liveness bound it counts as gone."""
        deadline = time.monotonic() + self._liveness
        while self._pg.flush() == 1:
            if time.monotonic() >= deadline:
                raise StreamSilent(f"could not send for {self._liveness:g} s")
            await self._wait(readable=False, within=deadline - time.monotonic())

    async def _wait(
        self,
        readable: bool,
        within: float | None,
        interrupts: tuple[asyncio.Future[Any], ...] = (),
    ) -> None:
        """Until the socket is ready, `within` seconds passed or one of `interrupts`
        completed.
        Plain loop callbacks, no wait_for or extra tasks: this runs once or more for every
        commit, and its cost is a share of the invalidation lag."""
        loop = asyncio.get_running_loop()
        ready = loop.create_future()
        fd = self._pg.socket

        def wake(*_: object) -> None:
            if not ready.done():
                ready.set_result(None)

        if readable:
            loop.add_reader(fd, wake)
        else:
            loop.add_writer(fd, wake)
        timer = loop.call_later(within, wake) if within is not None else None
        for interrupt in interrupts:
            interrupt.add_done_callback(wake)
        try:
            await ready
        finally:
            if readable:
                loop.remove_reader(fd)
            else:
                loop.remove_writer(fd)
            if timer is not None:
                timer.cancel()
            for interrupt in interrupts:
                interrupt.remove_done_callback(wake)
