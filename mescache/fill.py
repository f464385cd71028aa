"""The fenced fill: how a missing value gets from PostgreSQL into Redis, for the API's
misses and warm-up alike.

1. Take the key's lease and read its fences (`begin_fill`); a value found meanwhile is
   the answer. Without the lease, poll for the holder's value until `wait` runs out.
2. Run the loader (the SELECT and its serialiser).
3. Store only if no fence moved or vanished since step 1 (`finish_fill`): an
   invalidation that happened during the SELECT wins, so the old row is never put back.

A loader that fails gives the lease back. Redis failing is the caller's to decide: with
`failed` given, the fill reports the error to it and goes on without Redis (loads, or
returns what it loaded unstored); without it, the error propagates.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from mescache.keys import CacheKey
from mescache.store import REDIS_FAILURES, FillTicket, RedisStore

Loader = Callable[[], Awaitable[bytes]]
# cached: Redis had the value; busy: another filler holds the lease (nothing loaded unless
# asked); filled: loaded and stored; fenced: loaded, and an invalidation refused the store;
# unleased: loaded without the lease, not stored; unstored: Redis failed, not stored.
FillOutcome = Literal["cached", "busy", "filled", "fenced", "unleased", "unstored"]

POLL = 0.01  # how often a waiting filler looks for the leader's value, s


@dataclass(frozen=True, slots=True)
class Filled:
    """How one fill ended: the body to answer with (None only when busy and not loaded),
    and for a stored value the fence it was checked against and when the store began."""

    outcome: FillOutcome
    body: bytes | None
    fence: bytes = b""
    stored_at: float = 0.0  # time.monotonic() just before the store


async def fenced_fill(
    store: RedisStore,
    key: CacheKey,
    ttl: float,
    load: Loader,
    lease: float,
    *,
    wait: float = 0.0,
    load_when_busy: bool = False,
    failed: Callable[[Exception], None] | None = None,
) -> Filled:
    """Fill `key` from `load` under its lease and fences (see the module docstring)."""
    token = secrets.token_hex(8)
    try:
        ticket = await _lead_or_wait(store, key, lease, token, wait)
    except REDIS_FAILURES as exc:
        if failed is None:
            raise
        failed(exc)
        return Filled("unstored", await load())
    if ticket.value is not None:
        return Filled("cached", ticket.value)
    if not ticket.leased and not load_when_busy:
        return Filled("busy", None)
    try:
        body = await load()
    except BaseException:
        if ticket.leased:
            await _release(store, key, token, failed)
        raise
    if not ticket.leased:
        return Filled("unleased", body)
    return await _store(store, key, ttl, body, fence=ticket.fence, token=token, failed=failed)


async def _store(
    store: RedisStore,
    key: CacheKey,
    ttl: float,
    body: bytes,
    *,
    fence: bytes,
    token: str,
    failed: Callable[[Exception], None] | None,
) -> Filled:
    """Store what was loaded, unless a fence moved since `begin_fill` read `fence`."""
    started = time.monotonic()
    try:
        stored = await store.finish_fill(key, body, ttl, fence, token)
    except REDIS_FAILURES as exc:
        if failed is None:
            raise
        failed(exc)
        return Filled("unstored", body)
    return Filled("filled", body, fence, started) if stored else Filled("fenced", body)


async def _lead_or_wait(
    store: RedisStore, key: CacheKey, lease: float, token: str, wait: float
) -> FillTicket:
    """Take the lease, or wait for its holder's value; after `wait`, go it alone."""
    deadline = time.monotonic() + wait
    while True:
        ticket = await store.begin_fill(key, lease, token)
        if ticket.value is not None or ticket.leased or time.monotonic() >= deadline:
            return ticket
        await asyncio.sleep(POLL)


async def _release(
    store: RedisStore, key: CacheKey, token: str, failed: Callable[[Exception], None] | None
) -> None:
    """Give the lease back so the next reader need not wait it out."""
    try:
        await store.release(key, token)
    except REDIS_FAILURES as exc:
        if failed is None:
            raise
        failed(exc)
