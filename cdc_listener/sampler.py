"""The consistency sampler: staleness as a service level, measured all the time.

`cdc-listener check` answers "is anything stale now?" when someone asks. The sampler keeps
asking, a few values at a time: each tick compares one cached value with PostgreSQL, with
the comparison `check` makes (cdc_listener.check.Checker.compare) and its rule (a value
that differs is only a suspect; it is stale only if, read again after CDC_CHECK_GRACE, it
did not move and still differs). Half the ticks take a value the listener recently
invalidated or refreshed (its batch announcement, read CDC_CHECK_GRACE after it: the keys
most likely to show a lost or late invalidation), half a random cached value (a random
SCAN cursor; on a Redis Cluster on a randomly chosen master, since every master holds its
own share of the keys). A tick makes at most one comparison (at most three small Redis
round trips and one query), and ticks run CDC_SAMPLE_RATE times a second: the cost is
bounded by the setting, whatever the traffic.

It runs inside the listener rather than as a process of its own because the listener
already knows what it invalidated, at the moment it did (the announcement, in process: no
pub/sub subscription that could miss messages), and already runs where operators scrape
(`/metrics`) and alert. Only a streaming listener samples: a standby stays idle, so N
listeners cost what one does.

Figures (cdc_listener.metrics): checks and stale samples by source, distinct stale values
by kind, the staleness age and, through the probe table (cdc_listener.lag_probe, one sample
every CDC_PROBE_INTERVAL), the invalidation delay end to end. The *nines* over the last
CDC_SAMPLE_WINDOW seconds::

    nines = log10(checks / max(stale, 1))      (null when checks = 0)

which is -log10(stale / checks) when something was stale, and is capped at log10(checks)
when nothing was: a sample of N checks cannot show more than log10(N) nines. The figure is
written every second to ``stats:consistency`` (mescache.keys) with a short TTL, for the
API's ``/stats``; it vanishes when no listener samples.

A stale find is logged once per key and value (the key, both values' lengths and short
hashes, the fences and token it was served under, never the values themselves, which
carry customers' data: `cdc-listener check` shows the diff).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import math
import random
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final, TypeVar, cast

import psycopg
from redis.asyncio import Redis, RedisCluster

from cdc_listener.apply import Batch
from cdc_listener.check import Checker, Compared
from cdc_listener.lag_probe import Prober
from cdc_listener.metrics import ListenerMetrics
from mescache.db import Pool
from mescache.errors import MesCacheError
from mescache.keys import KeySchema
from mescache.redisconn import is_cluster
from mescache.settings import CacheSettings
from mescache.store import REDIS_FAILURES

log = logging.getLogger("cdc_listener.sampler")

T = TypeVar("T", int, str)

PER_BATCH: Final = 3  # invalidated names taken from one announced batch, at most
QUEUED: Final = 512  # invalidated names waiting for their grace period, at most (oldest go)
SCAN_COUNT: Final = 32  # names one random SCAN step looks at
PUBLISH_EVERY: Final = 1.0  # s between two writes of the figure for /stats
FIGURE_TTL: Final = 30.0  # s the figure lives unless rewritten
PROBE_TIMEOUT: Final = 5.0  # s after which a probe's invalidation counts as missed
_LOGGED: Final = 10_000  # stale values remembered so each is logged once


def nines(checks: int, stale: int) -> float | None:
    """log10(checks / max(stale, 1)); None with no check (the module docstring says why)."""
    if checks <= 0:
        return None
    return math.log10(checks / max(stale, 1))


class Window:
    """Checks and stale samples over the last `seconds` (one timestamp per event)."""

    def __init__(self, seconds: float, clock: Callable[[], float]) -> None:
        self.seconds = seconds
        self._clock = clock
        self._checks: deque[float] = deque()
        self._stale: deque[float] = deque()

    def checked(self) -> None:
        """Count one comparison, now."""
        self._checks.append(self._clock())

    def found_stale(self) -> None:
        """Count one stale find, now."""
        self._stale.append(self._clock())

    def counts(self) -> tuple[int, int]:
        """(checks, stale) in the window ending now."""
        since = self._clock() - self.seconds
        for events in (self._checks, self._stale):
            while events and events[0] < since:
                events.popleft()
        return len(self._checks), len(self._stale)

    def figure(self) -> dict[str, float | int | None]:
        """What `/stats` shows as ``consistency``."""
        checks, stale = self.counts()
        found = nines(checks, stale)
        return {
            "nines": None if found is None else round(found, 3),
            "checks": checks,
            "stale": stale,
            "window_s": round(self.seconds),
        }


@dataclass(frozen=True, slots=True)
class _Candidate:
    """A recently invalidated value to look at once its grace period is over."""

    due: float  # monotonic
    since: float  # when its batch was announced: the staleness age counts from there
    name: str | None = None  # a value's name, or
    family: str | None = None  # a family's tag set, to take one member of


@dataclass(frozen=True, slots=True)
class _Suspect:
    """A value that differed at first read, to read again once its grace is over."""

    due: float
    since: float
    source: str
    first: Compared


class Sampler:
    """Compares one cached value per tick with PostgreSQL; see the module docstring."""

    def __init__(
        self,
        redis: Redis | RedisCluster,
        pool: Pool,
        keys: KeySchema,
        settings: CacheSettings,
        metrics: ListenerMetrics,
        *,
        rate: float,
        grace: float,
        window: float,
        random_share: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.metrics = metrics
        self.checker = Checker(redis, pool, keys, settings)
        self.rate = rate
        self.grace = grace
        self.random_share = random_share
        self.window = Window(window, clock)
        self._clock = clock
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._invalidated: deque[_Candidate] = deque(maxlen=QUEUED)
        self._suspects: deque[_Suspect] = deque()
        self._logged: OrderedDict[tuple[str, bytes], None] = OrderedDict()
        self._credit = 0.0
        self.ticks = 0

    def invalidated(self, batch: Batch) -> None:
        """Called with each announced batch (cdc_listener.publish): a few of the values it
        invalidated or refreshed are looked at after the grace period."""
        touched, keys = batch.touched, self.keys
        names = [keys.order(i).name for i in self._some(touched.orders)]
        if touched.dashboard:
            names.append(keys.dashboard().name)
        if touched.newest:
            names.append(keys.new_orders().name)
        families = [keys.status_family(s) for s in self._some(touched.statuses)]
        families += [keys.price_family_of_model(m) for m in self._some(touched.price_models)]
        now = self._clock()
        due = now + self.grace
        picked = [_Candidate(due, now, name=n) for n in names]
        picked += [_Candidate(due, now, family=f) for f in families]
        self._invalidated.extend(self._rng.sample(picked, min(PER_BATCH, len(picked))))

    def _some(self, items: set[T]) -> list[T]:
        chosen = sorted(items)  # sorted: a seeded test picks the same ones every run
        return chosen if len(chosen) <= PER_BATCH else self._rng.sample(chosen, PER_BATCH)

    async def tick(self) -> None:
        """One step: a suspect's second read when one is due, else one comparison."""
        self.ticks += 1
        now = self._clock()
        if self._suspects and self._suspects[0].due <= now:
            await self._confirm(self._suspects.popleft())
            return
        due = bool(self._invalidated) and self._invalidated[0].due <= now
        # While invalidated values wait, `random_share` of the ticks still take a random
        # one (a credit, not a coin: the same ticks go the same way every run).
        self._credit += self.random_share
        if due and self._credit < 1.0:
            candidate = self._invalidated.popleft()
            name = candidate.name or await self._member(candidate.family or "")
            since, source = candidate.since, "invalidated"
        else:
            self._credit = max(0.0, self._credit - 1.0)
            name, since, source = await self.random_value_name(), now, "random"
        if name is None:
            return
        compared = await self.checker.compare([name])
        if not compared or compared[0].seen.served is None:
            return  # expired or invalidated meanwhile, or a kind with no comparison
        self.metrics.consistency_checks[source] += 1
        self.window.checked()
        if compared[0].differs:
            self._suspects.append(_Suspect(now + self.grace, since, source, compared[0]))

    async def _confirm(self, suspect: _Suspect) -> None:
        """Stale only if nothing moved the value, its fences or its token meanwhile and it
        still differs from PostgreSQL now (the rule of cdc_listener.check)."""
        again = await self.checker.compare([suspect.first.name])
        if not again or again[0].seen != suspect.first.seen or not again[0].differs:
            return
        self.metrics.consistency_stale[suspect.source] += 1
        self.window.found_stale()
        age = self._clock() - suspect.since
        self.metrics.staleness_age.observe(age)
        self._found(again[0], suspect.source, age)

    def _found(self, stale: Compared, source: str, age: float) -> None:
        """Log (and count by kind) each stale value once."""
        served = stale.seen.served or b""
        seen = (stale.name, hashlib.blake2b(served, digest_size=8).digest())
        if seen in self._logged:
            return
        self._logged[seen] = None
        if len(self._logged) > _LOGGED:
            self._logged.popitem(last=False)
        self.metrics.stale(stale.kind)
        log.warning(
            "stale cached value",
            extra={
                "key": stale.name,
                "kind": stale.kind,
                "source": source,
                "age_s": round(age, 3),
                "cached": summary(served),
                "database": summary(stale.truth),
                "fences": ",".join(fence_text(f) for f in stale.seen.fences),
                "token": fence_text(stale.seen.token),
            },
        )

    async def _member(self, family: str) -> str | None:
        """One cached page or price of a family, at random (its tag set lists them)."""
        found = await self.redis.srandmember(family)
        return None if found is None else _text(cast(bytes | str, found))

    async def random_value_name(self) -> str | None:
        """A random cached value's name: a SCAN step from a random cursor (on a cluster,
        on a random master: each holds its own share of the keys), then one comparable
        name among those it returned. None when it found none."""
        node = None
        if is_cluster(self.redis):
            primaries = cast(RedisCluster, self.redis).get_primaries()
            if not primaries:
                return None  # the client has not learnt the cluster's map yet
            node = self._rng.choice(primaries)
        # A cursor past the table's last bucket finds nothing: then once from the start.
        for cursor in (self._rng.getrandbits(32), 0):
            found = await self._scan(cursor, node)
            values = [n for n in map(_text, found) if self._comparable(n)]
            if values:
                return self._rng.choice(values)
        return None

    async def _scan(self, cursor: int, node: object) -> list[bytes | str]:
        pattern = self.keys.namespace_pattern()
        if node is None:
            _, found = await self.redis.scan(cursor, pattern, SCAN_COUNT)
        else:
            cluster = cast(RedisCluster, self.redis)
            _, found = await cluster.scan(cursor, pattern, SCAN_COUNT, target_nodes=node)
        return list(found)

    def _comparable(self, name: str) -> bool:
        ref = self.keys.classify(name)
        return ref.key is not None and ref.kind != "probe"

    async def publish(self) -> None:
        """Write the window's figure where the API's /stats reads it."""
        body = json.dumps(self.window.figure(), separators=(",", ":"))
        await self.redis.set(self.keys.consistency(), body, px=round(FIGURE_TTL * 1000))

    def update_gauge(self) -> None:
        """Set the nines gauge from the window's counts."""
        checks, stale = self.window.counts()
        self.metrics.consistency_nines = nines(checks, stale)

    async def run(self, stop: asyncio.Event) -> None:
        """Tick CDC_SAMPLE_RATE times a second until `stop`, while the listener streams.
        Failures of Redis or PostgreSQL skip a tick: the stream reports outages itself."""
        if self.rate <= 0:
            return
        interval = 1.0 / self.rate
        next_at = self._clock()
        published = -math.inf
        while not stop.is_set():
            if self.metrics.streaming:
                try:
                    await self.tick()
                    if self._clock() - published >= PUBLISH_EVERY:
                        published = self._clock()
                        await self.publish()
                except (*REDIS_FAILURES, psycopg.Error, OSError, MesCacheError) as exc:
                    log.debug("consistency sample failed", extra={"error": str(exc)})
            self.update_gauge()
            # Never catch up in a burst: a slow tick delays the next, it does not add one.
            next_at = max(next_at + interval, self._clock())
            await self._sleep(next_at - self._clock())


async def probe_forever(
    prober: Prober,
    metrics: ListenerMetrics,
    interval: float,
    stop: asyncio.Event,
) -> None:
    """One end-to-end invalidation timed every `interval` s while the listener streams."""
    while interval > 0 and not stop.is_set():
        if metrics.streaming:
            try:
                report = await prober.sample(1, 1.0 / interval, PROBE_TIMEOUT)
            except (*REDIS_FAILURES, psycopg.Error) as exc:
                log.debug("invalidation probe failed", extra={"error": str(exc)})
            else:
                metrics.probes_missed += report.missed
                for delay in report.delays:
                    metrics.invalidation_delay.observe(delay)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)


def summary(value: bytes | None) -> str:
    """A value as its length and a short hash, never its content."""
    if value is None:
        return "none"
    return f"{len(value)} B blake2b:{hashlib.blake2b(value, digest_size=4).hexdigest()}"


def fence_text(value: bytes | None) -> str:
    """A fence or token as logged: short, printable; "none" when absent."""
    return "none" if value is None else value.decode("ascii", "replace")[:64]


def _text(name: bytes | str) -> str:
    return name.decode() if isinstance(name, bytes) else name
