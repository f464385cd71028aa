"""Tracked near hits on a real Redis: served with no round trip only while the invalidation
channel is proven, dropped by every change Redis reports (anyone's raw SET or DEL, the
listener's scripts, a flush), and checked again the moment the channel is lost, silent,
past its heartbeat bound, or rebuilt after a Redis restart.

Time is driven, never slept on: the channel's clock is the monotonic clock plus a skew the
tests move, heartbeats are sent on demand (`beat_now`) with the interval set to an hour, and
every wait is for an event with a bound that only guards against a hang.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import redis.asyncio

from api.app import create_app
from api.breaker import RedisBreaker
from api.nearcache import NearCache, read_names
from api.readthrough import Read, ReadThrough
from api.settings import ApiSettings
from api.tracking import TrackingChannel
from devtools.devstack import RedisServer
from devtools.faultproxy import FaultProxy
from devtools.redisha import LocalSentinel
from mescache.keys import CacheKey, KeySchema
from mescache.redisconn import make_redis
from mescache.store import RedisStore
from tests.conftest import Servers
from tests.integration.conftest import api_settings, http_client

KEYS = KeySchema()
OLD = b"o" * 20_000
NEW = b"n" * 20_000
HANG = 10.0  # a guard against a hang, never a figure asserted
HOUR = 3600.0


class Skew:
    """The channel's clock: monotonic time plus an offset the test moves."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.offset


def _const(body: bytes) -> Callable[[], Awaitable[bytes]]:
    async def load() -> bytes:
        return body

    return load


async def _unexpected() -> bytes:
    raise AssertionError("the read went to PostgreSQL")


@asynccontextmanager
async def tracked_process(
    url: str,
    *,
    channel_url: str | None = None,
    bound: float = HOUR,
    clock: Callable[[], float] = time.monotonic,
    redis_timeout: float = 1.0,
) -> AsyncIterator[tuple[ReadThrough, TrackingChannel]]:
    """One API process's read path with a tracked near cache, its channel proven once
    (heartbeats only on demand afterwards)."""
    channel = TrackingChannel(
        channel_url or url,
        redis_timeout,
        KEYS.near_beat("test"),
        bound=bound,
        beat=HOUR,
        silent_after=2.0,
        retry=0.05,
        clock=clock,
    )
    client = make_redis(url, redis_timeout, 8)
    near = NearCache(16_384, 1 << 20, channel)
    api = ReadThrough(RedisStore(client), RedisBreaker(1e-6), lease=2.0, wait=1.0, near=near)
    await near.start()
    try:
        assert await channel.until(lambda: channel.proven_now, HANG)
        yield api, channel
    finally:
        await api.close()
        await client.aclose()


async def _tracked_copy(api: ReadThrough, key: CacheKey) -> None:
    """Fill `key` with OLD (or find it in Redis) and read it until the copy is served
    tracked: a copy kept from a fill or a plain GET is checked once (that check goes
    through the tracked client and marks it), then served tracked."""
    assert (await api.get(key, 60, _const(OLD))).body == OLD
    await _until_tracked(api, key, OLD)


async def _evalsha_calls(client: redis.asyncio.Redis) -> int:
    stats = await client.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


async def _gone(channel: TrackingChannel, near: NearCache, key: CacheKey) -> bool:
    return await channel.until(lambda: near.lookup(key.name) is None, HANG)


async def test_a_tracked_copy_is_served_with_no_round_trip(
    redis_url: str, redis_client: redis.asyncio.Redis
) -> None:
    key = KEYS.dashboard()
    async with tracked_process(redis_url) as (api, _):
        await _tracked_copy(api, key)
        before = await _evalsha_calls(redis_client)
        for _ in range(20):
            assert await api.get(key, 60, _unexpected) == Read(OLD, hit=True)
        assert await _evalsha_calls(redis_client) == before  # no read, no beat in between
        assert api.near.counts.tracked >= 21


