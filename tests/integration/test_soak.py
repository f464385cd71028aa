"""The short soak: the whole stack under load, each fault once (listener kill -9, Redis
restart, PostgreSQL restart, slot dropped, the replication stream, Redis, and PostgreSQL
for the API black-holed). The stack recovers by itself from each, and at
the end no key is stale and no acknowledged write is lost. On a Redis Cluster the Redis
faults are a forced failover and a kill -9 of a master instead. `make soak` is the long
form."""

from __future__ import annotations

import pytest

from bench.soak import run_soak

SINGLE = [
    "kill -9 listener",
    "restart redis",
    "restart postgresql",
    "drop the slot",
    "replication stream black-holed",
    "redis black-holed",
    "postgresql black-holed for the api",
]
CLUSTER = [
    "kill -9 listener",
    "fail over the dashboard's master",
    "kill -9 a master",
    "restart postgresql",
    "drop the slot",
    "replication stream black-holed",
    "postgresql black-holed for the api",
]


@pytest.mark.parametrize(
    ("cluster", "faults"), [(False, SINGLE), (True, CLUSTER)], ids=["single", "cluster"]
)
def test_the_stack_recovers_from_every_fault_with_nothing_stale_or_lost(
    cluster: bool, faults: list[str]
) -> None:
    report = run_soak(orders=2000, dwell=3.0, quiet=2.0, liveness=3.0, cluster=cluster)
    summary = report.summary()
    assert [r.fault for r in report.results] == faults
    assert sorted(report.skipped) == (["redis black-holed", "restart redis"] if cluster else [])
    assert all(r.recovered_s is not None for r in report.results), summary
    assert report.final_stale == [], summary
    assert report.lost == [], summary
    assert report.writes_acked > 0
    assert report.listener_restarts >= 1  # the supervisor brought the killed one back
