"""Settling: removing a committed change's pending overlay once the cache has caught up.

After the commit the overlay is sealed, not removed: until the listener has invalidated
``order:{id}`` for that commit (and run its delayed second pass), the cached row may still
hold the older status, and a read without the overlay would show it. So each sealed
overlay waits here with the position of its commit, and is removed (compare-and-delete on
its entry) once the listener's confirmed position has passed it: the slot's confirmed LSN
in logical mode, the oldest undrained outbox row in notify mode. Positions grow with each
commit, so the queue is in position order.

If the listener stops, sealed overlays stay until their TTL (twice TTL_ORDER, longer than
any cached row filled before the commit can live) and reads keep showing the committed
status meanwhile.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass

from mescache.pending import PendingWrites

log = logging.getLogger("writer.settle")


@dataclass(frozen=True, slots=True)
class Sealed:
    """An overlay written to PostgreSQL at `position`, waiting for the listener to pass it."""

    position: int
    order_id: int
    entry: str
    expires: float  # monotonic time after which Redis has dropped the overlay itself


class SettleQueue:
    """Sealed overlays in commit order, waiting for the listener."""

    def __init__(self, sealed_ttl: float) -> None:
        self.sealed_ttl = sealed_ttl
        self._queue: deque[Sealed] = deque()

    def __len__(self) -> int:
        return len(self._queue)

    def add(self, position: int, order_id: int, entry: str) -> None:
        """Queue an overlay sealed at `position` until the listener passes it or it expires."""
        self._queue.append(Sealed(position, order_id, entry, time.monotonic() + self.sealed_ttl))

    async def settle(self, pending: PendingWrites, listener_at: int) -> int:
        """Remove the overlays of every commit the listener has applied; returns how many."""
        removed = 0
        now = time.monotonic()
        while self._queue and (
            self._queue[0].position <= listener_at or self._queue[0].expires <= now
        ):
            sealed = self._queue[0]
            if sealed.position <= listener_at and await pending.settle(
                sealed.order_id, sealed.entry
            ):
                removed += 1
                log.debug("settled order_id=%d entry=%s", sealed.order_id, sealed.entry)
            self._queue.popleft()
        return removed
