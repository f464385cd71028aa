"""`cdc-listener check`: compares every cached value with what PostgreSQL says now.

In the spirit of cache inspectors that run beside a cache kept by invalidations: the
checker SCANs the namespace, classifies each name through the key schema (fences, leases,
tag sets are skipped), recomputes each value with the very queries and
serialisers a fill uses (mescache.reads) and compares the bytes.

A value can be stale for a moment for a legitimate reason: the listener has not applied a
commit yet. So a mismatch is only a *suspect*: after a grace period the key is read again,
and it is reported stale only if its value, its fences and its token did not move
meanwhile (nothing invalidated or replaced it) and it still differs from a fresh read. A
key that expired, was invalidated or was refilled in between is not stale, and neither is
a family member whose fences moved since its fill: it is never served (mescache.store).

The comparison is table-driven: each kind of value the key schema knows
(mescache.keys.VALUE_KINDS) is recomputed by its view's loader in the catalogue
(mescache.views). A kind that the schema knows but that is no view is counted as
unchecked, never as stale.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis, RedisCluster

from mescache.db import Pool
from mescache.keys import COMPANION, KEPT, TAG_SET, UNKNOWN, KeyRef, KeySchema
from mescache.settings import CacheSettings
from mescache.store import Observed, RedisStore
from mescache.views import VIEWS


async def recompute(pool: Pool, settings: CacheSettings, ref: KeyRef) -> bytes | None:
    """A kind's value as PostgreSQL computes it now, by its view's own loader; None: the
    value should not exist (the API never caches a missing order, an unknown price)."""
    view = VIEWS[ref.kind]
    try:
        return await view.load(pool, settings, view.parse(ref.params))
    except view.absent:
        return None


# Kinds that hold no database value: a probe key is a marker the sampling mode sets.
NOT_COMPARED = frozenset({"probe"})

_CHUNK = 500  # keys read from Redis per round trip, and recomputed per wave
_DIFF_IDS = 5  # ids listed per category in a diff


@dataclass(frozen=True, slots=True)
class StaleKey:
    """A cached value that differs from what PostgreSQL says now."""

    name: str
    kind: str
    diff: str


@dataclass(frozen=True, slots=True)
class Compared:
    """One cached value as a read would serve it now, beside PostgreSQL's value now."""

    name: str
    kind: str
    seen: Observed
    truth: bytes | None

    @property
    def differs(self) -> bool:
        """Served and not what PostgreSQL says (a suspect until a grace period passes)."""
        return self.seen.served is not None and self.seen.served != self.truth


@dataclass(slots=True)
class CheckReport:
    """What one check found. `checked` counts compared values per kind."""

    checked: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)
    suspects: int = 0
    stale: list[StaleKey] = field(default_factory=list)
    grace: float = 0.0
    seconds: float = 0.0

    def as_json(self) -> dict[str, Any]:
        """The report as `cdc-listener check --json` prints it."""
        return {
            "checked": dict(self.checked),
            "skipped": dict(self.skipped),
            "suspects": self.suspects,
            "grace_s": self.grace,
            "stale": [{"key": s.name, "kind": s.kind, "diff": s.diff} for s in self.stale],
            "seconds": round(self.seconds, 3),
        }

    def summary(self) -> str:
        """The report as `cdc-listener check` prints it."""
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(self.checked.items())) or "none"
        skipped = ", ".join(f"{k} {n}" for k, n in sorted(self.skipped.items())) or "none"
        lines = [
            f"checked {sum(self.checked.values())} cached values ({kinds}) in {self.seconds:.1f}s",
            f"skipped: {skipped}",
            f"differing at first read: {self.suspects};"
            f" still stale after {self.grace:g}s: {len(self.stale)}",
        ]
        lines += [f"STALE {s.name} ({s.kind}): {s.diff}" for s in self.stale]
        return "\n".join(lines)


