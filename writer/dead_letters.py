"""`orders-writer dead-letters list|retry|drop`: the status changes the writer could not apply.

A dead letter is a change that was answered 202 and did not happen (PostgreSQL refused the
move, the order does not exist, the entry was malformed, or it failed too often). Each is
named by its id in the dead-letter stream; `list` shows the order, the status, the reason
and how long ago it was given up. `retry` appends the change to the stream again as a new
entry (mescache.pending's retry script: one step, so a dead letter retried twice, even at
once from two terminals, is appended once) and the writer applies it like any other, once;
a malformed one cannot be retried, only dropped. `drop` deletes dead letters once the
people concerned know.

Exit codes: 0 done, 2 an id that names no dead letter (or one that cannot be retried); the
others as for the writer (1 when Redis cannot be reached).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from dataclasses import asdict, dataclass
from typing import cast

from redis.asyncio import Redis

from mescache.keys import KeySchema
from mescache.pending import PendingWrites
from mescache.redisconn import make_redis
from writer.entries import parse_entry, raw_fields
from writer.errors import MalformedEntry, UnknownDeadLetter
from writer.settings import WriterSettings

_STREAM_ID = re.compile(r"[0-9]+-[0-9]+")
_LIST_DEFAULT = 100


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One dead letter as listed."""

    id: str
    entry: str | None  # the original stream entry (absent for a malformed one)
    order_id: str | None
    status: str | None
    reason: str
    age_s: float  # since it was given up (the dead letter's own id is its time)

    def line(self) -> str:
        """The dead letter as `orders-writer dead-letters list` prints it."""
        change = f"order {self.order_id or '?'} -> {self.status or '?'}"
        return f"{self.id}  {_age(self.age_s):>6} ago  {change}  {self.reason}"


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


def _dead_letter(dead_id: bytes | str, fields: dict[bytes, bytes] | None) -> DeadLetter:
    values = raw_fields(fields)
    ident = dead_id.decode() if isinstance(dead_id, bytes) else dead_id
    return DeadLetter(
        id=ident,
        entry=values.get("entry"),
        order_id=values.get("order_id"),
        status=values.get("status"),
        reason=values.get("reason", ""),
        age_s=round(max(0.0, time.time() - int(ident.split("-")[0]) / 1000), 3),
    )


async def list_dead_letters(redis: Redis, keys: KeySchema, limit: int) -> list[DeadLetter]:
    """The oldest `limit` dead letters."""
    found = cast(
        list[tuple[bytes, dict[bytes, bytes]]],
        await redis.xrange(keys.dead_letters(), count=limit),
    )
    return [_dead_letter(i, f) for i, f in found]


async def _fetch(
    redis: Redis, keys: KeySchema, ids: list[str], everything: bool
) -> list[DeadLetter]:
    if everything:
        found = cast(
            list[tuple[bytes, dict[bytes, bytes]]], await redis.xrange(keys.dead_letters())
        )
        return [_dead_letter(i, f) for i, f in found]
    letters = []
    for ident in ids:
        if not _STREAM_ID.fullmatch(ident):
            raise UnknownDeadLetter(f"{ident!r} is not a dead letter id (like 1718000000000-0)")
        got = cast(
            list[tuple[bytes, dict[bytes, bytes]]],
            await redis.xrange(keys.dead_letters(), ident, ident),
        )
        if not got:
            raise UnknownDeadLetter(f"no dead letter {ident}")
        letters.append(_dead_letter(*got[0]))
    return letters


async def retry_dead_letters(
    redis: Redis, keys: KeySchema, ids: list[str], everything: bool = False
) -> list[tuple[DeadLetter, str]]:
    """Append each dead letter to the stream again; returns them with their new entries.
    Every id is checked first, so a bad one retries nothing."""
    letters = await _fetch(redis, keys, ids, everything)
    changes = []
    for letter in letters:
        try:
            change = parse_entry(
                letter.entry or letter.id,
                {"order_id": letter.order_id or "", "status": letter.status or ""},
            )
        except MalformedEntry as exc:
            if everything:
                continue  # `--all` retries what can be retried
            raise UnknownDeadLetter(f"cannot retry {letter.id} ({exc}): drop it") from None
        changes.append((letter, change))
    pending = PendingWrites(redis, keys)
    done = []
    for letter, change in changes:
        entry = await pending.retry(letter.id, change.order_id, change.status)
        if entry is None:
            raise UnknownDeadLetter(f"no dead letter {letter.id} (retried or dropped meanwhile)")
        done.append((letter, entry))
    return done