async def test_a_raw_set_or_del_by_another_client_reaches_every_tracking_process(
    redis_url: str, redis_client: redis.asyncio.Redis
) -> None:
    key = KEYS.dashboard()
    async with tracked_process(redis_url) as (one, ch1), tracked_process(redis_url) as (two, ch2):
        await _tracked_copy(one, key)
        await _tracked_copy(two, key)
        # A DBA's SET on Redis itself moves no fence: only tracking can tell.
        assert await redis_client.set(key.name, NEW, keepttl=True, xx=True)
        assert await _gone(ch1, one.near, key)
        assert await _gone(ch2, two.near, key)
        assert (await one.get(key, 60, _unexpected)).body == NEW
        assert (await two.get(key, 60, _unexpected)).body == NEW
        assert await redis_client.delete(key.name) == 1
        assert await _gone(ch1, one.near, key)
        assert (await one.get(key, 60, _const(OLD))) == Read(OLD, hit=False)  # a miss


async def test_the_listeners_invalidation_and_refresh_drop_the_tracked_copy(
    redis_url: str, redis_client: redis.asyncio.Redis
) -> None:
    key = KEYS.dashboard()
    listener = RedisStore(redis_client)
    async with tracked_process(redis_url) as (api, channel):
        await _tracked_copy(api, key)
        await listener.send(lambda cmds: listener.queue_refresh(cmds, key, NEW, 60, None))
        assert await _gone(channel, api.near, key)
        assert (await api.get(key, 60, _unexpected)).body == NEW
        await _tracked_family_member(api, channel, listener)


async def _tracked_family_member(
    api: ReadThrough, channel: TrackingChannel, listener: RedisStore
) -> None:
    """A family member's copy rests on its family's fence: moving the fence drops it."""
    page = KEYS.status_page("new", None, 50)
    await _tracked_copy(api, page)
    family = KEYS.status_family("new")
    await listener.send(
        lambda cmds: listener.queue_invalidate_family(cmds, family, KEYS.family_fence(family))
    )
    assert await _gone(channel, api.near, page)
    assert (await api.get(page, 60, _const(NEW))) == Read(NEW, hit=False)


async def test_a_flush_drops_every_tracked_copy(
    redis_url: str, redis_client: redis.asyncio.Redis
) -> None:
    keys = [KEYS.dashboard(), KEYS.new_orders()]
    async with tracked_process(redis_url) as (api, channel):
        for key in keys:
            await _tracked_copy(api, key)
        await redis_client.flushdb()  # reported as a null message
        assert await channel.until(lambda: len(api.near) == 0, HANG)
        assert channel.flushes == 1
        for key in keys:
            assert (await api.get(key, 60, _const(NEW))) == Read(NEW, hit=False)


async def test_an_invalidation_processed_before_the_reads_reply_leaves_the_copy_checked(
    redis_url: str, redis_client: redis.asyncio.Redis
) -> None:
    key = KEYS.dashboard()
    async with tracked_process(redis_url) as (api, channel):
        assert (await api.get(key, 60, _const(OLD))).hit is False
        near = api.near
        watch = near.watch(key.name)
        assert watch is not None
        assert watch.store is not None
        reply = await watch.store.read(key, b"")  # tracked from here on
        assert reply.value == OLD
        # A refresh after the read, whose message is processed before the reply is handled.
        listener = RedisStore(redis_client)
        await listener.send(lambda cmds: listener.queue_refresh(cmds, key, NEW, 60, None))
        assert await channel.until(lambda: channel.watch().seq > watch.seq, HANG)
        near.keep(
            key.name, reply.token, OLD, time.monotonic() + 60, watch=watch, names=read_names(key)
        )
        assert near.tracked_hit(key.name) is None  # kept, but not vouched for
        assert (await api.get(key, 60, _unexpected)).body == NEW  # the check saw the change


