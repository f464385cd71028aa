"""Price request counts, gathered in process and sent to Redis in batches.

Warm-up fills the most requested prices (mescache.warm), read from a sorted set that
`RedisStore.count` keeps bounded. A request is counted only once it is known to name a
price that exists (a valid cached value, or a computation that worked), so requests for
models that do not exist cost Redis nothing. Counts are statistics: they leave the read
path (a batch goes out a moment later, off the request), and a failed batch is dropped.

Counts decay, so warm-up follows current demand rather than last month's: every
PRICE_COUNTS_HALF_LIFE seconds every count is halved (and one that falls under
`FLOOR` is dropped, leaving its place to a newer price). Before sending a batch, a process
asks Redis (`CLAIM_HALVINGS`, on Redis's clock: one claim per half-life, whichever of the
API processes asks first) how many halvings are due since the mark
``stats:price-requests#halved``, and applies them in one scaling (`SCALE_COUNTS`). A
process that dies between the two loses a halving; a lost mark restarts the clock. Both
cost a missed halving at worst, never a wrong price.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable
from typing import Final

from mescache import scripts
from mescache.store import REDIS_FAILURES, Counter, RedisStore

log = logging.getLogger("api.demand")

FLUSH_AFTER: Final = 0.2  # seconds a count waits for others to share its round trip
_MAX_PENDING: Final = 10_000  # distinct counts held at most between two batches
FLOOR: Final = 0.5  # a count halved below this is dropped (asked for once, two halvings ago)
# How often, at most, one process asks whether a halving is due: a share of the half-life.
_ASK_SHARE: Final = 0.1


class Demand:
    """Counts waiting to be sent, and the one task that sends them."""

    def __init__(self, store: RedisStore, clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.pending: dict[Counter, int] = {}
        self._task: asyncio.Task[None] | None = None
        self._clock = clock
        self._mark: str | None = None
        self.half_life = 0.0
        self._asked_at = -math.inf
        self._claim = store.redis.register_script(scripts.CLAIM_HALVINGS)
        self._scale = store.redis.register_script(scripts.SCALE_COUNTS)

    def halve_every(self, mark: str, half_life: float) -> None:
        """Halve the counts every `half_life` seconds (0: never), with `mark` (KeySchema's
        ``price_requests_halved``) telling when they were last halved."""
        self._mark, self.half_life = mark, half_life

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
            await self._decay({c.zset for c in counts})
            await self.store.count(counts)
        except REDIS_FAILURES as exc:
            log.debug("price request counts dropped", extra={"error": str(exc)})

    async def _decay(self, zsets: set[str]) -> None:
        """Apply the halvings due (module docstring), asking at most every tenth of the
        half-life."""
        if self._mark is None or self.half_life <= 0:
            return
        now = self._clock()
        if now - self._asked_at < self.half_life * _ASK_SHARE:
            return
        self._asked_at = now
        due = int(await self._claim(keys=[self._mark], args=[max(1, round(self.half_life * 1000))]))
        if due < 1:
            return
        factor = 0.5 ** min(due, 1000)  # past a thousand halvings every count is gone anyway
        for zset in sorted(zsets):
            await self._scale(keys=[zset], args=[factor, FLOOR])
            log.info("price request counts halved", extra={"times": due, "key": zset})
