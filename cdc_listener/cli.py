"""`cdc-listener`: run the daemon, report on the slot (`status`, `status --json`), drop it,
install the notify outbox, warm the hot keys, check the cache against PostgreSQL.

Exit codes: 0 success, 1 a server could not be reached or refused, 2 bad settings or usage,
3 `check` found stale keys (or, sampling, invalidations that never arrived).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
from collections.abc import Callable, Coroutine
from dataclasses import asdict
from typing import Any, NoReturn

import psycopg
import uvloop
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from pydantic import ValidationError
from redis.exceptions import RedisError
from tqdm import tqdm

from cdc_listener import daemon
from cdc_listener.check import Checker
from cdc_listener.lag_probe import Prober
from cdc_listener.notify import outbox_backlog
from cdc_listener.settings import ListenerSettings
from cdc_listener.slot import (
    StandbyCopy,
    copies_seen_from_primary,
    copy_on_standby,
    drop_slot,
    is_standby,
    slot_status,
)
from mescache.db import make_pool
from mescache.errors import MesCacheError
from mescache.keys import KeySchema
from mescache.logs import configure_logging, redact
from mescache.queries import script as sql_script
from mescache.redisconn import make_redis
from mescache.settings import describe_settings_error
from mescache.store import RedisStore
from mescache.warm import Outcome, Target, hot_targets, warm_targets

STALE = 3  # exit code of a check that found stale keys
MAX_SECONDS = 3600.0  # --grace and --timeout: longer is a typo, and past ~1e9 asyncio fails


async def _status(settings: ListenerSettings, args: argparse.Namespace) -> int:
    async with await psycopg.AsyncConnection.connect(
        settings.database_url, autocommit=True
    ) as conn:
        if settings.cdc_mode == "notify":
            backlog, oldest = await outbox_backlog(conn)
            report: dict[str, object] = {
                "mode": "notify",
                "outbox_backlog": backlog,
                "oldest_pending": None if oldest is None else oldest.isoformat(),
            }
        else:
            status = await slot_status(conn, settings.cdc_slot)
            report = {"mode": "logical", "slot": settings.cdc_slot, "exists": status is not None}
            if status is not None:
                report |= {
                    "active": status.active,
                    "active_pid": status.active_pid,
                    "confirmed_lsn": status.confirmed_lsn,
                    "current_lsn": status.current_lsn,
                    "retained_wal_bytes": status.retained_bytes,
                    "lag_bytes": status.lag_bytes,
                    "wal_status": status.wal_status,
                }
            if await is_standby(conn):
                here = f"{conn.info.host}:{conn.info.port}"
                copies = [await copy_on_standby(conn, settings.cdc_slot, here)]
            else:
                copies = await copies_seen_from_primary(conn, settings.cdc_slot)
                copies += await _visit_standbys(settings)
            report["standbys"] = [asdict(copy) for copy in copies]
    print(json.dumps(report) if args.json else _human(report))
    return 0


async def _visit_standbys(settings: ListenerSettings) -> list[StandbyCopy]:
    """The copies of the slot on the other hosts DATABASE_URL names, read on each of them
    (the primary cannot tell whether a standby's copy is synchronised)."""
    params = conninfo_to_dict(settings.database_url)
    hosts = str(params.get("host") or "").split(",")
    ports = str(params.get("port") or "").split(",")
    if len(hosts) < 2:
        return []
    copies = []
    for i, host in enumerate(hosts):
        port = ports[i] if len(ports) > 1 else ports[0]
        one: dict[str, str | int] = {
            "host": host,
            "target_session_attrs": "any",
            "connect_timeout": 3,
        }
        if port:
            one["port"] = port
        if "hostaddr" in params:
            one["hostaddr"] = str(params["hostaddr"]).split(",")[i]
        name = f"{host}:{port or 5432}"
        try:
            async with await psycopg.AsyncConnection.connect(
                make_conninfo(settings.database_url, **one), autocommit=True
            ) as conn:
                if await is_standby(conn):
                    copies.append(await copy_on_standby(conn, settings.cdc_slot, name))
        except psycopg.OperationalError:
            copies.append(
                StandbyCopy(name, "standby", None, None, None, None, None, None, "unreachable")
            )
    return copies


def _human(report: dict[str, Any]) -> str:
    """The status as a few `name: value` lines for a terminal."""
    if report["mode"] == "notify":
        lines = {
            "mode": "notify",
            "outbox backlog": report["outbox_backlog"],
            "oldest pending": report["oldest_pending"] or "-",
        }
    elif not report["exists"]:
        lines = {}
    else:
        pid = report["active_pid"]
        lines = {
            "slot": report["slot"],
            "active": f"yes (pid {pid})" if report["active"] else "no",
            "confirmed lsn": report["confirmed_lsn"] or "-",
            "current lsn": report["current_lsn"],
            "retained wal bytes": _bytes(report["retained_wal_bytes"]),
            "lag bytes": _bytes(report["lag_bytes"]),
            "wal status": report["wal_status"] or "-",
        }
    text = [f"{name}: {value}" for name, value in lines.items()] or [
        f"slot {report['slot']}: not created yet (cdc-listener run creates it)"
    ]
    text += [_standby_line(copy) for copy in report.get("standbys", [])]
    return "\n".join(text)


def _standby_line(copy: dict[str, Any]) -> str:
    """One standby's copy: `usable` as yes / no / unknown (the primary cannot tell)."""
    verdict = {True: "usable", False: "not usable", None: "copy not visible here"}[copy["usable"]]
    where = "seen from the primary" if copy["seen_from"] == "primary" else "on the standby"
    details = [f"state {copy['state']}"] if copy["state"] else []
    if copy["synced"]:
        details.append(f"copy synchronised at {copy['confirmed_lsn']}")
    if copy["reason"]:
        details.append(copy["reason"])
    return f"standby {copy['standby']} ({where}): {verdict}" + "".join(f"; {d}" for d in details)


def _bytes(count: int | None) -> str:
    if count is None:
        return "-"
    if count < 1024:
        return str(count)
    units = ("KiB", "MiB", "GiB", "TiB")
    size, step = count / 1024, 0
    while size >= 1024 and step < len(units) - 1:
        size, step = size / 1024, step + 1
    return f"{count} ({size:.1f} {units[step]})"


async def _drop(settings: ListenerSettings, _: argparse.Namespace) -> int:
    async with await psycopg.AsyncConnection.connect(
        settings.database_url, autocommit=True
    ) as conn:
        dropped = await drop_slot(conn, settings.cdc_slot)
    print(f"slot {settings.cdc_slot}: {'dropped' if dropped else 'did not exist'}")
    return 0


async def _install_notify(settings: ListenerSettings, _: argparse.Namespace) -> int:
    script = sql.SQL(sql_script("notify/outbox.sql"))  # our own packaged file
    async with await psycopg.AsyncConnection.connect(
        settings.database_url, autocommit=True
    ) as conn:
        await conn.execute(script)
    print("notify outbox and triggers installed")
    return 0


async def _warm(settings: ListenerSettings, _: argparse.Namespace) -> int:
    redis = make_redis(settings.redis_url, max(settings.redis_timeout, 5.0), 8)
    pool = make_pool(
        settings.database_url, 1, 4, "cdc-listener-warm", settings.cdc_liveness_timeout
    )
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


async def _run(settings: ListenerSettings, _: argparse.Namespace) -> int:
    await daemon.run(settings, settle_heap=True)
    return 0


async def _check(settings: ListenerSettings, args: argparse.Namespace) -> int:
    redis = make_redis(settings.redis_url, max(settings.redis_timeout, 5.0), 4)
    keys = KeySchema(settings.key_prefix)
    try:
        await redis.ping()  # an unreachable Redis fails here, before any work
        if args.sample:
            sampled = await Prober(settings.database_url, redis, keys).sample(
                args.sample, args.rate, args.timeout
            )
            print(json.dumps(sampled.as_json()) if args.json else sampled.summary())
            return STALE if sampled.missed else 0
        # One plain connection first: an unreachable server is reported at once, with
        # libpq's own message, instead of by the pool's retries.
        await (await psycopg.AsyncConnection.connect(settings.database_url)).close()
        pool = make_pool(
            settings.database_url, 1, 4, "cdc-listener-check", settings.cdc_liveness_timeout
        )
        await pool.open(wait=True, timeout=10)
        try:
            report = await Checker(redis, pool, keys, settings).run(args.grace)
        finally:
            await pool.close()
    finally:
        await redis.aclose()
    print(json.dumps(report.as_json()) if args.json else report.summary())
    return STALE if report.stale else 0


Command = Callable[[ListenerSettings, argparse.Namespace], Coroutine[Any, Any, int]]
COMMANDS: dict[str, tuple[Command, str]] = {
    "run": (_run, "follow the change stream and keep Redis right"),
    "status": (_status, "slot, confirmed LSN, retained WAL bytes, lag, standbys' copies"),
    "drop-slot": (_drop, "drop the replication slot (the next run flushes the cache)"),
    "install-notify": (_install_notify, "install the outbox and triggers for CDC_MODE=notify"),
    "warm": (_warm, "fill the hot keys (dashboard, lists, most requested prices) now"),
    "check": (_check, "compare every cached key with PostgreSQL; exit 3 on stale keys"),
}

_CHECK_HELP = """\
Without --sample: SCAN the namespace, recompute every cached value from PostgreSQL with
the queries a fill uses, and compare. A differing key is read again after --grace
seconds and reported stale only if nothing invalidated or replaced it meanwhile and it
still differs. Exit 0 clean, 3 stale keys, 1 a server is unreachable.

With --sample N: measure end-to-end invalidation delay N times through the probe table
(cache_probe): set probe:{row}, commit an UPDATE of the row, time commit acknowledged ->
key gone. Reports the share within 10 ms, 100 ms and 1 s, p50 and p99. Bias: up to ~0.1 ms
under-measured (the listener may see a commit before the writer's acknowledgement), up
to ~1 ms over-measured past 20 ms (poll interval); the delayed second pass is not timed.
Exit 3 if an invalidation did not arrive within --timeout.
"""


def _bounded(
    kind: type[int] | type[float], high: float, *, zero_ok: bool = False
) -> Callable[[str], int | float]:
    """An argparse type: a finite number of `kind` above 0 (or 0 itself, with `zero_ok`)
    and at most `high`."""

    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        # NaN fails every comparison, so it is refused here along with the infinities.
        if not (math.isfinite(value) and (value > 0 or (zero_ok and value == 0)) and value <= high):
            low = "at least 0" if zero_ok else "above 0"
            raise argparse.ArgumentTypeError(f"must be {low} and at most {high:g}, got {text}")
        return value

    return parse


def _add_check_options(check: argparse.ArgumentParser) -> None:
    check.add_argument("--json", action="store_true", help="print one JSON object")
    check.add_argument(
        "--grace",
        type=_bounded(float, MAX_SECONDS, zero_ok=True),
        default=None,
        help="seconds before a differing key is read again (default CDC_CHECK_GRACE)",
    )
    check.add_argument(
        "--sample", type=_bounded(int, 1_000_000), metavar="N", help="time N invalidations instead"
    )
    check.add_argument(
        "--rate", type=_bounded(float, 10_000), default=20.0, help="samples per second (default 20)"
    )
    check.add_argument(
        "--timeout",
        type=_bounded(float, MAX_SECONDS),
        default=5.0,
        help="seconds after which a sample counts as never invalidated (default 5)",
    )


class _Parser(argparse.ArgumentParser):
    """Bad usage is one line and exit 2 (argparse's own adds the whole usage first)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see --help)\n")


def main(argv: list[str] | None = None) -> int:
    """`cdc-listener <command>`; the exit code."""
    parser = _Parser(
        prog="cdc-listener",
        description="Keeps the Redis orders cache right from PostgreSQL's change stream."
        " Settings come from the environment (DATABASE_URL, REDIS_URL, CDC_MODE, ...).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        if name == "check":
            _add_check_options(
                sub.add_parser(
                    name,
                    help=help_text,
                    description=_CHECK_HELP,
                    formatter_class=argparse.RawDescriptionHelpFormatter,
                )
            )
        elif name == "status":
            sub.add_parser(name, help=help_text).add_argument(
                "--json", action="store_true", help="one JSON object with stable field names"
            )
        else:
            sub.add_parser(name, help=help_text)
    args = parser.parse_args(argv)
    try:
        settings = ListenerSettings()  # type: ignore[call-arg]  # values come from the environment
    except ValidationError as exc:
        print(f"cdc-listener: bad settings: {describe_settings_error(exc)}", file=sys.stderr)
        return 2
    configure_logging(settings.log_format, settings.log_level)
    if args.command == "check" and args.grace is None:
        args.grace = settings.cdc_check_grace
    command, _ = COMMANDS[args.command]
    try:
        # uvloop: the wake-up on each arriving commit is a share of the invalidation lag.
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(command(settings, args))
    except KeyboardInterrupt:
        return 130
    except (psycopg.Error, RedisError, MesCacheError, OSError) as exc:
        # One line, never a connection string's password (psycopg quotes what it parsed).
        message = redact(" ".join(str(exc).split()))
        print(f"cdc-listener {args.command}: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
