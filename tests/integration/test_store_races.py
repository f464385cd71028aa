"""The races a naive cache-aside gets wrong, replayed deterministically on a real Redis:
a stale set after an invalidation, a stampede on a missing hot key, and a refresh
overwritten by an older value."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
import redis.asyncio

from api.breaker import RedisBreaker
from api.readthrough import Read, ReadThrough
from mescache.keys import CacheKey, KeySchema
from mescache.redisconn import make_redis
from mescache.store import Commands, Counter, RedisStore, lsn_version

KEYS = KeySchema()


def reader(client: redis.asyncio.Redis, wait: float = 1.0, lease: float = 2.0) -> ReadThrough:
    """One API process's read path."""
    return ReadThrough(RedisStore(client), RedisBreaker(1.0), lease=lease, wait=wait)


async def paused_fill(
    client: redis.asyncio.Redis, key: CacheKey, ttl: float, body: bytes
) -> tuple[asyncio.Task[Read], asyncio.Event]:
    """A reader's fill of `key`, paused inside its SELECT (its fence already read); setting
    the returned event lets the SELECT return `body` and the fill try to store it."""
    selected, resume = asyncio.Event(), asyncio.Event()

    async def slow_select() -> bytes:
        selected.set()  # the reader has read the old row...
        await resume.wait()  # ...and the writer commits and the listener acts now
        return body

    fill = asyncio.create_task(reader(client).get(key, ttl, slow_select))
    await selected.wait()
    return fill, resume


async def test_a_fill_that_raced_an_invalidation_is_not_stored(
    redis_client: redis.asyncio.Redis,
) -> None:
    key = KEYS.order(7)
    store = RedisStore(redis_client)
    fill, invalidated = await paused_fill(redis_client, key, 60, b'{"status": "new"}')
    await store.send(lambda cmds: store.queue_invalidate(cmds, key))
    invalidated.set()

    served = await fill
    assert served.body == b'{"status": "new"}'  # the reader answers with what it read
    assert await redis_client.get(key.name) is None  # but does not put the old row back
    again = await reader(redis_client).get(key, 60, _const(b'{"status": "in_progress"}'))
    assert again.body == b'{"status": "in_progress"}'
    assert await redis_client.get(key.name) == b'{"status": "in_progress"}'


async def test_a_page_fill_that_raced_a_family_invalidation_is_not_stored(
    redis_client: redis.asyncio.Redis,
) -> None:
    page = KEYS.status_page("new", None, 50)
    store = RedisStore(redis_client)
    fill, invalidated = await paused_fill(redis_client, page, 60, b"old page")
    # The page is not in the tag set yet: only the family's fence can stop its fill.
    assert not await redis_client.smembers(KEYS.status_family("new"))
    family = KEYS.status_family("new")
    await store.send(
        lambda cmds: store.queue_invalidate_family(cmds, family, KEYS.family_fence(family))
    )
    invalidated.set()
    await fill
    assert await redis_client.get(page.name) is None


@pytest.mark.parametrize("someone_filled_since", [False, True])
async def test_a_fill_that_outlived_a_redis_restart_is_not_stored(
    redis_client: redis.asyncio.Redis, someone_filled_since: bool
) -> None:
    """A restart without persistence loses every fence, and with them an invalidation
    made while the fill read PostgreSQL: the lost state must not look like the old one."""
    key = KEYS.order(11)
    store = RedisStore(redis_client)
    fill, restarted = await paused_fill(redis_client, key, 60, b'{"status": "new"}')
    await store.send(lambda cmds: store.queue_invalidate(cmds, key))
    await redis_client.flushdb()  # what a restart of a Redis without persistence leaves
    if someone_filled_since:
        other = KEYS.order(12)
        await reader(redis_client).get(other, 60, _const(b'{"status": "done"}'))
    restarted.set()

    assert (await fill).body == b'{"status": "new"}'
    assert await redis_client.get(key.name) is None


