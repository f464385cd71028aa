"""The change announcements on a real Redis: published from the publisher's own task, in
the order the batches were applied, with nothing the listener waits for."""

from __future__ import annotations

import asyncio
import json

import redis.asyncio

from cdc_listener.apply import Batch
from cdc_listener.publish import ChangePublisher
from mescache.rules import Touched

CHANNEL = "test:announce"


def _batch(order_id: int) -> Batch:
    batch = Batch()
    batch.add(Touched(orders={order_id}), {}, end_lsn=order_id)
    return batch


async def _received(pubsub: redis.asyncio.client.PubSub, count: int) -> list[int]:
    ids: list[int] = []
    async with asyncio.timeout(10):
        while len(ids) < count:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
            if message is not None:
                ids += json.loads(message["data"])["orders"]
    return ids


async def test_announcements_arrive_in_order_and_close_waits_for_them(
    redis_client: redis.asyncio.Redis,
) -> None:
    publisher = ChangePublisher(redis_client, CHANNEL, with_lsn=True)
    async with redis_client.pubsub() as pubsub:
        await pubsub.subscribe(CHANNEL)
        for order_id in range(1, 301):
            publisher.announce(_batch(order_id))
            if order_id % 7 == 0:
                await asyncio.sleep(0)  # some go out one by one, others pile up
        await publisher.close()
        assert (publisher.published, publisher.failures) == (300, 0)
        assert await _received(pubsub, 300) == list(range(1, 301))


async def test_past_the_backlog_the_oldest_announcements_are_dropped_and_counted(
    redis_client: redis.asyncio.Redis,
) -> None:
    publisher = ChangePublisher(redis_client, CHANNEL, with_lsn=True, backlog=3)
    async with redis_client.pubsub() as pubsub:
        await pubsub.subscribe(CHANNEL)
        for order_id in range(1, 6):  # no await between them: the sender has not run yet
            publisher.announce(_batch(order_id))
        await publisher.close()
        assert (publisher.published, publisher.failures) == (3, 2)
        assert await _received(pubsub, 3) == [3, 4, 5]
        publisher.announce(_batch(6))  # and it goes on afterwards
        await publisher.close()
        assert await _received(pubsub, 1) == [6]
