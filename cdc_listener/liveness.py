"""Liveness bounds of the listener's connections to PostgreSQL.

A peer that dies loudly (RST, FIN, a refused connect) ends a connection at once; one that
goes silent (a firewall or NAT that forgot the flow, a hung server) leaves it open with
nothing arriving and nothing sent answered, and the kernel may take a quarter of an hour
to notice. Every wait on the server is therefore bounded by CDC_LIVENESS_TIMEOUT: the
stream asks for replies when it hears nothing (cdc_listener.logical), ordinary queries
run under :func:`bounded`, and every connection carries the kernel-level backups of
mescache.db.liveness_params.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg

from cdc_listener.errors import StreamSilent
from mescache.db import sever

# The stream asks for a reply after this share of the bound without hearing anything, and
# again after each further share: a healthy server answers within milliseconds, so two
# unanswered requests before the bound runs out mean a dead connection, not a slow one.
PROBE_SHARE = 1 / 3


@asynccontextmanager
async def bounded(
    seconds: float, what: str, conn: psycopg.AsyncConnection[Any]
) -> AsyncIterator[None]:
    """Raise StreamSilent (retryable) if the body, working on `conn`, takes longer than
    `seconds`. The connection is severed rather than the task cancelled: cancelling a
    query makes psycopg ask the server to cancel it and wait seconds more for an answer
    that a silent server never sends; a severed socket ends the wait at once."""
    fired = False  # severed by us: the error it causes means "silent"

    def expire() -> None:
        nonlocal fired
        fired = True
        sever(conn)

    timer = asyncio.get_running_loop().call_later(seconds, expire)
    try:
        yield
    except psycopg.OperationalError:
        if fired:
            raise StreamSilent(f"{what}: no answer from the server in {seconds:g} s") from None
        raise
    finally:
        timer.cancel()
    if fired:
        raise StreamSilent(f"{what}: no answer from the server in {seconds:g} s")


def application_name(slot: str) -> str:
    """A name unique to one connection, so its backend can be found on the server again."""
    return f"cdc-listener {slot} {secrets.token_hex(6)}"