async def test_family_invalidation_reaches_every_cached_page(
    redis_client: redis.asyncio.Redis,
) -> None:
    store = RedisStore(redis_client)
    pages = [KEYS.status_page("done", cursor, 20) for cursor in (None, 900, 800)]
    for page in pages:
        await reader(redis_client).get(page, 60, _const(b"page"))
    family = KEYS.status_family("done")
    assert len(await redis_client.smembers(family)) == 3
    await store.send(
        lambda cmds: store.queue_invalidate_family(cmds, family, KEYS.family_fence(family))
    )
    for page in pages:
        assert await redis_client.get(page.name) is None
    assert not await redis_client.exists(family)


@pytest.mark.parametrize("processes", [1, 3])
async def test_a_stampede_on_a_missing_key_costs_one_select(
    redis_client: redis.asyncio.Redis, processes: int
) -> None:
    key = KEYS.dashboard()
    selects = 0

    async def select() -> bytes:
        nonlocal selects
        selects += 1
        await asyncio.sleep(0.1)
        return b"dashboard"

    # Generous timeouts: the assertion is about coalescing, and a loaded machine must not
    # turn a slow Redis reply or a slow filler into a second SELECT.
    readers = [
        reader(make_redis(_url(redis_client), 10.0, 64), wait=30.0, lease=30.0)
        for _ in range(processes)
    ]
    try:
        results = await asyncio.gather(
            *(readers[i % processes].get(key, 60, select) for i in range(300))
        )
    finally:
        for r in readers:
            await r.store.redis.aclose()
    assert selects == 1
    assert {r.body for r in results} == {b"dashboard"}


async def test_waiters_give_up_after_the_wait_and_read_the_database(
    redis_client: redis.asyncio.Redis,
) -> None:
    key = KEYS.new_orders()
    # another process holds the lease and never fills
    await redis_client.set(key.lease, "someone-else", px=10_000)
    served = await reader(redis_client, wait=0.05).get(key, 10, _const(b"fresh"))
    assert served.body == b"fresh"
    assert not served.hit
    assert await redis_client.get(key.name) is None  # only the lease holder stores


async def test_a_refresh_is_never_overwritten_by_an_older_one_or_an_older_fill(
    redis_client: redis.asyncio.Redis,
) -> None:
    key = KEYS.order(9)
    store = RedisStore(redis_client)
    # the key's first refresh records its position (and only invalidates: see below)
    await store.send(lambda cmds: store.queue_refresh(cmds, key, b"v0", 60, lsn_version(0x80)))
    fill, refreshed = await paused_fill(redis_client, key, 60, b"v0 (read before the refresh)")

    def queue(cmds: Commands) -> None:
        store.queue_refresh(cmds, key, b"v2", 60, lsn_version(0x200))
        store.queue_refresh(cmds, key, b"v1", 60, lsn_version(0x100))  # a replayed older one

    await store.send(queue)
    refreshed.set()
    await fill
    assert await redis_client.get(key.name) == b"v2"
    await store.send(lambda cmds: store.queue_refresh(cmds, key, b"v3", 60, lsn_version(0x300)))
    assert await redis_client.get(key.name) == b"v3"


@pytest.mark.parametrize("cached", [True, False])
async def test_a_refresh_whose_position_vanished_invalidates_instead_of_writing(
    redis_client: redis.asyncio.Redis, cached: bool
) -> None:
    """Without the position of what is there (evicted, or a fill's value, which has none),
    a refresh cannot tell whether it is older: a replayed or delayed older refresh must
    not overwrite a newer value, so it invalidates, and the next read fills afresh."""
    key = KEYS.order(10)
    store = RedisStore(redis_client)
    await store.send(lambda cmds: store.queue_refresh(cmds, key, b"v2", 60, lsn_version(0x200)))
    await store.send(lambda cmds: store.queue_refresh(cmds, key, b"v2", 60, lsn_version(0x200)))
    assert await redis_client.get(key.name) == b"v2"
    await redis_client.delete(f"{key.name}#version", *([] if cached else [key.name]))
    old = lambda cmds: store.queue_refresh(cmds, key, b"v1", 60, lsn_version(0x100))  # noqa: E731
    assert await store.send(old) == [2]
    assert await redis_client.get(key.name) is None
    newer = lambda cmds: store.queue_refresh(cmds, key, b"v3", 60, lsn_version(0x300))  # noqa: E731
    assert await store.send(newer) == [1]
    assert await store.send(old) == [0]
    assert await redis_client.get(key.name) == b"v3"


