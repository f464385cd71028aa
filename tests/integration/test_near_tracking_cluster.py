"""Tracked near hits on a real Redis Cluster (3 masters, 3 replicas): one invalidation channel
per primary (api.cluster_tracking). A copy of a key on any shard is served with no round trip
while the channel of the key's primary is proven, dropped by anyone's raw write on that
shard, and after a failover never served on the old primary's word: the copies go, and the
new primary's channel vouches for them again.

Heartbeats are sent on demand only (an hour apart otherwise); waits are for a state, with a
bound that only guards against a hang.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager

import redis.asyncio

from api.app import create_app
from api.breaker import RedisBreaker
from api.cluster_tracking import ClusterTracking
from api.nearcache import NearCache
from api.readthrough import Read, ReadThrough
from devtools.redisha import LocalCluster
from mescache.keys import CacheKey, KeySchema
from mescache.redisconn import make_redis
from mescache.store import RedisStore
from tests.integration.conftest import http_client
from tests.integration.test_near_tracking import (
    OLD,
    _const,
    _unexpected,
    _until_tracked,
    tracked_app_settings,
)

KEYS = KeySchema()
NEW = b"n" * 20_000
HANG = 30.0  # a guard against a hang, never a figure asserted
HOUR = 3600.0


async def until(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + HANG
    while not predicate():
        assert time.monotonic() < deadline, f"never: {what}"
        await asyncio.sleep(0.02)


@asynccontextmanager
async def tracked_process(url: str) -> AsyncIterator[tuple[ReadThrough, ClusterTracking]]:
    """One API process's read path on the cluster, tracked, every primary's channel proven."""
    channel = ClusterTracking(
        url,
        2.0,
        lambda tag: KEYS.near_beat("test", tag),
        bound=HOUR,
        beat=HOUR,
        topology_every=0.1,
        silent_after=3.0,
        retry=0.05,
    )
    client = make_redis(url, 2.0, 8)
    near = NearCache(16_384, 1 << 22, channel)
    api = ReadThrough(RedisStore(client), RedisBreaker(1e-6), lease=2.0, wait=1.0, near=near)
    await near.start()
    try:
        await until(lambda: len(channel.channels) == 3 and channel.proven_now, "all proven")
        yield api, channel
    finally:
        await api.close()
        await client.aclose()


async def _tracked_copies(api: ReadThrough, keys: Iterable[CacheKey]) -> None:
    """Each key filled with OLD (or found) and read until its copy is served tracked."""
    for key in keys:
        assert (await api.get(key, 60, _const(OLD))).body == OLD
        await _until_tracked(api, key, OLD)


def _dropped(api: ReadThrough, key: CacheKey) -> Callable[[], bool]:
    return lambda: api.near.lookup(key.name) is None


def keys_on_every_shard(cluster: LocalCluster) -> dict[int, CacheKey]:
    """One order key per primary (by port): copies on every shard."""
    found: dict[int, CacheKey] = {}
    for order_id in range(1, 500):
        key = KEYS.order(order_id)
        found.setdefault(cluster.master_for(key.name).port, key)
        if len(found) == 3:
            return found
    raise AssertionError("no key found on some primary")


async def _evalsha_calls(cluster: LocalCluster) -> int:
    calls = 0
    for master in cluster.primaries():
        stats = master.info("commandstats")
        calls += int(dict(stats.get("cmdstat_evalsha", {}) or {}).get("calls", 0))  # type: ignore[call-overload]
    return calls


async def test_copies_on_every_shard_are_served_with_no_round_trip_until_a_raw_write(
    redis_cluster: LocalCluster, cluster_client: redis.asyncio.Redis
) -> None:
    keys = keys_on_every_shard(redis_cluster)
    async with tracked_process(redis_cluster.url) as (api, channel):
        await _tracked_copies(api, keys.values())
        before = await _evalsha_calls(redis_cluster)
        for _ in range(10):
            for key in keys.values():
                assert await api.get(key, 60, _unexpected) == Read(OLD, hit=True)
        assert await _evalsha_calls(redis_cluster) == before  # no check sent to any shard
        # A DBA's raw SET on each shard moves no fence: only that shard's channel tells.
        for key in keys.values():
            assert await cluster_client.set(key.name, NEW, keepttl=True, xx=True)
            await until(_dropped(api, key), f"{key.name} dropped")
            assert (await api.get(key, 60, _unexpected)).body == NEW
        assert channel.losses == {"lost": 0, "silent": 0}


async def test_after_a_failover_the_copies_go_and_the_new_primary_vouches_again(
    redis_cluster: LocalCluster, cluster_client: redis.asyncio.Redis
) -> None:
    keys = keys_on_every_shard(redis_cluster)
    async with tracked_process(redis_cluster.url) as (api, channel):
        await _tracked_copies(api, keys.values())
        port, key = next(iter(keys.items()))
        old_primary = f"127.0.0.1:{port}"
        promoted = await asyncio.to_thread(redis_cluster.failover, redis_cluster.node(port))
        new_primary = f"127.0.0.1:{promoted.port}"
        await until(lambda: new_primary in channel.channels, "a channel for the new primary")
        assert old_primary not in channel.channels
        # Every copy went with the topology change: none is served on a channel's word now.
        assert all(api.near.lookup(k.name) is None for k in keys.values())
        await until(lambda: channel.proven_now, "every channel proven again")
        # The new primary's writes reach this process.
        for _ in range(20):  # a read or two may meet the failover's closed connections
            if (await api.get(key, 60, _const(OLD))).hit:
                break
        await _until_tracked(api, key, OLD)
        assert await cluster_client.set(key.name, NEW, keepttl=True, xx=True)
        await until(_dropped(api, key), "dropped by the new primary")
        assert (await api.get(key, 60, _unexpected)).body == NEW


async def test_the_app_on_a_cluster_serves_tracked_hits(
    database_url: str, redis_cluster: LocalCluster
) -> None:
    app = create_app(tracked_app_settings(database_url, redis_cluster.url))
    async with app.router.lifespan_context(app), http_client(app) as http:
        near = app.state.ctx.cache.near
        channel = near.channel
        assert isinstance(channel, ClusterTracking)
        await until(lambda: channel.proven_now, "every primary's channel proven")
        bodies = [(await http.get("/orders/dashboard")).content for _ in range(4)]
        assert len(set(bodies)) == 1
        assert near.counts.tracked >= 1
        assert "orders_api_near_channel_proven 1.0" in (await http.get("/metrics")).text
