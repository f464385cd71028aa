"""`cdc-listener check --sample N`: how long a committed change takes to leave the cache.

Method: the probe table `cache_probe` (mescache/sql/migrations/006_probe.sql) is published and
triggered like the orders, and the rule maps a change of row r to the key ``probe:{r}``.
For each sample the prober sets ``probe:{r}``, commits an UPDATE of row r in autocommit,
takes the time at which the commit is acknowledged, and polls Redis until the key is gone.
The delay is what a reader sees: from a write's acknowledgement to the moment the cache
can no longer hand out the old value. Samples run one at a time, paced at `rate`.

Bias, stated: the listener can receive a commit a moment before the writer's client gets
the acknowledgement, so a delay can be under-measured by about one local round trip
(~0.1 ms); the poll reads Redis back to back for the first 20 ms and every millisecond
after, so a delay is over-measured by at most about a millisecond past 20 ms. The probe
shares the change stream with every other writer, so it measures the real queueing of the
moment; it does not measure the listener's delayed second pass. A row is reused only after
it has been quiet for `settle` seconds, so the second pass of an earlier sample cannot
remove a later sample's key early. Two samplers at once on one database disturb each other.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, field
from typing import Any

import psycopg
from redis.asyncio import Redis

from mescache.keys import KeySchema
from mescache.queries import query

THRESHOLDS = (0.010, 0.100, 1.0)
_TIGHT = 0.020  # poll back to back this long, then every _POLL
_POLL = 0.001


@dataclass(slots=True)
class SampleReport:
    """Delays of the invalidations that arrived, and the samples that never did."""

    delays: list[float] = field(default_factory=list)
    missed: int = 0
    timeout: float = 0.0

    @property
    def count(self) -> int:
        """How many samples were taken, missed ones included."""
        return len(self.delays) + self.missed

    def within(self, seconds: float) -> float:
        """The share of all samples (missed ones included) invalidated within `seconds`."""
        return sum(d <= seconds for d in self.delays) / self.count if self.count else 0.0

    def percentile(self, q: float) -> float | None:
        """Nearest-rank percentile over all samples; None when it falls on a missed one."""
        if not self.count:
            return None
        rank = max(1, math.ceil(q * self.count))
        ordered = sorted(self.delays)
        return ordered[rank - 1] if rank <= len(ordered) else None

    def as_json(self) -> dict[str, Any]:
        """The report as `cdc-listener check --sample N --json` prints it."""

        def ms(value: float | None) -> float | None:
            return None if value is None else round(value * 1000, 3)

        return {
            "samples": self.count,
            "missed": self.missed,
            "timeout_s": self.timeout,
            "within": {f"{int(t * 1000)}ms": round(self.within(t), 4) for t in THRESHOLDS},
            "p50_ms": ms(self.percentile(0.5)),
            "p99_ms": ms(self.percentile(0.99)),
            "max_ms": ms(max(self.delays, default=None)),
        }

    def summary(self) -> str:
        """The report as `cdc-listener check --sample N` prints it."""
        data = self.as_json()

        def show(value: float | None) -> str:
            return "-" if value is None else f"{value:.2f} ms"

        shares = ", ".join(
            f"{self.within(t) * 100:.1f}% within {int(t * 1000)} ms" for t in THRESHOLDS
        )
        return (
            f"{self.count} invalidations sampled: {shares}\n"
            f"p50 {show(data['p50_ms'])}, p99 {show(data['p99_ms'])},"
            f" max {show(data['max_ms'])}\n"
            f"not invalidated within {self.timeout:g}s: {self.missed}"
        )


class Prober:
    """Times commit → key gone through the probe table, one sample at a time."""

    def __init__(self, database_url: str, redis: Redis, keys: KeySchema) -> None:
        self.database_url = database_url
        self.redis = redis
        self.keys = keys

    async def sample(
        self, count: int, rate: float, wait_for: float, settle: float = 2.0
    ) -> SampleReport:
        """Take `count` samples at `rate` per second, each waiting up to `wait_for` seconds for the
        invalidation."""
        report = SampleReport(timeout=wait_for)
        rows = max(2, math.ceil(rate * settle) + 1)
        async with await psycopg.AsyncConnection.connect(
            self.database_url, autocommit=True
        ) as conn:
            await conn.execute(query("probe_rows"), {"rows": rows})
            started = time.monotonic()
            for i in range(count):
                await _sleep_until(started + i / rate)
                delay = await self._one(conn, 1 + i % rows, wait_for, settle)
                if delay is None:
                    report.missed += 1
                else:
                    report.delays.append(delay)
        return report

    async def _one(
        self, conn: psycopg.AsyncConnection[Any], row: int, wait_for: float, settle: float
    ) -> float | None:
        quiet = await (await conn.execute(query("probe_quiet_for"), {"id": row})).fetchone()
        if quiet is not None and quiet[0] < settle:
            await asyncio.sleep(settle - quiet[0])
        name = self.keys.probe(row).name
        await self.redis.set(name, b"probe", px=max(1, round((wait_for + settle) * 1000)))
        await conn.execute(query("probe_touch"), {"id": row})
        acknowledged = time.monotonic()
        deadline = acknowledged + wait_for
        while await self.redis.exists(name):
            now = time.monotonic()
            if now >= deadline:
                await self.redis.delete(name)
                return None
            if now - acknowledged > _TIGHT:
                await asyncio.sleep(_POLL)
        return time.monotonic() - acknowledged


async def _sleep_until(moment: float) -> None:
    delay = moment - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)
