"""The listener process's settings: the shared cache settings plus the change source."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from mescache.settings import CacheSettings

_IDENT = re.compile(r"[a-z_][a-z0-9_]{0,62}")


class ListenerSettings(CacheSettings):
    """Built once in main() and handed down."""

    cdc_mode: Literal["logical", "notify"] = Field(
        default="logical", description="logical replication (pgoutput) or LISTEN/NOTIFY outbox"
    )
    cdc_slot: str = Field(default="orders_cache", description="logical replication slot")
    cdc_publication: str = Field(default="orders_cache", description="publication to read")
    cdc_refresh: bool = Field(
        default=False,
        description="refresh hot keys (dashboard, order rows) instead of deleting them",
    )
    cdc_max_keys: int = Field(
        default=10_000, ge=1, description="past this many keys a batch drops whole families"
    )
    cdc_batch_commits: int = Field(
        default=1000, ge=1, description="apply at the latest after this many commits"
    )
    cdc_status_interval: float = Field(
        default=1.0, gt=0, description="how often to confirm the position to the server, s"
    )
    cdc_heartbeat_interval: float = Field(
        default=30.0, ge=0, description="emit a WAL heartbeat this often when idle, s (0: off)"
    )
    cdc_recheck_delay: float = Field(
        default=0.2,
        ge=0,
        description="repeat each batch's actions after this delay to close the visibility "
        "gap, s (0: off)",
    )
    cdc_decoder: Literal["compiled", "pure"] = Field(
        default="compiled",
        description="the pgoutput decoder: its compiled build where installed (else the pure "
        "one, logged), or the pure reference",
    )
    cdc_standby_retry: float = Field(
        default=2.0, gt=0, description="how often a standby retries the held slot, s"
    )
    cdc_liveness_timeout: float = Field(
        default=10.0,
        ge=1,
        description="a connection to PostgreSQL on which nothing arrives this long (asked "
        "for replies meanwhile) is dead: closed and reopened, s",
    )
    cdc_notify_poll: float = Field(
        default=5.0, gt=0, description="drain the outbox at least this often, s"
    )
    cdc_check_grace: float = Field(
        default=2.0,
        ge=0,
        description="`check` and the sampler: how long a differing key may take to be "
        "invalidated before it counts as stale, s",
    )
    cdc_sample_rate: float = Field(
        default=5.0,
        ge=0,
        le=1000,
        description="consistency sampler: cached values compared with PostgreSQL per second "
        "(0: off)",
    )
    cdc_sample_window: float = Field(
        default=900.0, gt=0, description="consistency sampler: the window of the nines, s"
    )
    cdc_probe_interval: float = Field(
        default=10.0,
        ge=0,
        description="time one invalidation end to end through the probe table this often, s "
        "(0: off)",
    )

    metrics_port: int = Field(
        default=0, ge=0, le=65535, description="serve /metrics, /healthz, /readyz here (0: off)"
    )
    metrics_host: str = Field(default="127.0.0.1", description="address of the metrics port")
    metrics_poll_interval: float = Field(
        default=10.0, gt=0, description="how often to read the slot's retained WAL, s"
    )

    @field_validator("cdc_slot", "cdc_publication")
    @classmethod
    def _identifier(cls, value: str) -> str:
        # These end up in replication commands, which take no parameters.
        if not _IDENT.fullmatch(value):
            raise ValueError("must be a lowercase SQL identifier (a-z, 0-9, _; 63 at most)")
        return value
