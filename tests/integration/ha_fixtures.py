"""A real Redis Cluster (3 masters, 3 replicas) and a Sentinel set-up (a master, a replica,
three sentinels) for the whole session, from devtools.redisha, under the session's work
directory and stopped (kill -9, nothing kept) when it ends.

Tests take `redis_cluster` or `redis_sentinel`: the deployment healed (killed nodes back
as replicas) and flushed, so a failover in one test is invisible to the next;
`cluster_client` is the product's client of that cluster.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from redis.asyncio import Redis

from devtools.redisha import LocalCluster, LocalSentinel
from mescache.redisconn import make_redis
from tests.conftest import Servers


@pytest.fixture(scope="session")
def cluster_servers(servers: Servers) -> Iterator[LocalCluster]:
    cluster = LocalCluster(servers.workdir / "redis-cluster")
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def sentinel_servers(servers: Servers) -> Iterator[LocalSentinel]:
    sentinel = LocalSentinel(servers.workdir / "redis-sentinel")
    try:
        sentinel.start()
        yield sentinel
    finally:
        sentinel.stop()


@pytest.fixture
def redis_cluster(cluster_servers: LocalCluster) -> LocalCluster:
    """The session's cluster, every node up and in sync, every key gone."""
    cluster_servers.heal()
    cluster_servers.flush()
    return cluster_servers


@pytest.fixture
def redis_sentinel(sentinel_servers: LocalSentinel) -> LocalSentinel:
    """The session's Sentinel set-up, both data nodes up and in sync, every key gone."""
    sentinel_servers.heal()
    sentinel_servers.master().call("FLUSHALL")
    return sentinel_servers


@pytest.fixture
async def cluster_client(redis_cluster: LocalCluster) -> AsyncIterator[Redis]:
    """A client of the healed cluster, as every process of the product makes one."""
    client = make_redis(redis_cluster.url, 2.0, 8)
    yield client
    await client.aclose()
