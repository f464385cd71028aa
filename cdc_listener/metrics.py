"""The listener's Prometheus metrics and readiness, one registry per daemon.

The consume loop pays integer increments: counters are plain attributes read when
/metrics is scraped; the lag histogram is observed once per applied batch. The slot's
retained WAL is polled on an ordinary connection (cdc_listener.endpoint), never asked
of the replication connection.

Readiness: the listener is ready once it streams from its slot (or, in notify mode,
listens) and has applied what was pending when it started: every commit up to the WAL
position current at start-up is confirmed (notify: the outbox was drained once). Until
then the cache may still hold values changed while no listener ran. Ready means
progressing, not connected: it is lost again while the server has been silent for half
the liveness bound (the source asks for replies long before), and while the confirmed
position has not moved for the whole bound although the server's WAL is past it (a
stalled pipeline). :meth:`ListenerMetrics.check` logs each change in one line.

Series (all prefixed ``cdc_listener_``): ``changes_received_total``,
``changes_applied_total``, ``transactions_applied_total``, ``keys_invalidated_total``,
``keys_refreshed_total``, ``families_invalidated_total``,
``commit_apply_lag_seconds``, ``confirmed_lsn``, ``slot_retained_wal_bytes``,
``slot_lag_bytes``, ``outbox_backlog``, ``reconnects_total``, ``silences_total``,
``slot_takebacks_total``, ``silence_seconds``, ``stalled``, ``ready``,
``stale_keys_found_total{kind}`` (stale values a consistency check of this process found,
one sample per value kind from the start, so an alert on it never sees a missing series),
``write_behind_dead_letters`` (the dead-letter stream's length, read with the slot's WAL).
The consistency sampler's (cdc_listener.sampler): ``consistency_checks_total{source}``,
``consistency_stale_total{source}`` (source ``invalidated`` or ``random``),
``staleness_age_seconds``, ``consistency_nines`` (NaN with no check in the window),
``invalidation_delay_seconds`` and ``invalidation_probes_missed_total`` (the probe).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Final

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from cdc_listener.replication import format_lsn
from mescache.keys import VALUE_KINDS

log = logging.getLogger("cdc_listener.metrics")

# From a commit on the server to its Redis work: sub-millisecond when keeping up, seconds
# while catching up after a restart.
LAG_BUCKETS: Final = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
)  # fmt: skip
# How long a stale value had been wrong when found: at least the grace period.
AGE_BUCKETS: Final = (1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
SAMPLE_SOURCES: Final = ("invalidated", "random")


@dataclass(frozen=True, slots=True)
class Applied:
    """What one pass of the applier did to Redis."""

    invalidated: int = 0  # keys deleted (each with its fence moved), flushed keys included
    refreshed: int = 0  # keys rewritten with the new value
    families: int = 0  # tag-set families invalidated as a whole

    def __add__(self, other: Applied) -> Applied:
        return Applied(
            self.invalidated + other.invalidated,
            self.refreshed + other.refreshed,
            self.families + other.families,
        )


class ListenerMetrics:
    """Counters, gauges and readiness of one listener process."""

    def __init__(
        self,
        mode: str,
        slot: str,
        liveness: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.mode = mode
        self.slot = slot
        self.registry = CollectorRegistry()
        self.received = 0
        self.applied = 0
        self.transactions = 0
        self.invalidated = 0
        self.refreshed = 0
        self.families = 0
        self.reconnects = 0
        self.silences = 0  # connections given up as silent
        self.takebacks = 0  # times the slot was taken back from our own silent walsender
        self.confirmed_lsn = 0
        self.liveness = liveness
        self._clock = clock
        self.heard_at = clock()  # when the server last sent anything (monotonic)
        self.server_lsn = 0  # the server's WAL end, as the stream last told it
        self._moved_at = clock()  # when the confirmed position last moved
        self._kind: str | None = "down"  # what check() last saw
        self.retained_wal_bytes: int | None = None
        self.slot_lag_bytes: int | None = None
        self.outbox_backlog: int | None = None
        self.dead_letters: int | None = None
        self.stale_found: dict[str, int] = {kind: 0 for kind in VALUE_KINDS if kind != "probe"}
        self.streaming = False
        self.caught_up = False
        self._pending_lsn = 0
        self.lag = Histogram(
            "cdc_listener_commit_apply_lag_seconds",
            "From the commit on the server (its clock) to the end of the Redis work of the"
            " batch holding it (this process's clock); one observation per applied batch,"
            " for its oldest commit",
            buckets=LAG_BUCKETS,
            registry=self.registry,
        )
        # The consistency sampler's figures: per sample, by source.
        self.consistency_checks: dict[str, int] = dict.fromkeys(SAMPLE_SOURCES, 0)
        self.consistency_stale: dict[str, int] = dict.fromkeys(SAMPLE_SOURCES, 0)
        self.consistency_nines: float | None = None
        self.probes_missed = 0
        self.staleness_age = Histogram(
            "cdc_listener_staleness_age_seconds",
            "How long a stale value found by the sampler had been wrong, at least: since the"
            " batch that invalidated it was announced, or (a random sample) since the first"
            " read that saw it differ",
            buckets=AGE_BUCKETS,
            registry=self.registry,
        )
        self.invalidation_delay = Histogram(
            "cdc_listener_invalidation_delay_seconds",
            "From a probe commit's acknowledgement to its key gone from Redis, end to end"
            " (cdc_listener.lag_probe), sampled every CDC_PROBE_INTERVAL",
            buckets=LAG_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_ScrapeTime(self))

    @property
    def ready(self) -> bool:
        """Whether the listener is streaming and keeping up (see unready_reason)."""
        return self.unready_reason() is None

    def silence(self) -> float:
        """Seconds since the server last sent anything (0 when not streaming)."""
        return self._clock() - self.heard_at if self.streaming else 0.0

    def stalled_for(self) -> float:
        """Seconds the confirmed position has stood still behind the server's WAL."""
        if not self.streaming or self.server_lsn <= self.confirmed_lsn:
            return 0.0
        return self._clock() - self._moved_at

    def unready_reason(self) -> str | None:
        """One line saying why the listener is not ready; None when it is."""
        problem = self._problem()
        return None if problem is None else problem[1]

    def _problem(self) -> tuple[str, str] | None:
        """(kind, one line saying why) when not ready; None when ready."""
        if not self.streaming:
            return "down", "not streaming"
        if not self.caught_up:
            return "catching_up", "catching up with what was pending at start"
        silent = self.silence()
        if silent >= self.liveness / 2:
            return "silent", f"server silent for {silent:.1f} s"
        stalled = self.stalled_for()
        if stalled >= self.liveness:
            return "stalled", (
                f"confirmed position {format_lsn(self.confirmed_lsn)} stalled for"
                f" {stalled:.1f} s, server at {format_lsn(self.server_lsn)}"
            )
        return None

    def check(self) -> None:
        """Log when readiness is lost to silence or a stall, and when it comes back (the
        other reasons are logged where they happen: connects, failures, catching up)."""
        problem = self._problem()
        kind = None if problem is None else problem[0]
        was, self._kind = self._kind, kind
        if kind == was:
            return
        if problem is not None and kind in ("silent", "stalled"):
            log.warning(
                "listener not ready",
                extra={"slot": self.slot, "mode": self.mode, "reason": problem[1]},
            )
        elif kind is None and was in ("silent", "stalled"):
            log.info("listener ready again", extra={"slot": self.slot, "mode": self.mode})

    def heard(self) -> None:
        """The server sent something: the connection is alive."""
        self.heard_at = self._clock()

    def source_started(self, pending_lsn: int = 0) -> None:
        """A source streams (or listens); it is caught up once `pending_lsn` is confirmed
        (notify: once `drained` is called)."""
        self.streaming = True
        self._pending_lsn = pending_lsn
        self.caught_up = False
        self.heard_at = self._moved_at = self._clock()
        self.server_lsn = max(self.server_lsn, pending_lsn)

    def source_lost(self) -> None:
        """The source is gone: not ready until a new one streams and catches up."""
        self.streaming = False
        self.caught_up = False

    def confirmed(self, lsn: int) -> None:
        """The position the server has been told is flushed."""
        if lsn != self.confirmed_lsn:
            self._moved_at = self._clock()
        self.confirmed_lsn = lsn
        if self.streaming and not self.caught_up and lsn >= self._pending_lsn:
            self.caught_up = True
            log.info(
                "listener caught up",
                extra={"slot": self.slot, "lsn": format_lsn(lsn), "mode": self.mode},
            )

    def drained(self) -> None:
        """Notify mode: the outbox held nothing more when last read."""
        if self.streaming and not self.caught_up:
            self.caught_up = True
            log.info("listener caught up", extra={"mode": self.mode})

    def batch_applied(self, changes: int, commits: int, lag: float | None, done: Applied) -> None:
        """A batch's first pass reached Redis, `lag` seconds after its oldest commit (None:
        unknown). `done` is what the round trip sent, second passes of earlier batches
        riding along included."""
        self.applied += changes
        self.transactions += commits
        self.invalidated += done.invalidated
        self.refreshed += done.refreshed
        self.families += done.families
        if lag is not None:
            self.lag.observe(lag)

    def stale(self, kind: str) -> None:
        """A consistency check found a stale cached value of `kind`."""
        self.stale_found[kind] = self.stale_found.get(kind, 0) + 1

    def exposition(self) -> bytes:
        """The text a Prometheus scrape gets."""
        return generate_latest(self.registry)


