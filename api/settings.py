"""The API process's settings: the shared cache settings plus serving, pool and auth knobs."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from api.apikeys import MAX_KEY_LENGTH, MIN_KEY_LENGTH
from mescache.settings import CacheSettings, check_database_url


class ApiSettings(CacheSettings):
    """Built once in main() or the app factory and handed to the app."""

    host: str = Field(default="127.0.0.1", description="address to listen on")
    port: int = Field(default=8000, ge=1, le=65535, description="port to listen on")
    pool_min_size: int = Field(default=2, ge=0)
    pool_max_size: int = Field(default=10, ge=1)
    fill_lease: float = Field(
        default=2.0, gt=0, description="how long one reader may hold the right to fill a key, s"
    )
    fill_wait: float = Field(
        default=2.0,
        ge=0,
        description="how long other readers wait for that fill, s; as long as the lease, so "
        "a slow fill (a loaded database) still stays one fill per key",
    )
    redis_max_connections: int = Field(default=64, ge=1, description="Redis pool size")
    redis_retry_after: float = Field(
        default=1.0, gt=0, description="after a Redis failure, skip Redis for this long, s"
    )
    fill_single_flight: bool = Field(
        default=True,
        description="one fill per key: concurrent misses share one SELECT in a process and "
        "wait for the lease holder across processes (off only to measure what it saves)",
    )
    price_counts_half_life: float = Field(
        default=86_400.0,
        ge=0,
        description="price request counts (what warm-up fills) are halved this often, so "
        "warm-up follows current demand, s (0: never)",
    )
    near_cache_min_bytes: int = Field(
        default=16_384,
        ge=0,
        description="values at least this large are also kept in each API process, "
        "validated against Redis on every read by a short round trip (api.nearcache)",
    )
    near_cache_max_bytes: int = Field(
        default=32 * 1024 * 1024,
        ge=0,
        description="bytes of such values kept per process at most, least recently used "
        "out first; 0 keeps none",
    )
    near_cache: Literal["checked", "tracked"] = Field(
        default="checked",
        description="checked: every near hit asks Redis whether the copy's token stands (a "
        "round trip, exact); tracked: Redis reports changes of the keys a process read "
        "(CLIENT TRACKING) and near hits make no round trip while a heartbeat proves that "
        "channel, at most NEAR_TRACKING_BOUND old (api.tracking); checked on a cluster",
    )
    near_tracking_bound: float = Field(
        default=0.05,
        gt=0,
        le=10,
        description="tracked: a near hit makes no round trip only if a heartbeat came back "
        "through the channel that started at most this long ago, s (the staleness bound)",
    )
    near_tracking_beat: float = Field(
        default=0.01,
        gt=0,
        le=10,
        description="tracked: the pause between heartbeats, s (one round trip each)",
    )
    api_workers: int = Field(
        default=1,
        ge=0,
        description="uvicorn worker processes; 0: one per CPU core (as production runs it); "
        "1 serves in this process, with no supervisor",
    )
    api_max_connections: int = Field(
        default=500,
        ge=1,
        description="open connections per worker process at most; past it a new one is "
        "answered 503 and closed (each open dashboard holds one for /events)",
    )
    api_request_timeout: float = Field(
        default=10.0,
        gt=0,
        le=3600,
        description="a request's line, headers and body must arrive within this, s; a "
        "connection that sends nothing is closed after it too",
    )
    api_idle_timeout: int = Field(
        default=5, ge=1, le=3600, description="an idle keep-alive connection is closed after, s"
    )
    api_max_header_bytes: int = Field(
        default=16_384,
        ge=1024,
        description="a request's line and headers at most, bytes; larger is answered 431",
    )
    api_access_log: bool = Field(
        default=False, description="log every request (costs a share of a cache hit's time)"
    )
    warm_on_start: bool = Field(
        default=False, description="fill the hot keys before serving (see cdc-listener warm)"
    )
    warm_timeout: float = Field(
        default=10.0, gt=0, description="serve after this long even if warm-up is not done, s"
    )
    write_behind: bool = Field(
        default=False,
        description="accept status changes into Redis (202) and let orders-writer apply "
        "them to PostgreSQL; needs Redis with appendonly yes",
    )

    events_ping: float = Field(
        default=15.0, gt=0, description="keep-alive comment interval on /events streams, s"
    )
    currency: str = Field(
        default="EUR",
        pattern=r"^[A-Z]{3}$",
        description="ISO 4217 code the pages show prices in (never stored in cached bytes)",
    )

    operator_api_key: SecretStr | None = Field(
        default=None,
        description="an operator key stored (hashed) at start-up; for automation and first start",
    )
    auth_cache_ttl: float = Field(
        default=10.0,
        ge=0,
        description="how long a verified (or refused) key is remembered, s: a revocation "
        "takes this long to bite",
    )
    auth_cache_size: int = Field(default=10_000, ge=1, description="keys remembered at most")
    auth_max_lookups: int = Field(
        default=2, ge=1, description="key lookups in PostgreSQL at once, per process"
    )

    @field_validator("operator_api_key", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        # compose passes OPERATOR_API_KEY= when the variable is unset
        return None if value == "" else value

    @field_validator("operator_api_key")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            n = len(value.get_secret_value())
            if not MIN_KEY_LENGTH <= n <= MAX_KEY_LENGTH:
                raise ValueError(
                    f"must be {MIN_KEY_LENGTH} to {MAX_KEY_LENGTH} characters "
                    "(make one with: python -c 'import secrets; print(secrets.token_urlsafe(32))')"
                )
            if any(c.isspace() for c in value.get_secret_value()):
                raise ValueError("must not contain spaces")
        return value


class AdminSettings(BaseSettings):
    """What `orders-api keys` needs: the database only."""

    model_config = SettingsConfigDict(env_prefix="", extra="ignore", frozen=True)

    database_url: str = Field(description="PostgreSQL connection string (libpq URL or DSN)")

    # The same rules as every other process: several hosts reach the primary only.
    _database_url = field_validator("database_url")(check_database_url)