async def test_a_killed_subscription_falls_back_to_checked_hits_until_proven_again(
    redis_url: str, redis_client: redis.asyncio.Redis
) -> None:
    key = KEYS.dashboard()
    async with tracked_process(redis_url) as (api, channel):
        await _tracked_copy(api, key)
        first = channel.gen
        assert channel.client_id is not None
        assert await redis_client.client_kill_filter(_id=str(channel.client_id)) == 1
        assert await channel.until(lambda: channel.losses["lost"] == 1, HANG)
        # Nobody would hear of this change now: the hit must ask Redis.
        assert await redis_client.delete(key.name) == 1
        assert (await api.get(key, 60, _const(NEW))) == Read(NEW, hit=False)
        assert await channel.until(lambda: channel.proven_now and channel.gen > first, HANG)
        counts = api.near.counts
        checked = counts.checked
        # The copy was filled through the main client: checked once, then tracked again.
        assert await api.get(key, 60, _unexpected) == Read(NEW, hit=True)
        assert counts.checked == checked + 1
        tracked = counts.tracked
        assert await api.get(key, 60, _unexpected) == Read(NEW, hit=True)
        assert counts.tracked == tracked + 1


async def test_past_the_heartbeat_bound_hits_are_checked_until_a_heartbeat_returns(
    redis_url: str, redis_client: redis.asyncio.Redis
) -> None:
    key = KEYS.dashboard()
    skew = Skew()
    async with tracked_process(redis_url, bound=5.0, clock=skew) as (api, channel):
        await _tracked_copy(api, key)
        counts = api.near.counts
        skew.offset += 5.5  # the last heartbeat is now older than the bound
        assert not channel.proven_now
        checked = counts.checked
        assert await api.get(key, 60, _unexpected) == Read(OLD, hit=True)
        assert (counts.fallbacks, counts.checked) == (1, checked + 1)
        channel.beat_now()
        assert await channel.until(lambda: channel.proven_now, HANG)
        # That check went through the main client (it tracks nothing): checked once more
        # through the tracked one, then tracked.
        await _until_tracked(api, key, OLD)


@pytest.fixture
async def redis_proxy(servers: Servers) -> AsyncIterator[FaultProxy]:
    async with FaultProxy("127.0.0.1", servers.redis.port) as proxy:
        yield proxy


async def test_a_silent_channel_stops_tracked_hits_and_is_rebuilt(
    redis_url: str, redis_client: redis.asyncio.Redis, redis_proxy: FaultProxy
) -> None:
    key = KEYS.dashboard()
    skew = Skew()
    async with tracked_process(
        redis_url,
        channel_url=redis_proxy.url_for(redis_url),
        bound=5.0,
        clock=skew,
        redis_timeout=0.5,
    ) as (api, channel):
        await _tracked_copy(api, key)
        first = channel.gen
        redis_proxy.black_hole()  # the channel's connections: open, and silent
        assert await redis_client.delete(key.name) == 1  # its message is swallowed
        skew.offset += 5.5
        # Past the bound, the read asks Redis through the main client (not the silent one).
        assert (await api.get(key, 60, _const(NEW))) == Read(NEW, hit=False)
        assert api.near.counts.fallbacks == 1
        channel.beat_now()  # a heartbeat into the silence ends the generation
        assert await channel.until(lambda: sum(channel.losses.values()) >= 1, HANG)
        redis_proxy.heal()
        assert await channel.until(lambda: channel.proven_now and channel.gen > first, HANG)


@pytest.fixture
def own_redis(tmp_path: Path, servers: Servers) -> Iterator[RedisServer]:
    """A Redis of this test's own, free to be restarted."""
    server = RedisServer(tmp_path / "redis", servers.redis.binary)
    server.start()
    yield server
    server.stop()


