"""A circuit breaker for Redis: after a failure, reads skip Redis for a while.

A down or slow Redis must not cost every request a socket timeout. The breaker opens on a
failure; after `retry_after` it lets a single request probe Redis (the others still skip
it) and closes when that probe succeeds.

A silent Redis (a flow a firewall forgot) times out on every connection opened before it
went silent, one call at a time: each failure calls `on_failure` (the app drops the idle
connections of its pool), so the connections the next requests get are new ones.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

log = logging.getLogger("api.redis")


class RedisBreaker:
    """Decides per request whether to use Redis; counts failures and bypassed reads."""

    def __init__(
        self,
        retry_after: float,
        clock: Callable[[], float] = time.monotonic,
        on_failure: Callable[[], None] | None = None,
    ) -> None:
        self.retry_after = retry_after
        self._clock = clock
        self._on_failure = on_failure
        self._open_until = 0.0
        self._tripped = False
        self.failures = 0
        self.bypassed = 0

    @property
    def state(self) -> str:
        """Open while Redis is skipped (or probed by one request), closed otherwise."""
        return "open" if self._tripped else "closed"

    def allow(self) -> bool:
        """May this request use Redis? While open, counts the ones that may not."""
        now = self._clock()
        if now < self._open_until:
            self.bypassed += 1
            return False
        if self._tripped:
            # Half-open: this request probes; everyone else keeps skipping until it reports.
            self._open_until = now + self.retry_after
        return True

    def failed(self, exc: BaseException) -> None:
        """Record a failed Redis call: trip (or stay tripped) for `retry_after` seconds."""
        self.failures += 1
        if not self._tripped:
            log.warning(
                "redis unavailable, serving from postgresql",
                extra={"retry_in": self.retry_after, "error": repr(exc)},
            )
        self._tripped = True
        self._open_until = self._clock() + self.retry_after
        if self._on_failure is not None:
            self._on_failure()

    def succeeded(self) -> None:
        """Record a successful Redis call: close the breaker."""
        if self._tripped:
            log.info("redis is back")
        self._tripped = False
        self._open_until = 0.0
