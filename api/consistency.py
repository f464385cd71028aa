"""The listener's consistency figure, as `/stats` shows it.

The listener's sampler (cdc_listener.sampler) compares a steady sample of cached values
with PostgreSQL and writes its figure over the last window to ``stats:consistency``
(mescache.keys) every few seconds, with a short TTL: no figure means no listener has
sampled lately, and `/stats` then says null rather than show an old one.
"""

from __future__ import annotations

from pydantic import BaseModel, Field, ValidationError
from redis.asyncio import Redis

from mescache.keys import KeySchema
from mescache.store import REDIS_FAILURES


class Consistency(BaseModel):
    """Sampled values that PostgreSQL contradicted, over the listener's window."""

    nines: float | None = Field(
        description="log10(checks / max(stale, 1)): -log10 of the stale share, at most"
        " log10(checks); null with no check"
    )
    checks: int = Field(ge=0, description="cached values compared with PostgreSQL")
    stale: int = Field(ge=0, description="of those, still differing after the grace period")
    window_s: int = Field(ge=0, description="the window these figures cover, s")


async def read_consistency(redis: Redis, keys: KeySchema) -> Consistency | None:
    """The listener's last figure; None when there is none or Redis cannot tell."""
    try:
        body = await redis.get(keys.consistency())
    except REDIS_FAILURES:
        return None
    if body is None:
        return None
    try:
        return Consistency.model_validate_json(body)
    except ValidationError:
        return None  # written by another version: no figure rather than an error
