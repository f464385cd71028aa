"""The FastAPI application: its lifespan owns the pool, the Redis client and the cache."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import psycopg
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from api.breaker import RedisBreaker
from api.context import AppContext
from api.readthrough import ReadThrough
from api.routes import router
from api.settings import ApiSettings
from mescache.db import make_pool
from mescache.keys import KeySchema
from mescache.store import RedisStore, make_redis

log = logging.getLogger("api")


def create_app(settings: ApiSettings | None = None) -> FastAPI:
    """The app; settings default to the environment, read when the app starts."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        cfg = settings or ApiSettings()  # type: ignore[call-arg]  # values come from env
        pool = make_pool(cfg.database_url, cfg.pool_min_size, cfg.pool_max_size, "api")
        await pool.open(wait=False)
        redis = make_redis(cfg.redis_url, cfg.redis_timeout, cfg.redis_max_connections)
        breaker = RedisBreaker(cfg.redis_retry_after)
        store = RedisStore(redis)
        app.state.ctx = AppContext(
            settings=cfg,
            pool=pool,
            redis=redis,
            keys=KeySchema(cfg.key_prefix),
            cache=ReadThrough(store, breaker, lease=cfg.fill_lease, wait=cfg.fill_wait),
            breaker=breaker,
        )
        try:
            yield
        finally:
            await redis.aclose()
            await pool.close()

    app = FastAPI(
        title="MES orders API",
        summary="Orders served from Redis, kept right by PostgreSQL's change stream.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.include_router(router)

    # PoolTimeout is an OperationalError too: no connection could be had in time.
    @app.exception_handler(psycopg.OperationalError)
    async def database_unavailable(request: Request, exc: Exception) -> JSONResponse:
        log.error("database unavailable on %s %s: %s", request.method, request.url.path, exc)
        return JSONResponse(status_code=503, content={"detail": "database unavailable"})

    return app
