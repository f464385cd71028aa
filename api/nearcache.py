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
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass

_WANTED_NAMES = 4096  # names of values seen large without a token, remembered at most


@dataclass(slots=True)
class NearEntry:
    """A value kept in process: its token in Redis, its bytes, and until when it may be kept."""

    token: bytes
    body: bytes
    deadline: float  # time.monotonic() deadline


class NearCache:
    """Large values kept in process, within `max_bytes` (0 disables it)."""

    def __init__(self, min_bytes: int, max_bytes: int) -> None:
        self.min_bytes = min_bytes
        self.max_bytes = max_bytes
        self.size = 0
        self._entries: OrderedDict[str, NearEntry] = OrderedDict()
        # Keys whose value was seen large through a plain GET (which carries no token):
        # their next read asks Redis for the token too, so they can be kept.
        self._wanted: OrderedDict[str, None] = OrderedDict()

    @property
    def enabled(self) -> bool:
        """Whether values are kept in process at all (a non-zero size)."""
        return self.max_bytes > 0

    def __len__(self) -> int:
        return len(self._entries)

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

    def confirm(self, name: str, pttl_ms: int) -> None:
        """Redis confirmed the token: the entry lives no longer than Redis's copy."""
        entry = self._entries.get(name)
        if entry is not None:
            entry.deadline = min(entry.deadline, time.monotonic() + pttl_ms / 1000)

    def keep(self, name: str, token: bytes, body: bytes, deadline: float) -> None:
        """Keep a value Redis held under `token` until `deadline` (monotonic), if it is large
        enough and fits."""
        self.drop(name)
        if not token or not self.enabled or not self.min_bytes <= len(body) <= self.max_bytes:
            return
        self._wanted.pop(name, None)
        self._entries[name] = NearEntry(token, body, deadline)
        self.size += len(body)
        while self.size > self.max_bytes:
            _, evicted = self._entries.popitem(last=False)
            self.size -= len(evicted.body)

    def drop(self, name: str) -> None:
        """Forget the copy of one key, if any."""
        entry = self._entries.pop(name, None)
        if entry is not None:
            self.size -= len(entry.body)