async def test_invalidations_and_refreshes_are_idempotent(
    redis_client: redis.asyncio.Redis,
) -> None:
    store = RedisStore(redis_client)
    key = KEYS.order(3)
    await store.send(lambda cmds: store.queue_refresh(cmds, key, b"v", 60, lsn_version(5)))
    for _ in range(2):

        def queue(cmds: Commands) -> None:
            store.queue_refresh(cmds, key, b"v", 60, lsn_version(5))
            store.queue_invalidate(cmds, KEYS.dashboard())

        await store.send(queue)
        assert await redis_client.get(key.name) == b"v"
        assert await redis_client.get(KEYS.dashboard().name) is None


async def test_a_batch_reaches_a_redis_that_lost_its_scripts(
    redis_client: redis.asyncio.Redis,
) -> None:
    """A restarted Redis (or SCRIPT FLUSH) forgets the scripts the listener sends by SHA:
    the batch is sent again once they are loaded (its actions are idempotent). Otherwise a
    batch is one round trip: no SCRIPT EXISTS before it."""
    store = RedisStore(redis_client)
    key, family = KEYS.order(8), KEYS.status_family("new")
    for _ in range(2):
        await redis_client.set(key.name, b"old")
        await redis_client.set(KEYS.dashboard().name, b"old")
        await redis_client.script_flush()

        def queue(cmds: Commands) -> None:
            store.queue_refresh(cmds, KEYS.dashboard(), b"new", 60, None)
            store.queue_invalidate(cmds, key)
            store.queue_invalidate_family(cmds, family, KEYS.family_fence(family))

        await store.send(queue)
        assert await redis_client.get(key.name) is None
        assert await redis_client.get(KEYS.dashboard().name) == b"new"
    await redis_client.config_resetstat()
    await store.send(lambda cmds: store.queue_invalidate(cmds, key))
    calls = await redis_client.info("commandstats")
    assert "cmdstat_script|exists" not in calls
    assert calls["cmdstat_evalsha"]["calls"] == 1


async def test_a_batch_reaches_redis_after_its_held_connection_was_closed(
    redis_client: redis.asyncio.Redis, redis_url: str
) -> None:
    """The store keeps one connection for its batches; a server that closed it (a restart,
    a CLIENT KILL) costs the next batch a second send on a fresh connection, not a failure."""
    listener = make_redis(redis_url, 2.0, 4)
    store = RedisStore(listener)
    key = KEYS.order(9)
    try:
        await store.send(lambda cmds: store.queue_invalidate(cmds, key))  # holds its connection
        await redis_client.set(key.name, b"old")
        killed = await redis_client.client_kill_filter(_type="normal", skipme=True)
        assert int(killed) >= 1
        await store.send(lambda cmds: store.queue_invalidate(cmds, key))
        assert await redis_client.get(key.name) is None
    finally:
        await listener.aclose()


def _const(body: bytes) -> Callable[[], Awaitable[bytes]]:
    async def load() -> bytes:
        return body

    return load


def _url(client: redis.asyncio.Redis) -> str:
    kw = client.connection_pool.connection_kwargs
    return f"redis://{kw['host']}:{kw['port']}/{kw['db']}"


async def test_request_counts_stay_bounded_and_a_new_favourite_can_still_rise(
    redis_client: redis.asyncio.Redis,
) -> None:
    """The counts warm-up reads keep at most `kept` members: once full, a new member takes
    the least requested one's place and count, plus one (Space-Saving), so it can rise."""
    store = RedisStore(redis_client)

    def counted(member: str) -> Counter:
        return Counter("requests", member)

    await store.count({counted("a"): 5, counted("b"): 3, counted("c"): 1}, kept=3)
    await store.count({counted("d"): 1}, kept=3)  # full: d replaces c, with c's count + 1
    assert await redis_client.zrange("requests", 0, -1, withscores=True) == [
        (b"d", 2.0),
        (b"b", 3.0),
        (b"a", 5.0),
    ]
    await store.count({counted("d"): 4}, kept=3)
    assert await redis_client.zcard("requests") == 3
    top = await redis_client.zrevrange("requests", 0, 0)
    assert top == [b"d"]
