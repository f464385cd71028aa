"""Settings both processes read from the environment (pydantic-settings).

Each process builds its own settings object once, in main() or the app's lifespan, and
passes it down: nothing here is a module-level instance.
"""

from __future__ import annotations

import re
from typing import Final, Literal

from psycopg.conninfo import conninfo_to_dict
from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from redis.connection import parse_url

from mescache.keys import check_prefix
from mescache.logs import LogFormat
from mescache.redisconn import BadRedisUrl, parse_redis_url


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
    ttl_customer: float = Field(
        default=60.0, gt=0, description="pages of a customer's orders (orders:{customer:...}), s"
    )
    ttl_catalogue: float = Field(default=3600.0, gt=0, description="catalogue:{names} TTL, s")
    new_orders_limit: int = Field(default=50, ge=1, le=1000, description="size of orders:new")
    # The default page size names the first page's key, which warm-up fills as well.
    page_limit_default: int = Field(default=50, ge=1)
    page_limit_max: int = Field(default=200, ge=1)
    warm_prices: int = Field(
        default=100, ge=0, description="warm-up fills this many of the most requested prices"
    )
    warm_customers: int = Field(
        default=20,
        ge=0,
        description="warm-up fills the first page of this many customers who ordered last",
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

    @field_validator("key_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        return check_prefix(value)

    @field_validator("database_url")
    @classmethod
    def _conninfo(cls, value: str) -> str:
        return check_database_url(value)

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str) -> str:
        return check_redis_url(value)


# libpq's target_session_attrs values, and the ones that only ever reach a primary. The
# cache must read and write the primary: a fill read on a lagging standby would store a row
# the listener has already invalidated, and the slot lives on the primary.
_SESSION_ATTRS: Final = frozenset(
    {"any", "read-write", "read-only", "primary", "standby", "prefer-standby"}
)
PRIMARY_ONLY: Final = frozenset({"read-write", "primary"})


def check_database_url(value: str) -> str:
    """`value` if it is a connection string the product can use, else ValueError with a
    message that never repeats it (libpq's parse errors quote the text they choke on,
    which may be a password).

    Several hosts (libpq's multi-host form, `postgresql://u@h1:5432,h2:5432/db`) are how
    every process follows the primary through a failover: libpq tries them in turn and
    keeps the one that accepts writes. Without `target_session_attrs` such a string gets
    `target_session_attrs=read-write`; a value that may choose a standby is refused.
    """
    try:
        params = conninfo_to_dict(value)
    except Exception:  # psycopg raises ProgrammingError; any failure means malformed
        raise ValueError(
            "not a PostgreSQL connection string (postgresql://user@host:port/db"
            " or host=... dbname=...)"
        ) from None
    hosts = str(params.get("host") or params.get("hostaddr") or "").split(",")
    ports = str(params.get("port") or "").split(",")
    if len(ports) > 1 and len(ports) != len(hosts):
        raise ValueError(
            f"names {len(hosts)} hosts but {len(ports)} ports (give one port for all"
            " or one per host)"
        )
    attrs = params.get("target_session_attrs")
    if attrs is not None and attrs not in _SESSION_ATTRS:
        raise ValueError(f"target_session_attrs must be one of {', '.join(sorted(_SESSION_ATTRS))}")
    if attrs is not None and attrs not in PRIMARY_ONLY and (attrs != "any" or len(hosts) > 1):
        raise ValueError(
            f"target_session_attrs={attrs} may choose a standby; the cache reads and writes"
            " the primary: use read-write or primary"
        )
    if len(hosts) > 1 and attrs is None:
        return with_session_attrs(value, "read-write")
    return value


def with_session_attrs(conninfo: str, attrs: str) -> str:
    """`conninfo` (a URL or a key=value string) asking for `attrs` sessions; a value it
    already names is replaced (the last one given wins in libpq)."""
    if "://" not in conninfo:
        return f"{conninfo} target_session_attrs={attrs}"
    return f"{conninfo}{'&' if '?' in conninfo else '?'}target_session_attrs={attrs}"


_QUOTED = re.compile(r"'[^']*'")


def check_redis_url(value: str) -> str:
    """The URL if it names a Redis, a cluster or a Sentinel set-up (mescache.redisconn) that
    redis-py can use; ValueError with a message that never repeats it."""
    try:
        if parse_redis_url(value).kind == "single":
            parse_url(value)  # type: ignore[no-untyped-call]  # redis-py leaves it untyped
    except BadRedisUrl as exc:
        raise ValueError(f"not a Redis URL: {exc}") from None
    except ValueError as exc:
        # redis-py's reasons quote what they choke on (a port, say): keep only the reason.
        reason = _QUOTED.sub("(...)", str(exc))
        raise ValueError(
            f"not a Redis URL (redis://[:password@]host[:port][/db], rediss://..., "
            f"unix:///path): {reason}"
        ) from None
    return value


def describe_settings_error(exc: ValidationError) -> str:
    """One line naming each bad or missing environment variable, for a CLI message."""
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']).upper()}: {err['msg']}" for err in exc.errors()
    )
