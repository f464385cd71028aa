"""PostgreSQL connection pool construction shared by the API and the listener."""

from __future__ import annotations

from typing import Any, TypeAlias

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

Pool: TypeAlias = AsyncConnectionPool[AsyncConnection[Any]]


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
