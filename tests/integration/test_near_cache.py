"""The per-process near copy of large values, on a real Redis: served only while the fence
token Redis holds it under stands, so every writer of values (invalidation, family
invalidation, refresh, flush, a restart, expiry) reaches the next read.

Where a test must prove that a body came from the near copy and not from Redis, it
overwrites Redis's value behind the token's back (no fence moves), which no writer of the
product does: a read that still returns the original body did not read it from Redis."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import redis.asyncio

from api.breaker import RedisBreaker
from api.nearcache import NearCache
from api.readthrough import Read, ReadThrough
from mescache.keys import CacheKey, KeySchema
from mescache.redisconn import make_redis
from mescache.store import Counter, RedisStore, lsn_version

KEYS = KeySchema()
BIG = b"d" * 20_000
NEWER = b"n" * 20_000


def process(
    client: redis.asyncio.Redis, min_bytes: int = 16_384, max_bytes: int = 1 << 20
) -> ReadThrough:
    """One API process's read path, with its near copy."""
    return ReadThrough(
        RedisStore(client),
        RedisBreaker(1.0),
        lease=2.0,
        wait=1.0,
        near=NearCache(min_bytes, max_bytes),
    )


def _const(body: bytes) -> Callable[[], Awaitable[bytes]]:
    async def load() -> bytes:
        return body

    return load


async def _unexpected() -> bytes:
    raise AssertionError("the read went to PostgreSQL")


async def _near_copy_of(client: redis.asyncio.Redis, key: CacheKey) -> ReadThrough:
    """A process that filled `key` with BIG and holds it near; Redis's value is then
    swapped behind the token's back, so a read served from Redis would show it."""
    api = process(client)
    assert (await api.get(key, 60, _const(BIG))).hit is False
    assert len(api.near) == 1
    assert await client.set(key.name, b"swapped", keepttl=True, xx=True)
    return api


async def test_the_near_copy_is_served_while_the_token_stands(
    redis_client: redis.asyncio.Redis,
) -> None:
    key = KEYS.dashboard()
    api = await _near_copy_of(redis_client, key)
    counter = Counter("requests", "dashboard")
    for _ in range(3):
        read = await api.get(key, 60, _unexpected, counter)
        assert read == Read(BIG, hit=True)  # not b"swapped": not read from Redis
    assert (api.hits, api.misses) == (3, 1)
    await api.demand.flush()
    assert await redis_client.zscore("requests", "dashboard") == 3  # still counted
    # a process without the near copy reads Redis's value
    assert (await process(redis_client).get(key, 60, _unexpected)).body == b"swapped"


async def test_a_large_value_filled_elsewhere_is_kept_once_read_with_its_token(
    redis_client: redis.asyncio.Redis,
) -> None:
    key = KEYS.dashboard()
    await process(redis_client).get(key, 60, _const(BIG))
    api = process(redis_client)
    assert (await api.get(key, 60, _unexpected)).body == BIG  # plain GET: no token
    assert (await api.get(key, 60, _unexpected)).body == BIG  # with its token: kept
    await redis_client.set(key.name, b"swapped", keepttl=True)
    assert (await api.get(key, 60, _unexpected)).body == BIG


async def test_an_invalidation_reaches_the_next_read(redis_client: redis.asyncio.Redis) -> None:
    key = KEYS.dashboard()
    api = await _near_copy_of(redis_client, key)
    store = RedisStore(redis_client)
    await store.send(lambda cmds: store.queue_invalidate(cmds, key))
    assert (await api.get(key, 60, _const(NEWER))).body == NEWER  # a miss: filled again
    # and a fill by another process reaches it as well
    store = RedisStore(redis_client)
    await store.send(lambda cmds: store.queue_invalidate(cmds, key))
    await process(redis_client).get(key, 60, _const(BIG))
    assert await api.get(key, 60, _unexpected) == Read(BIG, hit=True)


async def test_a_family_invalidation_reaches_the_next_read(
    redis_client: redis.asyncio.Redis,
) -> None:
    page = KEYS.status_page("new", None, 500)
    api = await _near_copy_of(redis_client, page)
    family = KEYS.status_family("new")
    store = RedisStore(redis_client)
    await store.send(
        lambda cmds: store.queue_invalidate_family(cmds, family, KEYS.family_fence(family))
    )
    await process(redis_client).get(page, 60, _const(NEWER))
    assert (await api.get(page, 60, _unexpected)).body == NEWER


