"""What request handlers share: the app's context, built once in the lifespan."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, cast

from fastapi import Depends, Request
from redis.asyncio import Redis

from api.apikey_cache import KeyVerifier
from api.breaker import RedisBreaker
from api.feed import ChangeFeed
from api.metrics import ApiMetrics
from api.readthrough import ReadThrough
from api.settings import ApiSettings
from mescache.db import Pool
from mescache.keys import KeySchema
from mescache.pending import PendingWrites


@dataclass(frozen=True, slots=True)
class AppContext:
    """Everything a request handler needs, built once at start-up."""

    settings: ApiSettings
    pool: Pool
    redis: Redis
    keys: KeySchema
    cache: ReadThrough
    breaker: RedisBreaker
    auth: KeyVerifier
    feed: ChangeFeed
    pending: PendingWrites | None = None  # set in write-behind mode

    @property
    def metrics(self) -> ApiMetrics:
        """This process's metrics (the read path counts into them)."""
        return self.cache.metrics


async def get_ctx(request: Request) -> AppContext:
    """The application's context, the dependency every route takes."""
    # async on purpose: FastAPI runs a plain-def dependency in a worker thread, a thread
    # hop per request that cost a cache hit a fifth of its time.
    return cast(AppContext, request.app.state.ctx)


Ctx = Annotated[AppContext, Depends(get_ctx)]
