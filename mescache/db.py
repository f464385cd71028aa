"""PostgreSQL connection pool construction shared by the API and the listener."""

from __future__ import annotations

from typing import Any, TypeAlias

from psycopg import AsyncConnection
from psycopg.conninfo import make_conninfo
from psycopg_pool import AsyncConnectionPool

Pool: TypeAlias = AsyncConnectionPool[AsyncConnection[Any]]


def liveness_params(seconds: float) -> dict[str, int]:
    """libpq connection parameters that make the kernel give up on a silent peer within
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


def make_pool(conninfo: str, min_size: int, max_size: int, name: str) -> Pool:
    """An unopened pool: open it in the owner's start-up, close it at shutdown."""
    return AsyncConnectionPool(
        conninfo,
        min_size=min_size,
        max_size=max_size,
        open=False,
        name=name,
        # Reads are single statements: autocommit keeps no connection idle in a transaction.
        # UTC sessions: timestamps serialize the same from a SELECT and from a row image
        # in the change stream, whatever the server's TimeZone.
        kwargs={"autocommit": True, "options": "-c TimeZone=UTC"},
        # A PostgreSQL restart must not hand out dead connections.
        check=AsyncConnectionPool.check_connection,
        timeout=5.0,
    )
