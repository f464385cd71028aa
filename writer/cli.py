"""`orders-writer`: run the write-behind writer, report on its stream, or handle its dead
letters (writer.dead_letters).

Exit codes: 0 success, 1 a server could not be reached or refused (including a Redis
without persistence), 2 bad settings or usage.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from typing import cast

import psycopg
from pydantic import ValidationError
from redis.exceptions import RedisError, ResponseError

from mescache.errors import MesCacheError, RedisNotDurable
from mescache.keys import KeySchema
from mescache.logs import configure_logging, redact
from mescache.pending import GROUP
from mescache.redisconn import make_redis
from mescache.settings import describe_settings_error
from writer import dead_letters
from writer.settings import WriterSettings
from writer.worker import Writer


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def _run(settings: WriterSettings) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)  # finish the entry in flight, then exit
    await Writer(settings, stop).run()
    return 0


async def _status(settings: WriterSettings) -> int:
    keys = KeySchema(settings.key_prefix)
    redis = make_redis(settings.redis_url, max(settings.redis_timeout, 2.0), 1)
    try:
        stream, dead = keys.write_stream(), keys.dead_letters()
        kept = await redis.xlen(stream)
        backlog, consumers = kept, 0  # no group yet: no writer ran, every entry waits
        with contextlib.suppress(ResponseError):
            summary = await redis.xpending(stream, GROUP)
            groups = [g for g in await redis.xinfo_groups(stream) if _text(g["name"]) == GROUP]
            lag = int(groups[0].get("lag") or 0) if groups else 0
            backlog, consumers = summary["pending"] + lag, len(summary["consumers"])
        print(f"stream: {stream} ({kept} entries kept)")
        print(f"not yet applied: {backlog} (in progress with {consumers} writer(s))")
        print(f"dead letters: {await redis.xlen(dead)} in {dead}")
        latest = cast(list[tuple[bytes, dict[bytes, bytes]]], await redis.xrevrange(dead, count=5))
        for entry_id, fields in latest:
            print(f"  {entry_id.decode()}: {fields.get(b'reason', b'').decode()}")
    finally:
        await redis.aclose()
    return 0


COMMANDS = {
    "run": (_run, "apply accepted status changes to PostgreSQL"),
    "status": (_status, "backlog and dead letters of the stream"),
}


def main(argv: list[str] | None = None) -> int:
    """`orders-writer <command>`; the exit code."""
    parser = argparse.ArgumentParser(
        prog="orders-writer",
        description="Applies write-behind status changes from Redis to PostgreSQL."
        " Settings come from the environment (DATABASE_URL, REDIS_URL, WRITER_*, CDC_MODE,"
        " CDC_SLOT).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text)
    dead_letters.register(sub)
    args = parser.parse_args(argv)
    try:
        settings = WriterSettings()  # type: ignore[call-arg]  # values come from the environment
    except ValidationError as exc:
        print(f"orders-writer: bad settings: {describe_settings_error(exc)}", file=sys.stderr)
        return 2
    configure_logging(settings.log_format, settings.log_level)
    try:
        if args.command == "dead-letters":
            return asyncio.run(dead_letters.run(settings, args))
        command, _ = COMMANDS[args.command]
        return asyncio.run(command(settings))
    except KeyboardInterrupt:
        return 130
    except RedisNotDurable as exc:
        print(f"orders-writer: refusing to start: {exc}", file=sys.stderr)
        return 1
    except (psycopg.Error, RedisError, MesCacheError) as exc:
        print(f"orders-writer {args.command}: {redact(str(exc))}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
