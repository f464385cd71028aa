"""A per-process copy of large cached values, each tagged with the fence token under which
Redis held it, bounded in total bytes (least recently used first out).

Why serving it is safe: every writer of a cached value moves one part of the token (one of
the key's fences: invalidate, family invalidation, refresh; a flush, an eviction or a
restart deletes the fence, and a new one starts from the server clock, never at a value it
held before: mescache.store). So while the token has not moved, Redis holds a value
written under that same token, which is what the near copy is. ReadThrough never serves an
entry without first asking Redis, in one round trip, whether the token still stands and
the value still exists (mescache.store ``read``); with Redis down nothing here is served.
An entry also lapses no later than Redis's copy it was validated against (its PTTL, never
extended), so the TTL safety net holds; and a value is kept only if its TTL is no longer
than a fence's, so an expired fence cannot bring an old token back while the copy lives.

Two fills under one token (a lease that expired under a slow filler) may each leave their
own copy; both were read from PostgreSQL after the last invalidation, and the next
invalidation drops both.

Tracked hits (``NEAR_CACHE=tracked``, api.tracking): with an invalidation channel, a copy
whose last read went through the channel's tracked client is marked with the channel's
generation and served with no round trip at all while that generation is proven; a
message naming one of the keys its read touched (value, fences, token) drops it, a flush
drops every copy. Unmarked copies, or any copy while the channel is not proven, take the
checked path above.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mescache.keys import CacheKey

if TYPE_CHECKING:
    from api.tracking import InvalidationChannel, Watch

_WANTED_NAMES = 4096  # names of values seen large without a token, remembered at most


@dataclass(slots=True)
class NearEntry:
    """A value kept in process: its token in Redis, its bytes, and until when it may be kept."""

    token: bytes
    body: bytes
    deadline: float  # time.monotonic() deadline
    gen: int = 0  # the channel generation that tracks it; 0: served only checked
    names: tuple[str, ...] = field(default=())  # the Redis keys its validity rests on


def read_names(key: CacheKey) -> tuple[str, ...]:
    """The keys the read script reads for `key` (mescache.store ``read``): the ones Redis
    tracks for a copy read through the tracked client."""
    return (key.name, *key.fences, *((key.token,) if key.token else ()))


@dataclass(slots=True)
class NearCounts:
    """Near hits by how they were answered, and tracked copies that had to be checked."""

    tracked: int = 0
    checked: int = 0
    fallbacks: int = 0


class NearCache:
    """Large values kept in process, within `max_bytes` (0 disables it)."""

    def __init__(
        self, min_bytes: int, max_bytes: int, channel: InvalidationChannel | None = None
    ) -> None:
        self.min_bytes = min_bytes
        self.max_bytes = max_bytes
        self.size = 0
        self.channel = channel
        self.counts = NearCounts()
        self._entries: OrderedDict[str, NearEntry] = OrderedDict()
        self._by_key: dict[str, set[str]] = {}  # a tracked Redis key: the copies resting on it
        if channel is not None:
            channel.listener = self.invalidated
        # Keys whose value was seen large through a plain GET (which carries no token):
        # their next read asks Redis for the token too, so they can be kept.
        self._wanted: OrderedDict[str, None] = OrderedDict()

    @property
    def enabled(self) -> bool:
        """Whether values are kept in process at all (a non-zero size)."""
        return self.max_bytes > 0

    def __len__(self) -> int:
        return len(self._entries)

    async def start(self) -> None:
        """Start the invalidation channel, if this copy has one (tracked hits)."""
        if self.channel is not None:
            await self.channel.start()

    async def close(self) -> None:
        """Stop the invalidation channel, if any."""
        if self.channel is not None:
            await self.channel.close()

    def wants(self, name: str) -> bool:
        """Whether reads of this key should go through the validating script."""
        return self.enabled and (name in self._entries or name in self._wanted)

    def note_large(self, name: str, body: bytes) -> None:
        """A value read without its token: if large, fetch it with its token next time."""
        if self.enabled and self.min_bytes <= len(body) <= self.max_bytes:
            self._wanted[name] = None
            self._wanted.move_to_end(name)
            while len(self._wanted) > _WANTED_NAMES:
                self._wanted.popitem(last=False)

    def lookup(self, name: str) -> NearEntry | None:
        """The live entry of a key (not yet validated), or None."""
        entry = self._entries.get(name)
        if entry is None:
            return None
        if entry.deadline <= time.monotonic():
            self.drop(name)
            return None
        self._entries.move_to_end(name)
        return entry

    def tracked_hit(self, name: str) -> bytes | None:
        """The body of a copy the proven channel tracks (no round trip), or None: then the
        read takes the checked path."""
        if self.channel is None:
            return None
        entry = self._entries.get(name)
        if entry is None or not entry.gen:
            return None
        if not self.channel.proven(entry.gen):
            self.counts.fallbacks += 1
            return None
        entry = self.lookup(name)
        if entry is None:
            return None
        self.counts.tracked += 1
        return entry.body

    def watch(self, name: str) -> Watch | None:
        """Taken before a near read of key `name` is sent (api.tracking): where to send it,
        and what decides whether its answer may be marked tracked."""
        return self.channel.watch(name) if self.channel is not None else None

    def confirm(
        self, name: str, pttl_ms: int, *, watch: Watch | None = None, names: tuple[str, ...] = ()
    ) -> None:
        """Redis confirmed the token: the entry lives no longer than Redis's copy (and is
        tracked, if the read went through the channel and nothing it read changed since)."""
        entry = self._entries.get(name)
        if entry is not None:
            self.counts.checked += 1
            entry.deadline = min(entry.deadline, time.monotonic() + pttl_ms / 1000)
            self._mark(name, entry, watch, names)

    def keep(
        self,
        name: str,
        token: bytes,
        body: bytes,
        deadline: float,
        *,
        watch: Watch | None = None,
        names: tuple[str, ...] = (),
    ) -> None:
        """Keep a value Redis held under `token` until `deadline` (monotonic), if it is large
        enough and fits."""
        self.drop(name)
        if not token or not self.enabled or not self.min_bytes <= len(body) <= self.max_bytes:
            return
        self._wanted.pop(name, None)
        entry = NearEntry(token, body, deadline)
        self._entries[name] = entry
        self.size += len(body)
        self._mark(name, entry, watch, names)
        while self.size > self.max_bytes:
            self.drop(next(iter(self._entries)))

    def _mark(
        self, name: str, entry: NearEntry, watch: Watch | None, names: tuple[str, ...]
    ) -> None:
        self._unindex(name, entry)
        if self.channel is None or watch is None or not self.channel.covers(watch, names):
            entry.gen = 0
            return
        entry.gen = watch.gen
        entry.names = names
        for key in names:
            self._by_key.setdefault(key, set()).add(name)

    def invalidated(self, names: frozenset[str] | None) -> None:
        """The channel's message: these Redis keys changed (None: a flush, all of them)."""
        if names is None:
            for name in list(self._entries):
                self.drop(name)
            return
        for key in names:
            for name in list(self._by_key.get(key, ())):
                self.drop(name)

    def drop(self, name: str) -> None:
        """Forget the copy of one key, if any."""
        entry = self._entries.pop(name, None)
        if entry is not None:
            self.size -= len(entry.body)
            self._unindex(name, entry)

    def _unindex(self, name: str, entry: NearEntry) -> None:
        for key in entry.names:
            copies = self._by_key.get(key)
            if copies is not None:
                copies.discard(name)
                if not copies:
                    del self._by_key[key]
        entry.names = ()
