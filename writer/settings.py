"""The writer process's settings: the shared cache settings plus the consumer's knobs."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from mescache.settings import CacheSettings

_IDENT = re.compile(r"[a-z_][a-z0-9_]{0,62}")  # as the listener's CDC_SLOT


class WriterSettings(CacheSettings):
    """Built once in main() and handed down."""

    writer_batch: int = Field(default=100, ge=1, description="entries read per round trip")
    writer_block: float = Field(
        default=1.0, gt=0, description="how long one read waits for new entries, s"
    )
    writer_claim_idle: float = Field(
        default=5.0,
        ge=0,
        description="take over a dead writer's entries once idle this long, s",
    )
    writer_max_attempts: int = Field(
        default=5,
        ge=1,
        description="a change failing this often for a non-transient reason "
        "goes to the dead letters",
    )
    writer_db_timeout: float = Field(
        default=10.0,
        gt=0,
        description="a PostgreSQL call (taking the lock, applying one change) that takes "
        "longer is given up as a silent connection: reconnect and resume, s",
    )
    writer_backoff_max: float = Field(
        default=10.0, gt=0, description="longest wait between retries, s"
    )
    writer_settle_poll: float = Field(
        default=0.1, gt=0, description="how often to ask how far the listener got, s"
    )
    writer_standby_retry: float = Field(
        default=2.0, gt=0, description="how often a standby writer tries to become active, s"
    )
    writer_trim_interval: float = Field(
        default=10.0, gt=0, description="how often applied entries are trimmed off the stream, s"
    )
    writer_prune_lag: float = Field(
        default=60.0,
        ge=0,
        description="applied entries are forgotten this long after they left the stream, s",
    )
    # The listener's own variables: a pending status is removed only once that listener
    # has applied the commit (so the cache cannot serve the older status any more).
    cdc_mode: Literal["logical", "notify"] = Field(
        default="logical", description="how the listener follows PostgreSQL"
    )
    cdc_slot: str = Field(default="orders_cache", description="the listener's slot")

    @field_validator("cdc_slot")
    @classmethod
    def _identifier(cls, value: str) -> str:
        # The listener refuses any other name: a slot the writer looks for must be one.
        if not _IDENT.fullmatch(value):
            raise ValueError("must be a lowercase SQL identifier (a-z, 0-9, _; 63 at most)")
        return value
