"""The API's Prometheus metrics, one registry per app (tests build many apps in a process).

The hot path pays an integer increment: hits, misses and database queries are plain
attributes, and the breaker's counters and state are read only when /metrics is scraped.
Only fills (a miss that reads PostgreSQL anyway) touch prometheus_client objects, whose
labelled children are bound once here.

Series (all prefixed ``orders_api_``): ``cache_hits_total``, ``cache_misses_total``,
``cache_fills_total{outcome}``, ``cache_fill_duration_seconds``,
``db_queries_total{kind}``, ``redis_errors_total``, ``redis_bypassed_reads_total``,
``redis_circuit_open``, ``auth_refused_total{reason}`` (requests whose key was missing,
malformed, too long or unknown/revoked).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from api.breaker import RedisBreaker

# A fill is a SELECT plus two Redis round trips: milliseconds, up to the lease (seconds).
FILL_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class ApiMetrics:
    """What one API process counts. `hits` and `misses` are plain ints to read (a stats
    page may show them); only the read path writes them."""

    def __init__(self, breaker: RedisBreaker) -> None:
        self.registry = CollectorRegistry()
        self.breaker = breaker
        self.hits = 0
        self.misses = 0
        self.db_reads = 0  # SELECTs run because a key missed or Redis was skipped
        self.db_writes = 0  # write requests sent to PostgreSQL
        self.fill_seconds = Histogram(
            "orders_api_cache_fill_duration_seconds",
            "From a miss to the filled value: lease, SELECT and fenced store",
            buckets=FILL_BUCKETS,
            registry=self.registry,
        )
        fills = Counter(
            "orders_api_cache_fills",
            "Fills by outcome: stored; fenced (an invalidation won, nothing stored);"
            " unleased (another reader held the lease too long, served without storing)",
            ["outcome"],
            registry=self.registry,
        )
        self.fills_stored = fills.labels("stored")
        self.fills_fenced = fills.labels("fenced")
        self.fills_unleased = fills.labels("unleased")
        refused = Counter(
            "orders_api_auth_refused",
            "Requests refused for their API key, by reason: missing, malformed, too_long,"
            " unknown (never issued, or revoked)",
            ["reason"],
            registry=self.registry,
        )
        self._refused = {
            reason: refused.labels(reason)
            for reason in ("missing", "malformed", "too_long", "unknown")
        }
        self.refusal_log = LogThrottle(1.0)
        self.registry.register(_ScrapeTime(self))

    def keys_refused(self, reason: str) -> None:
        """Count a request refused before its key was checked, by reason."""
        self._refused[reason].inc()

    def exposition(self) -> bytes:
        """The text a Prometheus scrape gets."""
        return generate_latest(self.registry)


class LogThrottle:
    """At most one log line per `interval` for one kind of event, counting the rest: a
    flood of bad requests must not become a flood of log lines."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._next = 0.0
        self._suppressed = 0

    def admit(self) -> bool:
        """Whether to log this event now; counts the ones suppressed."""
        now = time.monotonic()
        if now < self._next:
            self._suppressed += 1
            return False
        self._next = now + self.interval
        return True

    def take_suppressed(self) -> int:
        """How many lines were held back since the last one admitted."""
        count, self._suppressed = self._suppressed, 0
        return count


class _ScrapeTime(Collector):
    """Series whose values live in plain attributes, read when scraped."""

    def __init__(self, metrics: ApiMetrics) -> None:
        self.m = metrics

    def collect(self) -> Iterator[Metric]:
        m, breaker = self.m, self.m.breaker
        yield CounterMetricFamily(
            "orders_api_cache_hits", "Reads answered from Redis", value=m.hits
        )
        yield CounterMetricFamily(
            "orders_api_cache_misses", "Reads answered from PostgreSQL", value=m.misses
        )
        queries = CounterMetricFamily(
            "orders_api_db_queries",
            "Queries sent to PostgreSQL: reads (misses, Redis skipped) and writes",
            labels=["kind"],
        )
        queries.add_metric(["read"], m.db_reads)
        queries.add_metric(["write"], m.db_writes)
        yield queries
        yield CounterMetricFamily(
            "orders_api_redis_errors",
            "Redis calls that failed or timed out",
            value=breaker.failures,
        )
        yield CounterMetricFamily(
            "orders_api_redis_bypassed_reads",
            "Reads that skipped Redis while the circuit was open",
            value=breaker.bypassed,
        )
        yield GaugeMetricFamily(
            "orders_api_redis_circuit_open",
            "1 while reads skip Redis after a failure, 0 when Redis is in use",
            value=1 if breaker.state == "open" else 0,
        )