async def test_a_redis_restart_and_flushall_leave_no_copy_served_unchecked(
    own_redis: RedisServer,
) -> None:
    url = own_redis.url()
    key = KEYS.dashboard()
    async with tracked_process(url) as (api, channel):
        await _tracked_copy(api, key)
        first, tracked = channel.gen, api.near.counts.tracked
        own_redis.stop()
        assert await channel.until(lambda: not channel.proven_now, HANG)
        own_redis.start()  # same port, empty
        assert await channel.until(lambda: channel.proven_now and channel.gen > first, HANG)
        # The copy is of the first generation: never served unchecked again. Redis lost the
        # value, so the check finds nothing; reads meeting the main client's dead
        # connections go to PostgreSQL: misses either way, until one fills Redis again.
        assert (await api.get(key, 60, _const(NEW))) == Read(NEW, hit=False)
        assert api.near.counts.tracked == tracked
        for _ in range(10):
            if (await api.get(key, 60, _const(NEW))).hit:
                break
        await _until_tracked(api, key, NEW)
        other = KEYS.new_orders()
        assert (await api.get(other, 60, _const(OLD))).hit is False
        await _until_tracked(api, other, OLD)
        async with redis.asyncio.Redis.from_url(url) as raw:
            await raw.flushall()
        assert await channel.until(lambda: len(api.near) == 0, HANG)


async def _until_tracked(api: ReadThrough, key: CacheKey, body: bytes) -> None:
    """Read `key` (each read answered with `body`) until one is a tracked hit, a few reads
    at most: a check marks the copy, the next read is tracked."""
    for _ in range(4):
        tracked = api.near.counts.tracked
        assert (await api.get(key, 60, _unexpected)).body == body
        if api.near.counts.tracked > tracked:
            return
    raise AssertionError("never served tracked")


def tracked_app_settings(database_url: str, redis_url: str) -> ApiSettings:
    """An app's settings with tracked near hits of any size. A bound of seconds: on a loaded
    machine a 50 ms one may lapse between two reads."""
    return api_settings(
        database_url,
        redis_url,
        near_cache="tracked",
        near_cache_min_bytes=1,
        near_tracking_bound=5.0,
        near_tracking_beat=0.5,
    )


async def test_the_app_serves_tracked_hits_and_exports_the_channels_series(
    database_url: str, redis_url: str
) -> None:
    app = create_app(tracked_app_settings(database_url, redis_url))
    async with app.router.lifespan_context(app), http_client(app) as http:
        near = app.state.ctx.cache.near
        assert near.channel is not None
        assert await near.channel.until(lambda: near.channel.proven_now, HANG)
        bodies = [(await http.get("/orders/dashboard")).content for _ in range(4)]
        assert len(set(bodies)) == 1
        assert near.counts.tracked >= 1
        metrics = (await http.get("/metrics")).text
        assert 'orders_api_near_hits_total{mode="tracked"}' in metrics
        assert "orders_api_near_channel_proven" in metrics
        assert "orders_api_near_fallbacks_total" in metrics


async def test_behind_sentinel_the_channel_follows_a_failover(
    redis_sentinel: LocalSentinel,
) -> None:
    url = redis_sentinel.url
    key = KEYS.dashboard()
    async with tracked_process(url) as (api, channel):
        await _tracked_copy(api, key)
        first = channel.gen
        promoted = await asyncio.to_thread(redis_sentinel.kill_master)
        assert await channel.until(lambda: channel.proven_now and channel.gen > first, 30)
        # The copy was tracked on the old master: checked on the new one before it is
        # tracked again, and a change there reaches it.
        await _until_tracked_after_misses(api, key)
        promoted.call("DEL", key.name)
        assert await _gone(channel, api.near, key)


async def _until_tracked_after_misses(api: ReadThrough, key: CacheKey) -> None:
    """Reads answered from PostgreSQL (a failover's dead connections) until one fills or
    finds Redis's value, then until one is tracked."""
    for _ in range(20):
        if (await api.get(key, 60, _const(OLD))).hit:
            break
    await _until_tracked(api, key, OLD)