class Checker:
    """Compares a namespace's cached values with PostgreSQL."""

    def __init__(
        self,
        redis: Redis | RedisCluster,
        pool: Pool,
        keys: KeySchema,
        settings: CacheSettings,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.redis = redis
        self.store = RedisStore(redis)
        self.pool = pool
        self.keys = keys
        self.settings = settings
        self._sleep = sleep  # the grace period; tests act in it

    async def run(self, grace: float) -> CheckReport:
        """Compare every cached value with PostgreSQL, suspects again after `grace` seconds."""
        started = time.monotonic()
        report = CheckReport(grace=grace)
        refs: dict[str, KeyRef] = {}
        async for raw in self.redis.scan_iter(match=self.keys.namespace_pattern(), count=1000):
            name = raw.decode() if isinstance(raw, bytes) else str(raw)
            ref = self.keys.classify(name)
            if ref.kind in VIEWS:
                refs[name] = ref
            elif ref.kind in (COMPANION, TAG_SET, KEPT) or ref.kind in NOT_COMPARED:
                report.skipped[ref.kind] += 1
            else:
                report.skipped[UNKNOWN if ref.key is None else f"{ref.kind} (no comparison)"] += 1
        suspects: dict[str, tuple[Observed, bytes | None]] = {}
        names = list(refs)
        for start in range(0, len(names), _CHUNK):
            chunk = names[start : start + _CHUNK]
            seen = await self._observe(chunk, refs)
            truths = await self._recompute(chunk, refs)
            for name, first, truth in zip(chunk, seen, truths, strict=True):
                if first.served is None:
                    continue  # expired, invalidated or unreachable since the scan
                report.checked[refs[name].kind] += 1
                if first.served != truth:
                    suspects[name] = (first, truth)
        report.suspects = len(suspects)
        if suspects:
            report.stale = await self._confirm(suspects, refs, grace)
        report.seconds = time.monotonic() - started
        return report

    async def compare(self, names: list[str]) -> list[Compared]:
        """The named values compared once, as `run` does (names of a kind with no
        comparison are left out): the step the continuous sampler (cdc_listener.sampler)
        repeats, reading again after its grace period with the same rule as `_confirm`."""
        refs = {n: ref for n in names if (ref := self.keys.classify(n)).kind in VIEWS}
        chosen = list(refs)
        seen = await self._observe(chosen, refs)
        truths = await self._recompute(chosen, refs)
        return [
            Compared(n, refs[n].kind, s, t) for n, s, t in zip(chosen, seen, truths, strict=True)
        ]

    async def _confirm(
        self,
        suspects: dict[str, tuple[Observed, bytes | None]],
        refs: dict[str, KeyRef],
        grace: float,
    ) -> list[StaleKey]:
        """The suspects that nothing touched during `grace` and that still differ."""
        await self._sleep(grace)
        names = list(suspects)
        stale: list[StaleKey] = []
        for start in range(0, len(names), _CHUNK):
            chunk = names[start : start + _CHUNK]
            again = await self._observe(chunk, refs)
            unmoved = [n for n, seen in zip(chunk, again, strict=True) if seen == suspects[n][0]]
            truths = await self._recompute(unmoved, refs)
            for name, truth in zip(unmoved, truths, strict=True):
                cached = suspects[name][0].served
                if cached is not None and cached != truth:
                    stale.append(StaleKey(name, refs[name].kind, describe_diff(cached, truth)))
        return stale

    async def _observe(self, names: list[str], refs: dict[str, KeyRef]) -> list[Observed]:
        """Each value with its fences and token, each key read atomically (in its slot)."""
        if not names:
            return []
        found = [refs[n].key for n in names]
        return await self.store.observe([k for k in found if k is not None])

    async def _recompute(self, names: list[str], refs: dict[str, KeyRef]) -> list[bytes | None]:
        limit = asyncio.Semaphore(4)

        async def one(name: str) -> bytes | None:
            ref = refs[name]
            async with limit:
                return await recompute(self.pool, self.settings, ref)

        return list(await asyncio.gather(*(one(n) for n in names)))


def describe_diff(cached: bytes, truth: bytes | None) -> str:
    """A one-line account of how a cached value differs from PostgreSQL's."""
    if truth is None:
        return "cached, but PostgreSQL has no such row"
    try:
        old, new = json.loads(cached), json.loads(truth)
    except ValueError:
        return f"cached {len(cached)} bytes that are not JSON"
    if isinstance(old, dict) and isinstance(new, dict) and "items" in old and "items" in new:
        return _list_diff(old["items"], new["items"])
    if isinstance(old, dict) and isinstance(new, dict):
        return _row_diff(old, new) or "same fields, different bytes"
    return "values differ"


def _row_diff(old: dict[str, Any], new: dict[str, Any]) -> str:
    fields = sorted(set(old) | set(new))
    return ", ".join(
        f"{f}: cached {old.get(f)!r}, database {new.get(f)!r}"
        for f in fields
        if old.get(f) != new.get(f)
    )


def _list_diff(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> str:
    cached = {row.get("id"): row for row in old}
    fresh = {row.get("id"): row for row in new}
    parts = []
    only_db = [i for i in fresh if i not in cached]
    only_cache = [i for i in cached if i not in fresh]
    changed = [i for i in fresh if i in cached and fresh[i] != cached[i]]
    for label, ids in (
        ("missing from cache", only_db),
        ("only in cache", only_cache),
        ("changed", changed),
    ):
        if ids:
            more = f" (+{len(ids) - _DIFF_IDS} more)" if len(ids) > _DIFF_IDS else ""
            parts.append(f"{label}: ids {ids[:_DIFF_IDS]}{more}")
    if changed:
        first = changed[0]
        parts.append(f"id {first}: {_row_diff(cached[first], fresh[first])}")
    return "; ".join(parts) or "same rows, different order or bytes"
