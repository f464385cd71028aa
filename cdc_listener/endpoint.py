"""The listener's HTTP endpoint on METRICS_PORT: `/metrics`, `/healthz`, `/readyz`; and the
poll that reads the slot's retained WAL (or the outbox backlog), and the length of
write-behind's dead-letter stream, for the gauges.

uvicorn serves a small Starlette app inside the daemon's own event loop. Signals stay the
daemon's: SIGTERM must finish the batch in flight and confirm it, not stop uvicorn. The
socket is bound here, before uvicorn starts, so a port in use is an ordinary OSError with
a clear message instead of uvicorn exiting the process.

The port is for scrapers and probes, a handful of clients: a few connections at most,
requests that arrive whole within seconds, small heads, idle connections closed soon
(mescache.http_limits), so no client can hold the daemon's file descriptors.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from collections.abc import AsyncIterator, Iterator

import psycopg
import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST
from redis.asyncio import Redis
from redis.exceptions import RedisError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cdc_listener.metrics import ListenerMetrics
from cdc_listener.notify import outbox_backlog
from cdc_listener.settings import ListenerSettings
from cdc_listener.slot import slot_status
from mescache.db import severed_after, with_liveness
from mescache.http_limits import ConnectionLimits, limited_http
from mescache.keys import KeySchema
from mescache.redisconn import make_redis

log = logging.getLogger("cdc_listener.endpoint")

LIMITS = ConnectionLimits(max_connections=32, request_timeout=5.0, max_header_bytes=8192)
IDLE_TIMEOUT = 5  # s an idle keep-alive connection stays open (a scrape interval is longer)


def make_app(metrics: ListenerMetrics) -> Starlette:
    """The HTTP app of the metrics port: /metrics, /healthz and /readyz."""

    async def prometheus(_: Request) -> Response:
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    async def healthz(_: Request) -> Response:
        return _json(200, {"status": "ok"})

    async def readyz(_: Request) -> Response:
        body: dict[str, object] = {
            "status": "ready" if metrics.ready else "not ready",
            "mode": metrics.mode,
            "streaming": metrics.streaming,
            "caught_up": metrics.caught_up,
        }
        if metrics.mode == "logical":
            body["slot"] = metrics.slot
        return _json(200 if metrics.ready else 503, body)

    return Starlette(
        routes=[
            Route("/metrics", prometheus),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
        ]
    )


def _json(status: int, body: dict[str, object]) -> Response:
    return Response(json.dumps(body), status, media_type="application/json")


class _EmbeddedServer(uvicorn.Server):
    """uvicorn without its signal handlers: the daemon owns SIGTERM and SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@contextlib.asynccontextmanager
async def serving(settings: ListenerSettings, metrics: ListenerMetrics) -> AsyncIterator[None]:
    """Serve the endpoint and poll the slot while the body runs (no-op if METRICS_PORT=0)."""
    if not settings.metrics_port:
        yield
        return
    sock = socket.create_server((settings.metrics_host, settings.metrics_port))
    config = uvicorn.Config(
        make_app(metrics),
        log_config=None,
        access_log=False,
        lifespan="off",
        log_level="warning",
        http=limited_http(LIMITS),
        timeout_keep_alive=IDLE_TIMEOUT,
    )
    server = _EmbeddedServer(config)
    serve = asyncio.create_task(server.serve(sockets=[sock]))
    poll = asyncio.create_task(_poll(settings, metrics))
    log.info(
        "metrics endpoint listening",
        extra={"host": settings.metrics_host, "port": settings.metrics_port},
    )
    try:
        yield
    finally:
        poll.cancel()
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await poll
        await serve
        sock.close()


async def _poll(settings: ListenerSettings, metrics: ListenerMetrics) -> None:
    """Read the slot's retained WAL (or the outbox backlog) every METRICS_POLL_INTERVAL on
    an ordinary connection: the replication connection carries only the stream. The
    dead-letter stream's length is read on a Redis connection of the poll's own."""
    redis = make_redis(settings.redis_url, max(settings.redis_timeout, 1.0), 1)
    try:
        await _poll_forever(settings, metrics, redis)
    finally:
        await redis.aclose()


async def _poll_forever(settings: ListenerSettings, metrics: ListenerMetrics, redis: Redis) -> None:
    dead_letters = KeySchema(settings.key_prefix).dead_letters()
    while True:
        try:
            metrics.dead_letters = int(await redis.xlen(dead_letters))
        except RedisError as exc:
            log.debug("dead-letter poll failed", extra={"error": str(exc)})
        try:
            # Bounded like the stream's own connections: a silent server costs one poll.
            bound = settings.cdc_liveness_timeout
            async with (
                await psycopg.AsyncConnection.connect(
                    with_liveness(settings.database_url, bound), autocommit=True
                ) as conn,
                severed_after(conn, bound),
            ):
                if settings.cdc_mode == "notify":
                    metrics.outbox_backlog = (await outbox_backlog(conn))[0]
                else:
                    status = await slot_status(conn, settings.cdc_slot)
                    if status is not None:
                        metrics.retained_wal_bytes = status.retained_bytes
                        metrics.slot_lag_bytes = status.lag_bytes
        except psycopg.Error as exc:
            # Only a gauge goes stale; the stream itself reports a lost server.
            log.debug("slot poll failed", extra={"error": str(exc)})
        await asyncio.sleep(settings.metrics_poll_interval)
