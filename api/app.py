"""The FastAPI application: its lifespan owns the pool, the Redis client and the cache,
and stores the operator key of OPERATOR_API_KEY (hashed) before serving."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import psycopg
from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import JSONResponse, Response
from pydantic import SecretStr
from redis.asyncio import Redis
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from api import apikeys, docs, limits, page
from api.apikey_cache import KeyVerifier, Lookup
from api.apikeys import Principal
from api.breaker import RedisBreaker
from api.context import AppContext
from api.direct_hits import OrdersApi
from api.feed import change_feed
from api.metrics import ApiMetrics
from api.nearmode import near_cache
from api.owners import OrderOwners, owner_lookup
from api.readthrough import ReadThrough
from api.routes import router
from api.settings import ApiSettings
from mescache import heap
from mescache.db import Pool, make_pool
from mescache.durability import require_durable
from mescache.keys import KeySchema
from mescache.pending import PendingWrites
from mescache.redisconn import is_cluster, make_redis
from mescache.store import RedisStore
from mescache.warm import warm

log = logging.getLogger("api")

_PROVISION_RETRY = 2.0  # s between attempts to store OPERATOR_API_KEY while the database is down


async def provision_operator_key(pool: Pool, key: SecretStr) -> None:
    """Store OPERATOR_API_KEY hashed, retrying until the database answers."""
    while True:
        try:
            async with pool.connection() as conn:
                info = await apikeys.provision_operator(conn, key.get_secret_value())
        except psycopg.OperationalError as exc:
            log.warning(
                "cannot store OPERATOR_API_KEY yet, retrying",
                extra={"retry_in": _PROVISION_RETRY, "error": str(exc)},
            )
            await asyncio.sleep(_PROVISION_RETRY)
            continue
        if info.revoked_at is not None:
            log.warning(
                "OPERATOR_API_KEY was revoked: set a new one", extra={"key_prefix": info.prefix}
            )
        else:
            log.info("operator key from OPERATOR_API_KEY ready", extra={"key_prefix": info.prefix})
        return


async def _start_provisioning(pool: Pool, cfg: ApiSettings) -> asyncio.Task[None] | None:
    """Store OPERATOR_API_KEY, if set, before serving, unless the database is down: then
    the returned task stores it later."""
    if cfg.operator_api_key is None:
        return None
    provisioning = asyncio.create_task(provision_operator_key(pool, cfg.operator_api_key))
    await asyncio.wait([provisioning], timeout=pool.timeout + 1)
    if provisioning.done():
        provisioning.result()  # a schema without api_keys fails the start-up here
    return provisioning


def _key_lookup(pool: Pool) -> Lookup:
    async def lookup(digest: bytes) -> Principal | None:
        async with pool.connection() as conn:
            return await apikeys.verify(conn, digest)

    return lookup


async def warm_before_serving(
    store: RedisStore, keys: KeySchema, pool: Pool, cfg: ApiSettings
) -> None:
    """Fill the hot keys, for at most WARM_TIMEOUT seconds; a failure only costs the misses
    warm-up would have saved, so it never stops the API from starting."""
    try:
        report = await asyncio.wait_for(
            warm(store, keys, pool, cfg, lease=cfg.fill_lease), cfg.warm_timeout
        )
    except TimeoutError:
        log.warning("warm-up unfinished after %.1fs, serving anyway", cfg.warm_timeout)
    except (RedisError, psycopg.Error, OSError) as exc:
        log.warning("warm-up skipped, serving anyway: %r", exc)
    else:
        log.info("warm-up done: %s", report.summary())


async def _shutdown(ctx: AppContext, provisioning: asyncio.Task[None] | None) -> None:
    """Close what the lifespan opened, the clients last (pending counts still go out)."""
    await ctx.cache.close()
    await ctx.feed.close()
    if provisioning is not None:
        provisioning.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await provisioning
    await ctx.redis.aclose()
    await ctx.pool.close()


def _drop_idle_connections(redis: Redis, tasks: set[asyncio.Task[None]]) -> None:
    """After a Redis failure, close the pool's idle connections: opened before the failure,
    they may be as silent as the one that timed out (new ones are opened on demand)."""

    async def drop() -> None:
        if is_cluster(redis):  # a cluster reloads its slot map and reconnects by itself
            return
        with contextlib.suppress(RedisError, OSError):
            await redis.connection_pool.disconnect(inuse_connections=False)

    task = asyncio.get_running_loop().create_task(drop())
    tasks.add(task)  # held until done: the loop keeps only weak references
    task.add_done_callback(tasks.discard)


def create_app(settings: ApiSettings | None = None, *, settle_heap: bool = False) -> FastAPI:
    """The app; settings default to the environment, read when the app starts.
    `settle_heap` tunes the garbage collector once started (mescache.heap): for a served
    process, not for one that embeds the app (tests)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        cfg = settings or ApiSettings()  # type: ignore[call-arg]  # values come from env
        redis = make_redis(cfg.redis_url, cfg.redis_timeout, cfg.redis_max_connections)
        keys = KeySchema(cfg.key_prefix)
        pending = None
        if cfg.write_behind:
            # Accepted changes would live only in this Redis: refuse one that forgets.
            try:
                await require_durable(redis)
            except BaseException:
                await redis.aclose()
                raise
            pending = PendingWrites(redis, keys)
        dropping: set[asyncio.Task[None]] = set()
        pool = make_pool(
            cfg.database_url, cfg.pool_min_size, cfg.pool_max_size, "api", cfg.db_timeout
        )
        await pool.open(wait=False)
        breaker = RedisBreaker(
            cfg.redis_retry_after, on_failure=lambda: _drop_idle_connections(redis, dropping)
        )
        store = RedisStore(redis)
        feed = change_feed(
            cfg.redis_url,
            keys.changes_channel(),
            cfg.redis_timeout,
            OrderOwners(owner_lookup(pool)),
        )
        metrics = ApiMetrics(breaker)
        app.state.ctx = AppContext(
            settings=cfg,
            pool=pool,
            redis=redis,
            keys=keys,
            cache=ReadThrough(
                store,
                breaker,
                lease=cfg.fill_lease,
                wait=cfg.fill_wait,
                single_flight=cfg.fill_single_flight,
                near=near_cache(cfg, keys, metrics.registry),
                metrics=metrics,
            ),
            breaker=breaker,
            auth=KeyVerifier(
                _key_lookup(pool),
                ttl=cfg.auth_cache_ttl,
                max_entries=cfg.auth_cache_size,
                max_lookups=cfg.auth_max_lookups,
            ),
            pending=pending,
            feed=feed,
        )
        app.state.ctx.cache.demand.halve_every(
            keys.price_requests_halved(), cfg.price_counts_half_life
        )
        provisioning: asyncio.Task[None] | None = None
        try:
            await app.state.ctx.cache.near.start()
            provisioning = await _start_provisioning(pool, cfg)
            if cfg.warm_on_start:
                await warm_before_serving(store, keys, pool, cfg)
            if settle_heap:
                heap.settle()
            yield
        finally:
            await _shutdown(app.state.ctx, provisioning)

    app = OrdersApi(
        title="MES orders API",
        summary="Orders served from Redis, kept right by PostgreSQL's change stream.",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,  # served by api.docs from pinned, packaged assets, not a CDN
        redoc_url=None,
    )
    app.include_router(router)
    page.mount(app)
    docs.mount(app)
    limits.install(app)

    # PoolTimeout is an OperationalError too: no connection could be had in time.
    @app.exception_handler(psycopg.OperationalError)
    async def database_unavailable(request: Request, exc: Exception) -> JSONResponse:
        log.error(
            "database unavailable",
            extra={"method": request.method, "path": request.url.path, "error": str(exc)},
        )
        return JSONResponse(status_code=503, content={"detail": "database unavailable"})

    # A value the database cannot store (a NaN in params, say) is the client's error.
    @app.exception_handler(psycopg.DataError)
    async def value_refused(request: Request, exc: psycopg.DataError) -> JSONResponse:
        reason = exc.diag.message_primary or "invalid value"
        return JSONResponse(status_code=422, content={"detail": f"value refused: {reason}"})

    # Starlette's 405 lists only the methods of the first route that matched the path; one
    # path here serves several routes (GET and PATCH /orders/{id}), so Allow would lie.
    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 405:
            allowed = sorted(
                {
                    method
                    for route in router.routes  # the API's own routes, as declared
                    if route.matches({**request.scope, "method": ""})[0] != Match.NONE
                    for method in getattr(route, "methods", None) or ()
                }
            )
            exc = StarletteHTTPException(405, exc.detail, {"Allow": ", ".join(allowed)})
        return await http_exception_handler(request, exc)

    return app
