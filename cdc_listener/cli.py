"""`cdc-listener`: run the daemon, report on the slot, drop it, install the notify outbox,
warm the hot keys.

Exit codes: 0 success, 1 a server could not be reached or refused, 2 bad settings or usage.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

import psycopg
from pydantic import ValidationError
from redis.exceptions import RedisError
from tqdm import tqdm

from cdc_listener import daemon
from cdc_listener.errors import ListenerError
from cdc_listener.settings import ListenerSettings
from cdc_listener.slot import drop_slot, slot_status
from mescache.db import make_pool
from mescache.keys import KeySchema
from mescache.queries import SQL_DIR
from mescache.settings import describe_settings_error
from mescache.store import RedisStore, make_redis
from mescache.warm import Outcome, Target, hot_targets, warm_targets


async def _status(settings: ListenerSettings) -> int:
    async with await psycopg.AsyncConnection.connect(
        settings.database_url, autocommit=True
    ) as conn:
        if settings.cdc_mode == "notify":
            row = await (
                await conn.execute("SELECT count(*), min(created_at) FROM cache_outbox")
            ).fetchone()
            backlog, oldest = row if row is not None else (0, None)
            print(f"mode: notify\noutbox backlog: {backlog}\noldest pending: {oldest or '-'}")
            return 0
        status = await slot_status(conn, settings.cdc_slot)
    if status is None:
        print(f"slot {settings.cdc_slot}: not created yet (cdc-listener run creates it)")
        return 0
    print(
        f"slot: {status.slot}\n"
        f"active: {'yes (pid ' + str(status.active_pid) + ')' if status.active else 'no'}\n"
        f"confirmed lsn: {status.confirmed_lsn or '-'}\n"
        f"current lsn: {status.current_lsn}\n"
        f"retained wal bytes: {status.retained_bytes}\n"
        f"lag bytes: {status.lag_bytes}\n"
        f"wal status: {status.wal_status}"
    )
    return 0


async def _drop(settings: ListenerSettings) -> int:
    async with await psycopg.AsyncConnection.connect(
        settings.database_url, autocommit=True
    ) as conn:
        dropped = await drop_slot(conn, settings.cdc_slot)
    print(f"slot {settings.cdc_slot}: {'dropped' if dropped else 'did not exist'}")
    return 0


async def _install_notify(settings: ListenerSettings) -> int:
    script = (SQL_DIR / "notify" / "outbox.sql").read_text(encoding="utf-8")
    async with await psycopg.AsyncConnection.connect(
        settings.database_url, autocommit=True
    ) as conn:
        await conn.execute(script)  # our own file: no user input in it
    print("notify outbox and triggers installed")
    return 0


async def _warm(settings: ListenerSettings) -> int:
    redis = make_redis(settings.redis_url, max(settings.redis_timeout, 5.0), 8)
    pool = make_pool(settings.database_url, 1, 4, "cdc-listener-warm")
    try:
        await redis.ping()  # an unreachable Redis is reported before any database work
        await pool.open(wait=True, timeout=10.0)
        store, keys = RedisStore(redis), KeySchema(settings.key_prefix)
        targets = await hot_targets(store, keys, pool, settings)
        # A bar on a terminal; nothing on a pipe or in a log.
        with tqdm(
            total=len(targets), desc="warm", unit="key", file=sys.stderr, disable=None
        ) as bar:

            def advance(target: Target, outcome: Outcome) -> None:
                bar.update()

            report = await warm_targets(store, keys, targets, progress=advance)
    finally:
        await redis.aclose()
        await pool.close()
    print(f"warm: {report.summary()}")
    return 0


async def _run(settings: ListenerSettings) -> int:
    await daemon.run(settings)
    return 0


COMMANDS = {
    "run": (_run, "follow the change stream and keep Redis right"),
    "status": (_status, "slot, confirmed LSN, retained WAL bytes, lag"),
    "drop-slot": (_drop, "drop the replication slot (the next run flushes the cache)"),
    "install-notify": (_install_notify, "install the outbox and triggers for CDC_MODE=notify"),
    "warm": (_warm, "fill the hot keys (dashboard, lists, most requested prices) now"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="cdc-listener",
        description="Keeps the Redis orders cache right from PostgreSQL's change stream."
        " Settings come from the environment (DATABASE_URL, REDIS_URL, CDC_MODE, ...).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text)
    args = parser.parse_args(argv)
    try:
        settings = ListenerSettings()  # type: ignore[call-arg]  # values come from the environment
    except ValidationError as exc:
        print(f"cdc-listener: bad settings: {describe_settings_error(exc)}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    command, _ = COMMANDS[args.command]
    try:
        return asyncio.run(command(settings))
    except KeyboardInterrupt:
        return 130
    except (psycopg.Error, RedisError, ListenerError) as exc:
        print(f"cdc-listener {args.command}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
