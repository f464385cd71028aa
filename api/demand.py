"""Price request counts, gathered in process and sent to Redis in batches.

Warm-up fills the most requested prices (mescache.warm), read from a sorted set that
`RedisStore.count` keeps bounded. A request is counted only once it is known to name a
price that exists (a valid cached value, or a computation that worked), so requests for
models that do not exist cost Redis nothing. Counts are statistics: they leave the read
path (a batch goes out a moment later, off the request), and a failed batch is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Final

from mescache.store import REDIS_FAILURES, Counter, RedisStore

log = logging.getLogger("api.demand")

FLUSH_AFTER: Final = 0.2  # seconds a count waits for others to share its round trip
_MAX_PENDING: Final = 10_000  # distinct counts held at most between two batches


class Demand:
    """Counts waiting to be sent, and the one task that sends them."""

    def __init__(self, store: RedisStore) -> None:
        self.store = store
        self.pending: dict[Counter, int] = {}
        self._task: asyncio.Task[None] | None = None

    def note(self, counter: Counter) -> None:
        """Count one request; the batch is sent within FLUSH_AFTER seconds."""
        if counter not in self.pending and len(self.pending) >= _MAX_PENDING:
            return  # Redis is not keeping up: drop rather than grow
        self.pending[counter] = self.pending.get(counter, 0) + 1
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._send_later())

    async def _send_later(self) -> None:
        try:
            await asyncio.sleep(FLUSH_AFTER)
            await self.flush()
        finally:
            self._task = None

    async def close(self) -> None:
        """Stop the pending batch's timer and send what is pending now."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush()

    async def flush(self) -> None:
        """Send what is pending now."""
        counts, self.pending = self.pending, {}
        if not counts:
            return
        try:
            await self.store.count(counts)
        except REDIS_FAILURES as exc:
            log.debug("price request counts dropped", extra={"error": str(exc)})
