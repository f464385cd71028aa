"""An evicting Redis: any key may vanish at any moment, and an evicted key looks exactly
like a deleted one. Each kind of bookkeeping key (fences, leases, tag sets, tokens,
versions) is deleted at the adversarial moment, on a real Redis: a vanished key may cost a
miss, never a stale hit and never a fill that stores an old row."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest
import redis.asyncio

from mescache.keys import CacheKey, KeySchema
from mescache.store import Commands, RedisStore, lsn_version
from tests.integration.test_store_races import paused_fill, reader

KEYS = KeySchema()
ORDER = KEYS.order(21)
PAGE = KEYS.status_page("new", None, 50)
PRICE = KEYS.price(5, 2, "size=17")

OLD, NEW = b"old row", b"new row"


def _invalidation(store: RedisStore, key: CacheKey) -> Callable[[Commands], None]:
    """What the listener sends when the row behind `key` changes."""

    def queue(cmds: Commands) -> None:
        if not key.tags:
            store.queue_invalidate(cmds, key)
        for family in key.tags[:1]:  # the first family: the order's status, the model
            store.queue_invalidate_family(cmds, family, KEYS.family_fence(family))

    return queue


def _bookkeeping(key: CacheKey) -> list[str]:
    return [*key.fences, key.lease, *key.tags, *([key.token] if key.token else [])]


async def _next_read(client: redis.asyncio.Redis, key: CacheKey) -> bytes:
    async def fresh() -> bytes:
        return NEW

    return (await reader(client).get(key, 60, fresh)).body


CASES = [(key, name) for key in (ORDER, PAGE, PRICE) for name in _bookkeeping(key)]


@pytest.mark.parametrize(("key", "vanished"), CASES, ids=[n for _, n in CASES])
@pytest.mark.parametrize("when", ["before-invalidation", "after-invalidation"])
async def test_a_fill_racing_an_invalidation_stores_nothing_whatever_vanished(
    redis_client: redis.asyncio.Redis, key: CacheKey, vanished: str, when: str
) -> None:
    """Between a fill's SELECT (of the old row) and its store, the row changes and the
    listener invalidates; a bookkeeping key vanishes just before or just after that."""
    store = RedisStore(redis_client)
    fill, resume = await paused_fill(redis_client, key, 60, OLD)
    if when == "before-invalidation":
        await redis_client.delete(vanished)
    await store.send(_invalidation(store, key))
    if when == "after-invalidation":
        await redis_client.delete(vanished)
    resume.set()
    assert (await fill).body == OLD  # the reader answers with what it read...
    assert await store.get(key) is None  # ...but nothing serves the old row afterwards
    assert await _next_read(redis_client, key) == NEW


@pytest.mark.parametrize(("key", "vanished"), CASES, ids=[n for _, n in CASES])
async def test_an_invalidation_reaches_the_next_hit_whatever_vanished(
    redis_client: redis.asyncio.Redis, key: CacheKey, vanished: str
) -> None:
    """A value is cached; a bookkeeping key vanishes (the tag set of a status, under LRU
    the coldest key of all); the row changes: the next read is not the old value."""

    async def old() -> bytes:
        return OLD

    await reader(redis_client).get(key, 60, old)
    assert await redis_client.get(key.name) == OLD
    await redis_client.delete(vanished)
    store = RedisStore(redis_client)
    await store.send(_invalidation(store, key))
    assert await store.get(key) is None
    assert await _next_read(redis_client, key) == NEW


@pytest.mark.parametrize("key", [PAGE, PRICE], ids=["page", "price"])
async def test_a_family_member_without_its_token_is_a_miss(
    redis_client: redis.asyncio.Redis, key: CacheKey
) -> None:
    async def old() -> bytes:
        return OLD

    await reader(redis_client).get(key, 60, old)
    assert key.token is not None
    await redis_client.delete(key.token)
    assert await RedisStore(redis_client).get(key) is None
    assert await _next_read(redis_client, key) == NEW


async def test_every_family_of_a_price_fences_it_even_without_its_tag_sets(
    redis_client: redis.asyncio.Redis,
) -> None:
    store = RedisStore(redis_client)
    for family in PRICE.tags:

        async def old() -> bytes:
            return OLD

        await reader(redis_client).get(PRICE, 60, old)
        await redis_client.delete(*PRICE.tags)
        fence = KEYS.family_fence(family)

        def invalidate(cmds: Commands, f: str = family, g: str = fence) -> None:
            store.queue_invalidate_family(cmds, f, g)

        await store.send(invalidate)
        assert await store.get(PRICE) is None, family
        await redis_client.delete(PRICE.name)


@pytest.mark.parametrize("vanished", ["version", "value and version"])
async def test_a_delayed_older_refresh_never_overwrites_a_newer_one(
    redis_client: redis.asyncio.Redis, vanished: str
) -> None:
    """The listener refreshed a key to position 0x200; its position (and the value) may
    vanish; the delayed second pass of an older batch (0x100) then arrives."""
    store = RedisStore(redis_client)
    for _ in range(2):  # the first refresh of a key records its position
        await store.send(lambda cmds: store.queue_refresh(cmds, ORDER, NEW, 60, lsn_version(0x200)))
    assert await redis_client.get(ORDER.name) == NEW
    await redis_client.delete(f"{ORDER.name}#version")
    if vanished == "value and version":
        await redis_client.delete(ORDER.name)
    await store.send(lambda cmds: store.queue_refresh(cmds, ORDER, OLD, 60, lsn_version(0x100)))
    assert await store.get(ORDER) != OLD


async def test_a_flush_racing_a_fill_leaves_no_old_row(
    redis_client: redis.asyncio.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A flush deletes fences along with values; a fill that read before it may store in
    the moment after the scan passed its (still missing) value and before it reached the
    fence: the second pass removes what it stored."""
    store = RedisStore(redis_client)
    fill, resume = await paused_fill(redis_client, PAGE, 60, OLD)
    real_scan = redis_client.scan_iter
    passes = 0

    async def scan_with_a_fill_in_between(**kwargs: object) -> AsyncIterator[bytes]:
        nonlocal passes
        passes += 1
        names = [name async for name in real_scan(**kwargs)]  # type: ignore[arg-type]
        if passes == 1:
            assert PAGE.name.encode() not in names  # in flight: not stored yet
            resume.set()
            await fill  # stores now: its fence has not been deleted yet
            assert await redis_client.get(PAGE.name) == OLD
        for name in names:
            yield name

    monkeypatch.setattr(redis_client, "scan_iter", scan_with_a_fill_in_between)
    await store.flush_matching(KEYS.namespace_pattern())
    assert passes == 2
    assert await redis_client.get(PAGE.name) is None
    assert await store.get(PAGE) is None