async def test_a_flush_reaches_the_next_read(redis_client: redis.asyncio.Redis) -> None:
    key = KEYS.dashboard()
    api = await _near_copy_of(redis_client, key)
    await RedisStore(redis_client).flush_matching(KEYS.namespace_pattern())
    await process(redis_client).get(key, 60, _const(NEWER))
    assert (await api.get(key, 60, _unexpected)).body == NEWER


async def test_a_redis_restart_reaches_the_next_read(redis_client: redis.asyncio.Redis) -> None:
    key = KEYS.dashboard()
    api = await _near_copy_of(redis_client, key)
    await redis_client.flushdb()  # what a restart without persistence leaves
    assert (await api.get(key, 60, _const(NEWER))).body == NEWER
    # The refill found no fence and started one from the clock; the old token does not
    # come back.
    await redis_client.set(key.name, b"swapped", keepttl=True)
    assert (await api.get(key, 60, _unexpected)).body == NEWER  # kept under the new token


async def test_a_refresh_with_a_newer_version_reaches_the_next_read(
    redis_client: redis.asyncio.Redis,
) -> None:
    key = KEYS.dashboard()
    store = RedisStore(redis_client)
    # a value's first refresh records its position (mescache.store), later ones write
    await store.send(lambda cmds: store.queue_refresh(cmds, key, BIG, 60, lsn_version(41)))
    api = await _near_copy_of(redis_client, key)
    await store.send(lambda cmds: store.queue_refresh(cmds, key, NEWER, 60, lsn_version(42)))
    assert (await api.get(key, 60, _unexpected)).body == NEWER
    await redis_client.set(key.name, b"swapped", keepttl=True)
    assert (await api.get(key, 60, _unexpected)).body == NEWER  # the refresh's value is kept


async def test_a_value_expired_in_redis_is_not_served_near(
    redis_client: redis.asyncio.Redis,
) -> None:
    key = KEYS.dashboard()
    api = await _near_copy_of(redis_client, key)
    await redis_client.pexpire(key.name, 5_000)
    assert (await api.get(key, 60, _unexpected)).body == BIG
    entry = api.near.lookup(key.name)
    assert entry is not None
    assert entry.deadline <= time.monotonic() + 5.0
    await redis_client.pexpire(key.name, 1)
    deadline = time.monotonic() + 10
    while await redis_client.exists(key.name):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    read = await api.get(key, 60, _const(NEWER))
    assert (read.body, read.hit) == (NEWER, False)


async def test_small_values_keep_the_plain_get(redis_client: redis.asyncio.Redis) -> None:
    key = KEYS.order(7)
    api = process(redis_client)
    await api.get(key, 60, _const(b'{"status": "new"}'))
    await api.get(key, 60, _unexpected)
    assert len(api.near) == 0
    assert not api.near.wants(key.name)
    await redis_client.set(key.name, b"swapped", keepttl=True)
    assert (await api.get(key, 60, _unexpected)).body == b"swapped"


async def test_the_near_copies_stay_within_their_byte_bound(
    redis_client: redis.asyncio.Redis,
) -> None:
    api = process(redis_client, max_bytes=3 * len(BIG))
    pages = [KEYS.status_page("done", cursor, 500) for cursor in (None, 900, 800, 700)]
    for page in pages[:3]:
        await api.get(page, 60, _const(BIG))
    await api.get(pages[0], 60, _unexpected)  # the first page is now the most recent
    await api.get(pages[3], 60, _const(BIG))
    assert len(api.near) == 3
    assert api.near.size <= 3 * len(BIG)
    assert api.near.lookup(pages[1].name) is None  # the least recently used went
    assert api.near.lookup(pages[0].name) is not None
    disabled = process(redis_client, max_bytes=0)
    await disabled.get(KEYS.dashboard(), 60, _const(BIG))
    assert len(disabled.near) == 0


async def test_with_redis_down_a_near_copy_is_never_served() -> None:
    down = make_redis("redis://127.0.0.1:1/0", 0.5, 2)
    try:
        api = ReadThrough(
            RedisStore(down), RedisBreaker(60.0), lease=2.0, wait=1.0, near=NearCache(1, 1 << 20)
        )
        key = KEYS.dashboard()
        api.near.keep(key.name, b"1:1", BIG, time.monotonic() + 60)
        assert (await api.get(key, 60, _const(NEWER))).body == NEWER  # the breaker trips
        assert (await api.get(key, 60, _const(NEWER))).body == NEWER  # and stays open
    finally:
        await down.aclose()
