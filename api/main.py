"""`orders-api`: serve the API with uvicorn (the default, or `orders-api serve`), or manage
API keys (`orders-api keys ...`, see api.apikeys_cli). Settings come from the environment.

Served with uvloop and httptools; API_WORKERS=0 runs one worker process per core, as in
production (the default, 1, serves in this process). Each worker builds its app from the
environment (the app factory), so the settings are validated here first to fail with a
message, not a trace.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

import psycopg
import uvicorn
from fastapi import FastAPI
from pydantic import ValidationError
from redis.exceptions import RedisError

from api import apikeys_cli
from api.app import create_app
from api.settings import ApiSettings
from mescache.durability import require_durable
from mescache.errors import RedisNotDurable
from mescache.http_limits import ConnectionLimits, limited_http
from mescache.logs import logging_config
from mescache.queries import query
from mescache.redisconn import make_redis
from mescache.settings import describe_settings_error


def served_app() -> FastAPI:
    """The factory each uvicorn worker builds its app with."""
    return create_app(settle_heap=True)


async def _check_durable(settings: ApiSettings) -> None:
    redis = make_redis(settings.redis_url, max(settings.redis_timeout, 2.0), 1)
    try:
        await require_durable(redis)
    finally:
        await redis.aclose()


# What the routes read and write: a database without them has not been migrated.
_REQUIRED_TABLES = ("orders", "models", "materials", "pricing_rules", "api_keys")


def _missing_tables(database_url: str) -> list[str] | None:
    """The tables the API needs that the database lacks; None if it cannot be reached
    now (the API starts anyway and answers 503 until it can)."""
    try:
        with psycopg.connect(database_url, connect_timeout=5) as conn:
            cur = conn.execute(query("missing_tables"), {"tables": list(_REQUIRED_TABLES)})
            rows = cur.fetchall()
    except psycopg.OperationalError:
        return None
    return [row[0] for row in rows]


def serve() -> int:
    """Check the settings and the database, then serve the API with uvicorn; the exit code."""
    try:
        settings = ApiSettings()  # type: ignore[call-arg]  # values come from the environment
    except ValidationError as exc:
        print(f"orders-api: bad settings: {describe_settings_error(exc)}", file=sys.stderr)
        return 2
    missing = _missing_tables(settings.database_url)
    if missing:
        print(
            f"orders-api: the database has no {', '.join(missing)}: apply the migrations "
            "(python -m mescache.migrate DATABASE_URL)",
            file=sys.stderr,
        )
        return 2
    if settings.write_behind:
        # Said here in one line; the app's lifespan checks again for embedded use.
        try:
            asyncio.run(_check_durable(settings))
        except (RedisNotDurable, RedisError) as exc:
            print(f"orders-api: refusing to start in write-behind mode: {exc}", file=sys.stderr)
            return 1
    uvicorn.run(
        "api.main:served_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.api_workers or os.cpu_count() or 1,
        loop="uvloop",
        http=limited_http(
            ConnectionLimits(
                max_connections=settings.api_max_connections,
                request_timeout=settings.api_request_timeout,
                max_header_bytes=settings.api_max_header_bytes,
            )
        ),
        timeout_keep_alive=settings.api_idle_timeout,
        access_log=settings.api_access_log,
        # applied in every worker: one format and one redaction for uvicorn's lines too
        log_config=logging_config(settings.log_format, settings.log_level),
        log_level=settings.log_level.lower(),
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    """`orders-api [serve]` or `orders-api keys ...`; the exit code."""
    parser = argparse.ArgumentParser(
        prog="orders-api",
        description="The MES orders API, served from Redis. Without a command it serves."
        " Settings come from the environment (DATABASE_URL, REDIS_URL, OPERATOR_API_KEY, ...).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("serve", help="serve the API (the default)")
    apikeys_cli.add_parser(sub)
    args = parser.parse_args(argv)
    if args.command == "keys":
        return apikeys_cli.run(args)
    return serve()


if __name__ == "__main__":
    raise SystemExit(main())
