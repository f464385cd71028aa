"""Concurrent reads of a near-kept key share their fence checks, on a real Redis.

The rule a shared check must keep: a read is answered by a check sent after it arrived,
never by one already on its way, so an invalidation that completed before a read began
always reaches that read. A store whose checks are held after Redis answered them lets
the tests put an invalidation between a check's execution and its reply, deterministically.
"""

from __future__ import annotations

import asyncio

import redis.asyncio
from redis.exceptions import ConnectionError

from api.breaker import RedisBreaker
from api.nearcache import NearCache
from api.readthrough import Read, ReadThrough
from mescache.keys import CacheKey, KeySchema
from mescache.store import ReadReply, RedisStore
from tests.integration.test_near_cache import BIG, NEWER, _const, _unexpected

KEYS = KeySchema()


class HeldStore(RedisStore):
    """Each near check runs in Redis at once, then its reply waits for `replies_released`."""

    def __init__(self, client: redis.asyncio.Redis) -> None:
        super().__init__(client)
        self.replies_released = asyncio.Event()
        self.checks = 0
        self.executed = asyncio.Event()  # set whenever a check has run in Redis
        self.fail_next = False

    async def read(self, key: CacheKey, held: bytes) -> ReadReply:
        self.checks += 1
        if self.fail_next:
            raise ConnectionError("connection reset by peer")
        reply = await super().read(key, held)
        self.executed.set()
        await self.replies_released.wait()
        return reply


async def _held_process(
    client: redis.asyncio.Redis, key: CacheKey
) -> tuple[ReadThrough, HeldStore]:
    """A process holding BIG near for `key`, with Redis's value swapped behind the token's
    back (a read answered from Redis would show b"swapped")."""
    store = HeldStore(client)
    api = ReadThrough(store, RedisBreaker(1.0), lease=2.0, wait=1.0, near=NearCache(1, 1 << 20))
    assert (await api.get(key, 60, _const(BIG))).hit is False
    assert len(api.near) == 1
    assert await client.set(key.name, b"swapped", keepttl=True, xx=True)
    return api, store


async def _check_in_flight(
    client: redis.asyncio.Redis, key: CacheKey
) -> tuple[ReadThrough, HeldStore, asyncio.Task[Read]]:
    """A held process, and a first read whose check Redis has answered ("token stands")
    while its reply is held."""
    api, store = await _held_process(client, key)
    first = asyncio.create_task(api.get(key, 60, _unexpected))
    await store.executed.wait()
    store.executed.clear()
    return api, store, first


async def _invalidate(client: redis.asyncio.Redis, key: CacheKey) -> None:
    store = RedisStore(client)
    await store.send(lambda cmds: store.queue_invalidate(cmds, key))


async def test_a_read_never_takes_the_answer_of_a_check_sent_before_it_arrived(
    redis_client: redis.asyncio.Redis,
) -> None:
    key = KEYS.dashboard()
    api, store, first = await _check_in_flight(redis_client, key)
    await _invalidate(redis_client, key)  # the listener, between that answer and its delivery
    second = asyncio.create_task(api.get(key, 60, _const(NEWER)))
    await asyncio.sleep(0.05)
    assert store.checks == 1  # the second read waits for a check of its own
    store.replies_released.set()
    assert await first == Read(BIG, hit=True)  # it began before the invalidation
    assert await second == Read(NEWER, hit=False)  # it began after: a miss, filled anew
    assert store.checks == 2


async def test_reads_arriving_during_a_check_share_the_next_one(
    redis_client: redis.asyncio.Redis,
) -> None:
    key = KEYS.dashboard()
    api, store, first = await _check_in_flight(redis_client, key)
    waiting = [asyncio.create_task(api.get(key, 60, _unexpected)) for _ in range(50)]
    await asyncio.sleep(0.05)
    store.replies_released.set()
    reads = await asyncio.gather(first, *waiting)
    assert reads == [Read(BIG, hit=True)] * 51
    assert store.checks == 2  # one in flight, one for all fifty that came during it
    assert api.hits == 51


async def test_reads_sharing_a_check_survive_the_one_that_started_it_going_away(
    redis_client: redis.asyncio.Redis,
) -> None:
    key = KEYS.dashboard()
    api, store, first = await _check_in_flight(redis_client, key)
    second = asyncio.create_task(api.get(key, 60, _unexpected))
    third = asyncio.create_task(api.get(key, 60, _unexpected))
    await asyncio.sleep(0)
    first.cancel()  # its client hung up while its check was in flight
    store.replies_released.set()
    assert await second == await third == Read(BIG, hit=True)
    assert first.cancelled()


async def test_a_failed_shared_check_sends_each_of_its_reads_to_postgresql(
    redis_client: redis.asyncio.Redis,
) -> None:
    key = KEYS.dashboard()
    api, store, first = await _check_in_flight(redis_client, key)
    store.fail_next = True  # the connection breaks under the next check
    later = [asyncio.create_task(api.get(key, 60, _const(NEWER))) for _ in range(3)]
    await asyncio.sleep(0.05)
    store.replies_released.set()
    assert await first == Read(BIG, hit=True)
    assert await asyncio.gather(*later) == [Read(NEWER, hit=False)] * 3
    assert store.checks == 2
    assert not api.breaker.allow()  # tripped: the next reads go to PostgreSQL directly
