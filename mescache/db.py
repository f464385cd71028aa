"""PostgreSQL connections shared by the API and the listener: the pool, and the liveness
bounds that keep a silent server (a forgotten flow, a hung host) from hanging a caller.

A silent server answers nothing and closes nothing, so a bound cannot wait for it:
:func:`sever` shuts the socket down, which ends every wait on it at once with an
OperationalError, and the pool discards the broken connection instead of reusing it.
(Cancelling the waiting task instead would make psycopg ask the server to cancel the
query and wait seconds more for an answer a silent server never sends.)
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, TypeAlias

import psycopg
from psycopg import AsyncConnection
from psycopg.conninfo import make_conninfo
from psycopg_pool import AsyncConnectionPool

Pool: TypeAlias = AsyncConnectionPool[AsyncConnection[Any]]


def sever(conn: AsyncConnection[Any]) -> None:
    """Shut the connection's socket down: every wait on it ends, the descriptor stays
    valid for the event loop until the connection is closed."""
    with (
        contextlib.suppress(OSError, psycopg.Error),
        socket.socket(fileno=os.dup(conn.pgconn.socket)) as dup,
    ):
        dup.shutdown(socket.SHUT_RDWR)


@asynccontextmanager
async def severed_after(conn: AsyncConnection[Any], seconds: float) -> AsyncIterator[None]:
    """Sever `conn` if the body takes longer than `seconds`: a query waiting on a silent
    server then fails at once (OperationalError), and the connection is good for nothing
    but closing."""
    timer = asyncio.get_running_loop().call_later(seconds, sever, conn)
    try:
        yield
    finally:
        timer.cancel()


class _BoundedPool(AsyncConnectionPool[AsyncConnection[Any]]):
    """A pool whose connections are severed when borrowed for longer than `deadline`
    seconds, and whose health check gets the same bound."""

    deadline = 0.0

    @asynccontextmanager
    # The parent's signature, timeout included (it bounds the wait for a free connection).
    async def connection(
        self,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> AsyncIterator[AsyncConnection[Any]]:
        async with super().connection(timeout) as conn, severed_after(conn, self.deadline):
            yield conn


async def _bounded_check(conn: AsyncConnection[Any], deadline: float) -> None:
    async with severed_after(conn, deadline):
        await AsyncConnectionPool.check_connection(conn)


# Reads are single statements: autocommit keeps no connection idle in a transaction.
# UTC sessions: timestamps serialize the same from a SELECT and from a row image in the
# change stream, whatever the server's TimeZone.
_SESSION: dict[str, Any] = {"autocommit": True, "options": "-c TimeZone=UTC"}


def liveness_params(seconds: float) -> dict[str, int]:
    """Libpq connection parameters that make the kernel give up on a silent peer within
    about `seconds`: TCP keepalives probe an idle connection, tcp_user_timeout bounds
    unacknowledged data, connect_timeout bounds the connect and handshake. They back up
    the processes' own liveness checks, which a peer whose kernel still acknowledges
    (a hung server, a proxy) escapes."""
    whole = max(1, round(seconds))
    return {
        "connect_timeout": max(2, whole),  # libpq's minimum
        "keepalives": 1,
        "keepalives_idle": max(1, whole // 2),
        "keepalives_interval": max(1, whole // 6),
        "keepalives_count": 3,
        "tcp_user_timeout": int(seconds * 1000),
    }


def with_liveness(conninfo: str, seconds: float, **extra: str) -> str:
    """`conninfo` with liveness_params(`seconds`) and `extra` parameters added."""
    return make_conninfo(conninfo, **liveness_params(seconds), **extra)


def make_pool(
    conninfo: str, min_size: int, max_size: int, name: str, deadline: float | None = None
) -> Pool:
    """An unopened pool: open it in the owner's start-up, close it at shutdown.

    With `deadline`, nothing waits on PostgreSQL longer than that: getting a connection,
    its health check, and each borrowing of it (a borrowed connection not given back in
    time is severed, so its query fails and the pool discards it); every connection also
    carries the kernel-level liveness_params. Without, a borrowing may take as long as it
    needs (the command-line tools' scans)."""
    if deadline is not None:
        pool = _BoundedPool(
            with_liveness(conninfo, deadline),
            min_size=min_size,
            max_size=max_size,
            open=False,
            name=name,
            kwargs=_SESSION,
            check=lambda conn: _bounded_check(conn, deadline),
            timeout=deadline,
            # Reconnection backs off exponentially without a cap until this runs out; then
            # the pool grows again on demand from a fresh first attempt. Short, so a server
            # silent for a while is used again soon after it answers.
            reconnect_timeout=max(5.0, 3 * deadline),
        )
        pool.deadline = deadline
        return pool
    return AsyncConnectionPool(
        conninfo,
        min_size=min_size,
        max_size=max_size,
        open=False,
        name=name,
        kwargs=_SESSION,
        # A PostgreSQL restart must not hand out dead connections.
        check=AsyncConnectionPool.check_connection,
        timeout=5.0,
    )