class _ScrapeTime(Collector):
    """Series whose values live in plain attributes, read when scraped."""

    def __init__(self, metrics: ListenerMetrics) -> None:
        self.m = metrics

    def collect(self) -> Iterator[Metric]:
        m = self.m
        counters = (
            ("changes_received", "Row changes received (outbox rows in notify mode)", m.received),
            ("changes_applied", "Row changes whose Redis work is done", m.applied),
            ("transactions_applied", "Committed transactions whose Redis work is done",
             m.transactions),
            ("keys_invalidated", "Cache keys deleted, their fences moved", m.invalidated),
            ("keys_refreshed", "Cache keys rewritten with the committed value", m.refreshed),
            ("families_invalidated", "Tag-set families (status lists, prices) invalidated",
             m.families),
            ("reconnects", "Times the source failed and the listener reconnected", m.reconnects),
            ("silences", "Connections to PostgreSQL given up because nothing arrived within"
             " the liveness bound", m.silences),
            ("slot_takebacks", "Times the slot was taken back from this listener's own"
             " silent walsender", m.takebacks),
        )  # fmt: skip
        for name, text, value in counters:
            yield CounterMetricFamily(f"cdc_listener_{name}", text, value=value)
        yield GaugeMetricFamily(
            "cdc_listener_confirmed_lsn",
            "Last WAL position confirmed to the server as applied (logical mode), as a number",
            value=m.confirmed_lsn,
        )
        optional = (
            ("slot_retained_wal_bytes", "WAL the slot keeps on the server's disk",
             m.retained_wal_bytes),
            ("slot_lag_bytes", "WAL written but not yet confirmed by the listener",
             m.slot_lag_bytes),
            ("outbox_backlog", "Outbox rows not yet applied (notify mode)", m.outbox_backlog),
            ("write_behind_dead_letters", "Write-behind status changes in the dead-letter"
             " stream (answered 202, not applied)", m.dead_letters),
        )  # fmt: skip
        for name, text, maybe in optional:
            if maybe is not None:
                yield GaugeMetricFamily(f"cdc_listener_{name}", text, value=maybe)
        stale = CounterMetricFamily(
            "cdc_listener_stale_keys_found",
            "Cached values a consistency check found stale (after its grace period), by kind",
            labels=["kind"],
        )
        for kind, found in sorted(m.stale_found.items()):
            stale.add_metric([kind], found)
        yield stale
        yield from _consistency(m)
        yield GaugeMetricFamily(
            "cdc_listener_silence_seconds",
            "Seconds since the server last sent anything on the stream (LISTEN connection in"
            " notify mode); the listener asks for replies, so more than a few means trouble",
            value=m.silence(),
        )
        yield GaugeMetricFamily(
            "cdc_listener_stalled",
            "1 while the confirmed position has not moved for the liveness bound although"
            " the server's WAL is past it",
            value=1 if m.stalled_for() >= m.liveness else 0,
        )
        yield GaugeMetricFamily(
            "cdc_listener_ready",
            "1 while streaming, caught up with what was pending at start, hearing from the"
            " server and confirming progress",
            value=1 if m.ready else 0,
        )


def _consistency(m: ListenerMetrics) -> Iterator[Metric]:
    """The consistency sampler's series (cdc_listener.sampler)."""
    for name, text, values in (
        ("consistency_checks", "Cached values the sampler compared with PostgreSQL",
         m.consistency_checks),
        ("consistency_stale", "Sampled values still differing from PostgreSQL after the"
         " grace period, nothing having invalidated them (every sample counts)",
         m.consistency_stale),
    ):  # fmt: skip
        family = CounterMetricFamily(f"cdc_listener_{name}", text, labels=["source"])
        for source, count in sorted(values.items()):
            family.add_metric([source], count)
        yield family
    yield GaugeMetricFamily(
        "cdc_listener_consistency_nines",
        "log10(checks / max(stale, 1)) over the last CDC_SAMPLE_WINDOW; NaN with no check",
        value=math.nan if m.consistency_nines is None else m.consistency_nines,
    )
    yield CounterMetricFamily(
        "cdc_listener_invalidation_probes_missed",
        "Probe invalidations that did not arrive within the probe's timeout",
        value=m.probes_missed,
    )