async def drop_dead_letters(
    redis: Redis, keys: KeySchema, ids: list[str], everything: bool = False
) -> list[DeadLetter]:
    """Remove dead letters (`everything`: all of them); those dropped."""
    letters = await _fetch(redis, keys, ids, everything)
    if letters:
        await redis.xdel(keys.dead_letters(), *[letter.id for letter in letters])
    return letters


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `dead-letters list|retry|drop` to the CLI's commands."""
    parser = sub.add_parser(
        "dead-letters", help="list, retry or drop changes that were not applied"
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="ids, orders, reasons and ages, oldest first")
    listing.add_argument(
        "--limit", type=int, default=_LIST_DEFAULT, help=f"at most this many ({_LIST_DEFAULT})"
    )
    for name, text in (
        ("retry", "append dead letters to the stream again (the writer applies each once)"),
        ("drop", "delete dead letters"),
    ):
        action = actions.add_parser(name, help=text)
        action.add_argument("ids", nargs="*", metavar="ID", help="dead letter ids (from list)")
        action.add_argument("--all", action="store_true", help="every dead letter")
    for action in actions.choices.values():
        action.add_argument("--json", action="store_true", help="one JSON object")


def usage_error(args: argparse.Namespace) -> str | None:
    """What is wrong with the arguments, before any server is asked."""
    if args.action == "list":
        return None if args.limit >= 1 else "--limit must be at least 1"
    if bool(args.ids) == bool(args.all):
        return f"dead-letters {args.action}: give dead letter ids or --all, not both or neither"
    return None


async def run(settings: WriterSettings, args: argparse.Namespace) -> int:
    """`orders-writer dead-letters list|retry|drop`; the exit code."""
    if problem := usage_error(args):
        print(f"orders-writer: {problem}", file=sys.stderr)
        return 2
    keys = KeySchema(settings.key_prefix)
    redis = make_redis(settings.redis_url, max(settings.redis_timeout, 2.0), 1)
    try:
        return await _act(redis, keys, args)
    except UnknownDeadLetter as exc:
        print(f"orders-writer dead-letters {args.action}: {exc}", file=sys.stderr)
        return 2
    finally:
        await redis.aclose()


async def _act(redis: Redis, keys: KeySchema, args: argparse.Namespace) -> int:
    if args.action == "list":
        letters = await list_dead_letters(redis, keys, args.limit)
        total = int(await redis.xlen(keys.dead_letters()))
        if args.json:
            print(json.dumps({"total": total, "dead_letters": [asdict(d) for d in letters]}))
        else:
            print(f"dead letters: {total} in {keys.dead_letters()}")
            for letter in letters:
                print(f"  {letter.line()}")
            if total > len(letters):
                print(f"  ... {total - len(letters)} more (--limit)")
        return 0
    if args.action == "retry":
        retried = await retry_dead_letters(redis, keys, args.ids, args.all)
        if args.json:
            print(json.dumps({"retried": [{"id": d.id, "entry": e} for d, e in retried]}))
        else:
            for letter, entry in retried:
                change = f"order {letter.order_id} -> {letter.status}"
                print(f"retried {letter.id} as entry {entry} ({change})")
            print(f"retried: {len(retried)}")
        return 0
    dropped = await drop_dead_letters(redis, keys, args.ids, args.all)
    if args.json:
        print(json.dumps({"dropped": [d.id for d in dropped]}))
    else:
        for letter in dropped:
            print(f"dropped {letter.id} (order {letter.order_id or '?'}: {letter.reason})")
        print(f"dropped: {len(dropped)}")
    return 0
