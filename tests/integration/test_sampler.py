"""The consistency sampler against real PostgreSQL and Redis: it finds a planted stale
value once its grace is over, forgives values invalidated or refreshed meanwhile, flags
nothing while the listener keeps the cache right, stays within its rate, and its figure
reaches `/stats`. Time is a driven clock: nothing here waits for a grace period."""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import cast

import httpx
import pytest
import redis.asyncio
from redis.asyncio import Redis

from cdc_listener.apply import Batch
from cdc_listener.metrics import ListenerMetrics
from cdc_listener.sampler import Sampler
from devtools.redisha import LocalCluster
from mescache.db import make_pool
from mescache.keys import KeySchema
from mescache.rules import Touched
from mescache.settings import CacheSettings
from mescache.store import RedisStore
from tests.integration.listener_fixtures import InProcessListener, eventually, listener_settings
from tests.integration.test_check import fill
from tests.integration.test_listener import dba, drop_slot

GRACE = 2.0
KEYS = KeySchema()


class DrivenClock:
    """The sampler's clock and sleep: sleeping moves the clock, nothing waits."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps = 0
        self.stop_after: int | None = None
        self.stop = asyncio.Event()

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += max(0.0, seconds)
        self.sleeps += 1
        if self.stop_after is not None and self.sleeps >= self.stop_after:
            self.stop.set()


@asynccontextmanager
async def sampler_for(
    database_url: str,
    redis_url: str,
    clock: DrivenClock,
    rate: float = 5.0,
    random_share: float = 0.0,
) -> AsyncIterator[Sampler]:
    """A sampler on a driven clock; by default it takes only invalidated values while
    some wait (`random_share` 0), so a test knows what each tick compares."""
    settings = CacheSettings(database_url=database_url, redis_url=redis_url)
    pool = make_pool(database_url, 1, 2, "sampler-test")
    await pool.open()
    r = redis.asyncio.Redis.from_url(redis_url)
    metrics = ListenerMetrics("logical", "test")
    metrics.streaming = True
    try:
        yield Sampler(
            r,
            pool,
            KEYS,
            settings,
            metrics,
            rate=rate,
            grace=GRACE,
            window=60.0,
            random_share=random_share,
            clock=clock,
            sleep=clock.sleep,
            rng=random.Random(16),
        )
    finally:
        await r.aclose()
        await pool.close()


def invalidated(*orders: int) -> Batch:
    """An announced batch that invalidated these orders."""
    return Batch(touched=Touched(orders=set(orders)))


async def plant_wrong_quantity(redis_url: str, order_id: int) -> None:
    """A value under a real key that PostgreSQL contradicts, its fence untouched."""
    async with redis.asyncio.Redis.from_url(redis_url) as r:
        cached = await r.get(KEYS.order(order_id).name)
        assert cached is not None
        wrong = json.loads(cached)
        wrong["quantity"] += 5
        await r.set(KEYS.order(order_id).name, json.dumps(wrong).encode())


async def test_a_planted_stale_value_is_found_after_its_grace_logged_once_and_shown(
    client: httpx.AsyncClient,
    database_url: str,
    redis_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await fill(client)
    await plant_wrong_quantity(redis_url, 1)
    clock = DrivenClock()
    caplog.set_level(logging.WARNING, "cdc_listener.sampler")
    async with sampler_for(database_url, redis_url, clock) as sampler:
        metrics = sampler.metrics
        for round_ in (1, 2):
            sampler.invalidated(invalidated(1))
            clock.now += GRACE
            await sampler.tick()  # compared: differs, a suspect for one more grace
            assert metrics.consistency_checks["invalidated"] == round_
            assert metrics.consistency_stale["invalidated"] == round_ - 1
            clock.now += GRACE
            await sampler.tick()  # read again: nothing moved it, still differs
            assert metrics.consistency_stale["invalidated"] == round_
        assert metrics.consistency_checks["random"] == 0
        assert metrics.stale_found["order"] == 1  # one stale value, however often seen
        ages = {s.name: s.value for m in metrics.staleness_age.collect() for s in m.samples}
        assert ages["cdc_listener_staleness_age_seconds_count"] == 2
        assert ages["cdc_listener_staleness_age_seconds_sum"] == 2 * 2 * GRACE  # since announced
        [record] = [r for r in caplog.records if r.getMessage() == "stale cached value"]
        found = record.__dict__
        assert found["key"] == "order:{1}"
        assert " B blake2b:" in found["cached"]
        assert " B blake2b:" in found["database"]
        assert found["database"] != found["cached"]
        assert "," not in found["fences"]  # one fence: the order's own
        assert found["token"] == "none"  # an order is no family member
        assert sampler.window.figure() == {"nines": 0.0, "checks": 2, "stale": 2, "window_s": 60}
        await sampler.publish()
    stats = (await client.get("/stats")).json()
    assert stats["consistency"] == {"nines": 0.0, "checks": 2, "stale": 2, "window_s": 60}


async def test_an_invalidated_value_waits_for_its_grace_before_it_is_compared(
    client: httpx.AsyncClient, database_url: str, redis_url: str
) -> None:
    await fill(client)
    clock = DrivenClock()
    async with sampler_for(database_url, redis_url, clock) as sampler:
        sampler.invalidated(invalidated(1))
        clock.now = GRACE - 0.01
        await sampler.tick()  # the listener may still be at work: a random value instead
        assert sampler.metrics.consistency_checks["invalidated"] == 0
        clock.now = GRACE
        await sampler.tick()
        assert sampler.metrics.consistency_checks["invalidated"] == 1


async def test_a_value_invalidated_or_refreshed_during_the_grace_is_not_stale(
    client: httpx.AsyncClient, database_url: str, redis_url: str
) -> None:
    await fill(client)
    await plant_wrong_quantity(redis_url, 1)
    await plant_wrong_quantity(redis_url, 2)
    clock = DrivenClock()
    async with (
        sampler_for(database_url, redis_url, clock) as sampler,
        redis.asyncio.Redis.from_url(redis_url) as r,
    ):
        store = RedisStore(r)
        sampler.invalidated(invalidated(1, 2))
        clock.now += GRACE
        await sampler.tick()
        await sampler.tick()
        assert sampler.metrics.consistency_checks["invalidated"] == 2  # both differ
        # Meanwhile the listener deletes one and refreshes the other with the truth.
        await store.send(lambda cmds: store.queue_invalidate(cmds, KEYS.order(1)))
        truth = (await sampler.checker.compare([KEYS.order(2).name]))[0].truth
        assert truth is not None
        assert truth != await r.get(KEYS.order(2).name)
        await store.send(lambda cmds: store.queue_refresh(cmds, KEYS.order(2), truth, 300.0, None))
        clock.now += GRACE
        await sampler.tick()
        await sampler.tick()
        assert sampler.metrics.consistency_stale == {"invalidated": 0, "random": 0}
        assert sampler.metrics.stale_found["order"] == 0
        # A correct value is checked and passes at once.
        sampler.invalidated(invalidated(2))
        clock.now += GRACE
        await sampler.tick()
        assert sampler.metrics.consistency_checks["invalidated"] == 3
        clock.now += GRACE
        await sampler.tick()
        assert sampler.metrics.consistency_stale == {"invalidated": 0, "random": 0}


async def test_the_rate_bounds_the_checks_whatever_is_waiting(
    client: httpx.AsyncClient, database_url: str, redis_url: str
) -> None:
    await fill(client)
    clock = DrivenClock()
    clock.stop_after = 40
    async with sampler_for(database_url, redis_url, clock, rate=4.0, random_share=0.5) as sampler:
        # Far more invalidated values waiting than the rate allows.
        for _ in range(50):
            sampler.invalidated(invalidated(1, 2))
        clock.now += GRACE
        started = clock.now
        await sampler.run(clock.stop)
        metrics = sampler.metrics
        elapsed = clock.now - started
    checks = sum(metrics.consistency_checks.values())
    assert sampler.ticks == 40
    assert elapsed == pytest.approx(40 / 4.0)
    assert checks <= 4.0 * elapsed
    # Half the ticks take an invalidated value, half a random one: both are sampled.
    assert metrics.consistency_checks["invalidated"] == 20
    assert metrics.consistency_checks["random"] == 20
    assert metrics.consistency_nines == pytest.approx(1.602, abs=0.001)  # log10(40)


async def test_with_the_listener_running_the_sampler_checks_changed_values_and_finds_none(
    client: httpx.AsyncClient, database_url: str, redis_url: str
) -> None:
    settings = listener_settings(
        database_url,
        redis_url,
        cdc_refresh=True,
        cdc_sample_rate=200.0,
        cdc_check_grace=1.0,
        cdc_probe_interval=0.2,
    )
    running = InProcessListener(settings)
    await running.start()
    try:
        await fill(client)
        metrics = running.metrics

        async def sampled_changes() -> bool:
            dba(database_url, "UPDATE orders SET quantity = quantity + 1 WHERE id IN (1, 2)")
            await fill(client)  # readers refill what was invalidated
            return metrics.consistency_checks["invalidated"] >= 10

        await eventually(sampled_changes, "the sampler checked changed values", within=30)
        assert metrics.consistency_checks["random"] > 0
        assert metrics.consistency_stale == {"invalidated": 0, "random": 0}
        assert sum(metrics.stale_found.values()) == 0

        async def timed_a_probe() -> bool:
            delays = metrics.invalidation_delay.collect()
            counts = [s.value for m in delays for s in m.samples if s.name.endswith("_count")]
            return counts[0] >= 1

        await eventually(timed_a_probe, "the probe timed an invalidation end to end")
        assert metrics.probes_missed == 0

        async def shown() -> bool:  # the figure reaches /stats while the listener samples
            figure = (await client.get("/stats")).json()["consistency"]
            return figure is not None and figure["checks"] > 0

        await eventually(shown, "the consistency figure in /stats")
        figure = (await client.get("/stats")).json()["consistency"]
        assert figure["stale"] == 0
        assert figure["window_s"] == 900
    finally:
        await running.close()
        drop_slot(database_url, settings.cdc_slot)


async def test_on_a_cluster_random_values_come_from_every_master(
    redis_cluster: LocalCluster, cluster_client: Redis, database_url: str
) -> None:
    keys = KeySchema("test:")
    for order_id in range(60):
        await cluster_client.set(keys.order(order_id).name, b"{}")
        await cluster_client.set(keys.order(order_id).fence, b"1")  # companions: never picked
    held_by = {
        name.decode(): primary.port
        for primary in redis_cluster.primaries()
        for name in cast(list[bytes], primary.call("KEYS", "*"))
    }
    settings = CacheSettings(database_url=database_url, redis_url=redis_cluster.url)
    pool = make_pool(database_url, 0, 1, "sampler-test")  # never opened: nothing is compared
    sampler = Sampler(
        cluster_client,
        pool,
        keys,
        settings,
        ListenerMetrics("logical", "test"),
        rate=5.0,
        grace=GRACE,
        window=60.0,
        rng=random.Random(16),
    )
    picked = [await sampler.random_value_name() for _ in range(30)]
    assert all(name is not None and "#" not in name for name in picked)
    assert {held_by[name] for name in picked if name is not None} == {
        p.port for p in redis_cluster.primaries()
    }
