"""The API process's short-lived memory of verified keys, so a request costs no query.

A presented key is hashed (SHA-256, about a microsecond) and looked up here first. Only on
a miss is PostgreSQL asked, and the answer, a principal or "no such active key", is kept
for `ttl` seconds. Consequences worth knowing:

- A revoked key keeps working for at most `ttl` seconds in each API process that verified
  it just before the revocation (`AUTH_CACHE_TTL`, 10 s by default); a restart forgets at once.
- A key created a moment after a process was shown that very key (and said no) works
  within `ttl` seconds too; with 256-bit random keys that only happens to guessers.
- Bad keys cannot hammer PostgreSQL: a bad key is remembered like a good one, concurrent
  requests with one key share one query, and at most `max_lookups` queries run at once
  in a process whatever the number of distinct keys presented; the rest queue.
- The memory is bounded (`max_entries`, least recently used out first), so a flood of
  random keys costs neither memory nor more than the bounded queries.

The clock and the lookup are injected, so the rules are unit-tested without servers.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from api.apikeys import Principal

Lookup = Callable[[bytes], Awaitable[Principal | None]]


@dataclass(frozen=True, slots=True)
class _Entry:
    principal: Principal | None
    fresh_until: float


class KeyVerifier:
    """Resolves a key's digest to its principal (or None), remembering answers for `ttl`."""

    def __init__(
        self,
        lookup: Lookup,
        ttl: float,
        max_entries: int = 10_000,
        max_lookups: int = 2,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lookup = lookup
        self.ttl = ttl
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[bytes, _Entry] = OrderedDict()
        self._inflight: dict[bytes, asyncio.Future[Principal | None]] = {}
        self._lookups = asyncio.Semaphore(max_lookups)
        self.queries = 0  # lookups that reached the database

    def remembered(self, digest: bytes) -> Principal | None:
        """The principal of a key verified within `ttl`, from memory alone; None when the
        key is not remembered, not fresh, or remembered as no active key."""
        entry = self._entries.get(digest)
        if entry is None or entry.fresh_until <= self._clock():
            return None
        self._entries.move_to_end(digest)
        return entry.principal

    async def verify(self, digest: bytes) -> Principal | None:
        """The principal of the key with this SHA-256 digest, None for no active key: from memory
        while fresh, else one lookup per digest at a time."""
        entry = self._entries.get(digest)
        if entry is not None:
            if entry.fresh_until > self._clock():
                self._entries.move_to_end(digest)
                return entry.principal
            del self._entries[digest]
        while (shared := self._inflight.get(digest)) is not None:
            try:
                return await asyncio.shield(shared)
            except asyncio.CancelledError:
                if not shared.cancelled():
                    raise  # this request itself was cancelled
                # The leading request went away (client gone): ask again.
        future: asyncio.Future[Principal | None] = asyncio.get_running_loop().create_future()
        self._inflight[digest] = future
        try:
            async with self._lookups:
                self.queries += 1
                principal = await self._lookup(digest)
        except BaseException as exc:
            # Waiters see the same failure (e.g. database down: 503), nothing is remembered.
            if isinstance(exc, Exception):
                future.set_exception(exc)
                future.exception()  # retrieved: waiters re-raise it, nobody else must
            else:
                future.cancel()
            raise
        else:
            future.set_result(principal)
            self._remember(digest, principal)
            return principal
        finally:
            del self._inflight[digest]

    def _remember(self, digest: bytes, principal: Principal | None) -> None:
        if self.ttl <= 0:
            return
        self._entries[digest] = _Entry(principal, self._clock() + self.ttl)
        self._entries.move_to_end(digest)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
