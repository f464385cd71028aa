"""Settings both processes read from the environment (pydantic-settings).

Each process builds its own settings object once, in main() or the app's lifespan, and
passes it down: nothing here is a module-level instance.
"""

from __future__ import annotations

from typing import Literal

from psycopg.conninfo import conninfo_to_dict
from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from mescache.logs import LogFormat


class CacheSettings(BaseSettings):
    """What the API and the listener must agree on: the servers, the key names, the TTLs."""

    model_config = SettingsConfigDict(env_prefix="", extra="ignore", frozen=True)

    database_url: str = Field(description="PostgreSQL connection string (libpq URL or DSN)")
    redis_url: str = Field(description="Redis URL, e.g. redis://127.0.0.1:6379/0")
    key_prefix: str = Field(default="", description="Prepended to every cache key")

    ttl_dashboard: float = Field(default=60.0, gt=0, description="orders:dashboard TTL, s")
    ttl_new: float = Field(default=10.0, gt=0, description="orders:new TTL, s")
    ttl_status: float = Field(default=60.0, gt=0, description="orders:status pages TTL, s")
    ttl_order: float = Field(default=300.0, gt=0, description="order:{id} TTL, s")
    ttl_price: float = Field(default=3600.0, gt=0, description="price:{...} TTL, s")
    new_orders_limit: int = Field(default=50, ge=1, le=1000, description="size of orders:new")
    # The default page size names the first page's key, which warm-up fills as well.
    page_limit_default: int = Field(default=50, ge=1)
    page_limit_max: int = Field(default=200, ge=1)
    warm_prices: int = Field(
        default=100, ge=0, description="warm-up fills this many of the most requested prices"
    )

    redis_timeout: float = Field(
        default=0.25, gt=0, description="socket timeout for Redis calls, s; a slow Redis is down"
    )
    db_timeout: float = Field(
        default=2.0,
        gt=0,
        description="the API's bound on PostgreSQL, s: getting a connection and each use of "
        "it; past it the request fails (503) and the connection, which may be silent, is "
        "discarded",
    )

    log_format: LogFormat = Field(
        default="text", description="text (key=value lines) or json (one object per line)"
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(default="INFO")

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("database_url")
    @classmethod
    def _conninfo(cls, value: str) -> str:
        # libpq's parse errors quote the text they choke on, which may be a password:
        # reject a malformed string here with a message that never repeats it.
        try:
            conninfo_to_dict(value)
        except Exception:  # psycopg raises ProgrammingError; any failure means malformed
            raise ValueError(
                "not a PostgreSQL connection string (postgresql://user@host:port/db"
                " or host=... dbname=...)"
            ) from None
        return value


def describe_settings_error(exc: ValidationError) -> str:
    """One line naming each bad or missing environment variable, for a CLI message."""
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']).upper()}: {err['msg']}" for err in exc.errors()
    )
