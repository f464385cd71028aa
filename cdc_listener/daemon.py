"""`cdc-listener run`: wires the source, the applier and Redis, and keeps them running.

Retryable failures (a lost or silent connection to PostgreSQL or Redis, a slot held by
another listener) are retried with jittered backoff, each time from the slot's confirmed position
or the outbox, which is exactly where nothing is lost. A standby is simply a listener whose
slot is held: it retries every CDC_STANDBY_RETRY seconds and takes over when the holder
dies. Anything else (a message we cannot decode, a bad setting) ends the process loudly.
SIGTERM and SIGINT finish the batch in flight, confirm it, and close.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import signal
from collections.abc import AsyncIterator, Coroutine
from typing import Any

from redis.exceptions import RedisError

from cdc_listener.apply import Applier
from cdc_listener.endpoint import serving
from cdc_listener.errors import SlotInUse
from cdc_listener.lag_probe import Prober
from cdc_listener.logical import LogicalSource
from cdc_listener.master_watch import MasterWatch
from cdc_listener.metrics import ListenerMetrics
from cdc_listener.notify import NotifySource
from cdc_listener.publish import ChangePublisher
from cdc_listener.sampler import Sampler, probe_forever
from cdc_listener.settings import ListenerSettings
from cdc_listener.slot import Walsender
from mescache import heap
from mescache.db import make_pool
from mescache.engine import require_supported
from mescache.errors import is_retryable
from mescache.keys import KeySchema
from mescache.redisconn import make_redis
from mescache.store import RedisStore

log = logging.getLogger("cdc_listener")

_MAX_BACKOFF = 30.0


async def run(
    settings: ListenerSettings,
    stop: asyncio.Event | None = None,
    signals: bool = True,
    metrics: ListenerMetrics | None = None,
    settle_heap: bool = False,
) -> None:
    """Follow the change stream until `stop` (or SIGTERM/SIGINT with `signals`).
    `settle_heap` tunes the garbage collector once set up (mescache.heap): for the daemon's
    own process, not for one that embeds it (tests)."""
    stop = stop or asyncio.Event()
    metrics = metrics or ListenerMetrics(settings.cdc_mode, settings.cdc_slot)
    metrics.liveness = settings.cdc_liveness_timeout
    loop = asyncio.get_running_loop()
    if signals:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
    redis = make_redis(settings.redis_url, max(settings.redis_timeout, 5.0), 8)
    keys = KeySchema(settings.key_prefix)
    store = RedisStore(redis)
    # Refresh reads rows, and a material or pricing rule change reads the models' ids.
    pool = make_pool(settings.database_url, 0, 2, "cdc-listener", settings.cdc_liveness_timeout)
    await pool.open(wait=False)
    applier = Applier(store, keys, settings, settings.cdc_refresh, pool)
    # The consistency sampler's queries run on a pool of their own: they never wait for,
    # nor hold up, the applier's refresh reads.
    sample_pool = make_pool(
        settings.database_url, 0, 1, "cdc-listener-sampler", settings.cdc_liveness_timeout
    )
    await sample_pool.open(wait=False)
    sampler = Sampler(
        redis,
        sample_pool,
        keys,
        settings,
        metrics,
        rate=settings.cdc_sample_rate,
        grace=settings.cdc_check_grace,
        window=settings.cdc_sample_window,
    )
    publisher = ChangePublisher(
        redis,
        keys.changes_channel(),
        with_lsn=settings.cdc_mode == "logical",
        observer=sampler.invalidated if settings.cdc_sample_rate > 0 else None,
    )
    prober = Prober(settings.database_url, redis, keys)
    if settle_heap:
        heap.settle()
    watch = MasterWatch(redis, store, keys)  # a new Redis master may have lost writes
    try:
        with contextlib.suppress(RedisError):  # unreachable: the source retries as usual
            await require_supported(redis)
        await watch.start()
        async with (
            serving(settings, metrics),
            _beside(
                sampler.run(stop), probe_forever(prober, metrics, settings.cdc_probe_interval, stop)
            ),
        ):
            await _follow(settings, stop, applier, publisher, metrics)
    finally:
        if signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
        await watch.close()
        await publisher.close()
        await redis.aclose()
        await pool.close()
        await sample_pool.close()


async def _follow(
    settings: ListenerSettings,
    stop: asyncio.Event,
    applier: Applier,
    publisher: ChangePublisher,
    metrics: ListenerMetrics,
) -> None:
    """Run a source until `stop`, starting a new one after every retryable failure."""
    backoff = 0.5
    ever_ready = False
    own: Walsender | None = None  # the walsender of our last stream, which may linger
    while not stop.is_set():
        source: LogicalSource | NotifySource = (
            LogicalSource(
                settings,
                applier,
                applier.store,
                applier.keys,
                publisher,
                metrics=metrics,
                previous=own,
            )
            if settings.cdc_mode == "logical"
            else NotifySource(settings, applier, publisher, metrics)
        )
        try:
            try:
                await _run_source(source, stop, metrics)
            finally:
                if isinstance(source, LogicalSource) and source.walsender is not None:
                    own = source.walsender
            ever_ready = True
            backoff = 0.5
        except SlotInUse:
            ever_ready = True  # the server answered: a standby keeps trying
            log.info("standby: slot held by another listener", extra={"slot": settings.cdc_slot})
            await _sleep(stop, settings.cdc_standby_retry * random.uniform(0.8, 1.2))
        except Exception as exc:
            if not is_retryable(exc):  # the error tree decides (mescache.errors)
                raise
            ever_ready = ever_ready or source.ready
            if not ever_ready:
                raise  # misconfigured or unreachable from the start: say so and exit
            if source.ready:
                backoff = 0.5  # it streamed: a new failure, not the same one again
            metrics.reconnects += 1
            if isinstance(exc, RedisError):
                # Connections opened before the failure may be as silent as the one that
                # timed out: open new ones rather than wait out a timeout on each.
                await applier.store.drop_idle_connections()
            log.warning(
                "source failed, reconnecting",
                extra={"slot": settings.cdc_slot, "retry_in": round(backoff, 2), "error": str(exc)},
            )
            await _sleep(stop, backoff * random.uniform(0.5, 1.5))
            backoff = min(backoff * 2, _MAX_BACKOFF)


async def _run_source(
    source: LogicalSource | NotifySource, stop: asyncio.Event, metrics: ListenerMetrics
) -> None:
    try:
        await source.run(stop)
    finally:
        metrics.source_lost()  # not ready from the moment the stream is gone


@contextlib.asynccontextmanager
async def _beside(*work: Coroutine[Any, Any, None]) -> AsyncIterator[None]:
    """Run `work` as tasks while the body runs; cancel them after. One that fails is
    logged and stays stopped: measuring must never stop the listener."""
    tasks = [asyncio.create_task(w) for w in work]
    for task in tasks:
        task.add_done_callback(_report_failure)
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _report_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("consistency sampling stopped", exc_info=task.exception())


async def _sleep(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
