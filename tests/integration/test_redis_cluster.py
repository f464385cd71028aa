"""The product's clients on a real Redis Cluster (devtools.redisha): commands on every
shard, the change announcements on a sharded channel through master failovers, and
write-behind refused at start-up."""

from __future__ import annotations

import asyncio
import gc
import os
import subprocess
import sys
from collections.abc import Callable

import pytest
from redis.asyncio import Redis

from api.feed import ChangeFeed, FeedEvent, change_feed
from cdc_listener.apply import Batch
from cdc_listener.publish import ChangePublisher
from devtools.redisha import LocalCluster, Node
from mescache.durability import require_durable
from mescache.errors import RedisNotDurable
from mescache.keys import KeySchema
from mescache.redisconn import is_cluster
from mescache.rules import Touched

KEYS = KeySchema("test:")


async def test_a_cluster_url_reaches_every_shard(
    redis_cluster: LocalCluster, cluster_client: Redis
) -> None:
    assert is_cluster(cluster_client)
    names = [KEYS.order(order_id).name for order_id in range(60)]
    for name in names:
        await cluster_client.set(name, name)
    assert [await cluster_client.get(name) for name in names] == [n.encode() for n in names]
    held = [int(str(m.call("DBSIZE"))) for m in redis_cluster.primaries()]
    assert len(held) == 3
    assert all(count > 0 for count in held), held


def _batch(order_id: int) -> Batch:
    batch = Batch()
    batch.add(Touched(orders={order_id}), {}, end_lsn=order_id)
    return batch


async def _next(subscription_next: Callable[[], object], kind: str, within: float) -> FeedEvent:
    async with asyncio.timeout(within):
        while True:
            event = await subscription_next()  # type: ignore[misc]
            assert isinstance(event, FeedEvent)
            if event.kind == kind:
                return event


async def _announced_until_received(
    publisher: ChangePublisher, next_event: Callable[[], object], order_id: int
) -> None:
    """Publish `order_id` again and again (pub/sub keeps nothing for a subscriber still
    resubscribing) until the feed hands it over."""
    async with asyncio.timeout(30):
        while True:
            publisher.announce(_batch(order_id))
            await publisher.close()
            try:
                event = await _next(next_event, "change", 0.5)
            except TimeoutError:
                continue
            if event.data["orders"] == [order_id]:
                return


@pytest.mark.parametrize("how", ["forced", "killed"])
async def test_announcements_reach_the_feed_through_a_failover_of_the_channels_master(
    redis_cluster: LocalCluster, cluster_client: Redis, how: str
) -> None:
    channel = KEYS.changes_channel()
    publisher = ChangePublisher(cluster_client, channel, with_lsn=True)
    feed: ChangeFeed = change_feed(redis_cluster.url, channel, 2.0)
    try:
        async with feed.subscribe() as subscription:
            await _next(subscription.next, "resync", 15)  # subscribed
            await _announced_until_received(publisher, subscription.next, 1)

            master: Node = redis_cluster.master_for(channel)
            if how == "forced":
                promoted = await asyncio.to_thread(redis_cluster.failover, master)
            else:
                promoted = await asyncio.to_thread(redis_cluster.kill_master, master)
            assert redis_cluster.master_for(channel).port == promoted.port

            # The shard's subscription ended with the failover: the feed notices, tells
            # the pages to resync, and subscribes again on the new master.
            await _next(subscription.next, "resync", 30)
            await _announced_until_received(publisher, subscription.next, 2)
    finally:
        await publisher.close()
        await feed.close()
        gc.collect()  # a socket the feed left open fails this test, not a later one


async def test_write_behind_is_refused_on_a_cluster(
    redis_cluster: LocalCluster, cluster_client: Redis, database_url: str
) -> None:
    with pytest.raises(RedisNotDurable, match="Redis Cluster"):
        await require_durable(cluster_client)
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_cluster.url,
        "WRITE_BEHIND": "true",
    }
    done = subprocess.run(  # noqa: ASYNC221  # a one-shot CLI run, nothing else waits
        [sys.executable, "-m", "api.main"],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "refusing to start in write-behind mode" in lines[0]
    assert "Redis Cluster" in lines[0]
