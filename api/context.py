"""What request handlers share: the app's context, built once in the lifespan."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, cast

from fastapi import Depends, Request
from redis.asyncio import Redis

from api.breaker import RedisBreaker
from api.keycache import KeyVerifier
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
    pending: PendingWrites | None = None  # set in write-behind mode


def get_ctx(request: Request) -> AppContext:
    return cast(AppContext, request.app.state.ctx)


Ctx = Annotated[AppContext, Depends(get_ctx)]
