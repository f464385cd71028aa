"""The API process's settings: the shared cache settings plus serving and pool knobs."""

from __future__ import annotations

from pydantic import Field

from mescache.settings import CacheSettings


class ApiSettings(CacheSettings):
    """Built once in main() or the app factory and handed to the app."""

    host: str = Field(default="127.0.0.1", description="address to listen on")
    port: int = Field(default=8000, ge=1, le=65535, description="port to listen on")
    pool_min_size: int = Field(default=2, ge=0)
    pool_max_size: int = Field(default=10, ge=1)
    page_limit_default: int = Field(default=50, ge=1)
    page_limit_max: int = Field(default=200, ge=1)
    fill_lease: float = Field(
        default=2.0, gt=0, description="how long one reader may hold the right to fill a key, s"
    )
    fill_wait: float = Field(
        default=0.5, ge=0, description="how long other readers wait for that fill, s"
    )
    redis_max_connections: int = Field(default=64, ge=1, description="Redis pool size")
    redis_retry_after: float = Field(
        default=1.0, gt=0, description="after a Redis failure, skip Redis for this long, s"
    )
