"""Operating write-behind: `orders-writer dead-letters list|retry|drop` on real servers, and
the applied table pruned below the stream's first entry without ever applying twice."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from typing import cast

import psycopg
import redis.asyncio

from mescache.keys import KeySchema
from mescache.pending import GROUP, PendingWrites
from tests.integration.listener_fixtures import eventually
from tests.integration.writer_fixtures import (
    InProcessWriter,
    applied_entries,
    dba,
    new_orders,
    process_env,
    status_in_db,
    wb_redis,
    writer,
    writer_settings,
)
from writer.apply import EntryApplied, apply_entry
from writer.dead_letters import retry_dead_letters
from writer.entries import StatusEntry
from writer.errors import UnknownDeadLetter
from writer.prune import AppliedPruner

__all__ = ["wb_redis", "writer"]  # the fixtures

KEYS = KeySchema()


def cli(database_url: str, redis_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`orders-writer ARGS` as a process, with the writer's settings in its environment."""
    env = process_env(writer_settings(database_url, redis_url))
    return subprocess.run(
        [sys.executable, "-m", "writer.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


async def stream(r: redis.asyncio.Redis, key: str) -> list[tuple[str, dict[bytes, bytes]]]:
    found = cast(list[tuple[bytes, dict[bytes, bytes]]], await r.xrange(key))
    return [(i.decode(), f) for i, f in found]


async def dead_letters(r: redis.asyncio.Redis) -> list[tuple[str, dict[bytes, bytes]]]:
    return await stream(r, KEYS.dead_letters())


async def test_a_retried_dead_letter_is_applied_exactly_once(
    writer: InProcessWriter,
    wb_redis: redis.asyncio.Redis,
    database_url: str,
    durable_redis_url: str,
) -> None:
    (order_id,) = new_orders(database_url, 1)
    pending = PendingWrites(wb_redis, KEYS)
    accepted = await pending.accept(order_id, "in_progress", "new")
    assert accepted.entry is not None
    # A DBA finished the order meanwhile: PostgreSQL refuses the move.
    dba(database_url, "UPDATE orders SET status = 'done' WHERE id = %s", [order_id])
    await writer.start()
    await eventually(lambda: _count(wb_redis, 1), "the refused change dead-lettered")
    [(dead_id, fields)] = await dead_letters(wb_redis)
    assert fields[b"entry"].decode() == accepted.entry

    listed = await asyncio.to_thread(
        cli, database_url, durable_redis_url, "dead-letters", "list", "--json"
    )
    assert listed.returncode == 0, listed.stderr
    report = json.loads(listed.stdout)
    assert report["total"] == 1
    [shown] = report["dead_letters"]
    assert shown["id"] == dead_id
    assert shown["entry"] == accepted.entry
    assert (shown["order_id"], shown["status"]) == (str(order_id), "in_progress")
    assert "illegal move" in shown["reason"]
    assert 0 <= shown["age_s"] < 600

    # The people concerned put the order back; two operators retry it at the same moment.
    dba(database_url, "UPDATE orders SET status = 'new' WHERE id = %s", [order_id])
    outcomes = await asyncio.gather(
        retry_dead_letters(wb_redis, KEYS, [dead_id]),
        retry_dead_letters(wb_redis, KEYS, [dead_id]),
        return_exceptions=True,
    )
    retried = [o for o in outcomes if isinstance(o, list)]
    refused = [o for o in outcomes if isinstance(o, UnknownDeadLetter)]
    assert len(retried) == 1, outcomes
    assert len(refused) == 1, outcomes
    [(_, new_entry)] = retried[0]
    overlay = await pending.overlay(order_id)
    assert overlay is not None
    assert overlay.entry == new_entry  # reads show the retried status while it is pending
    assert await dead_letters(wb_redis) == []

    await eventually(
        lambda: asyncio.to_thread(lambda: new_entry in applied_entries(database_url)),
        "the retried change applied",
    )
    await eventually(lambda: _drained(wb_redis), "every entry acknowledged")
    assert status_in_db(database_url, order_id) == "in_progress"
    assert applied_entries(database_url) == {new_entry: (order_id, "in_progress")}
    assert await dead_letters(wb_redis) == []  # applied once: a second try would be refused
    retries = [f for _, f in await stream(wb_redis, KEYS.write_stream()) if b"retry_of" in f]
    assert [f[b"retry_of"].decode() for f in retries] == [accepted.entry]

    again = await asyncio.to_thread(
        cli, database_url, durable_redis_url, "dead-letters", "retry", dead_id
    )
    assert again.returncode == 2
    assert f"no dead letter {dead_id}" in again.stderr
    assert "Traceback" not in again.stderr


async def _count(r: redis.asyncio.Redis, count: int) -> bool:
    return await r.xlen(KEYS.dead_letters()) >= count


async def _drained(r: redis.asyncio.Redis) -> bool:
    summary = await r.xpending(KEYS.write_stream(), GROUP)
    groups = [g for g in await r.xinfo_groups(KEYS.write_stream()) if g["name"] == GROUP.encode()]
    return summary["pending"] == 0 and bool(groups) and not groups[0]["lag"]


def test_list_retry_and_drop_speak_plainly(database_url: str, durable_redis_url: str) -> None:
    with redis.Redis.from_url(durable_redis_url) as r:
        malformed = r.xadd(
            KEYS.dead_letters(),
            {"order_id": "x", "status": "done", "reason": "malformed entry: order_id 'x'"},
        ).decode()
        unknown = r.xadd(
            KEYS.dead_letters(),
            {
                "entry": "1-0",
                "order_id": "999999",
                "status": "done",
                "reason": "unknown order 999999",
            },
        ).decode()

    listed = cli(database_url, durable_redis_url, "dead-letters", "list")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0] == f"dead letters: 2 in {KEYS.dead_letters()}"
    assert lines[1].split()[0] == malformed
    assert "malformed entry" in lines[1]
    assert "order 999999 -> done" in lines[2]
    assert "ago" in lines[2]
    limited = cli(database_url, durable_redis_url, "dead-letters", "list", "--limit", "1")
    assert "1 more (--limit)" in limited.stdout

    cannot = cli(database_url, durable_redis_url, "dead-letters", "retry", malformed)
    assert cannot.returncode == 2
    assert "cannot retry" in cannot.stderr
    assert "drop it" in cannot.stderr
    for bad in (
        ("retry",),  # neither ids nor --all
        ("drop", unknown, "--all"),
        ("drop", "not-an-id"),
        ("drop", "1-1"),  # names none
        ("list", "--limit", "0"),
    ):
        result = cli(database_url, durable_redis_url, "dead-letters", *bad)
        assert result.returncode == 2, (bad, result.stdout, result.stderr)
        assert result.stderr.count("\n") <= 3, result.stderr  # a message, not a traceback
        assert "Traceback" not in result.stderr

    dropped = cli(database_url, durable_redis_url, "dead-letters", "drop", malformed, "--json")
    assert dropped.returncode == 0, dropped.stderr
    assert json.loads(dropped.stdout) == {"dropped": [malformed]}
    dropped_all = cli(database_url, durable_redis_url, "dead-letters", "drop", "--all")
    assert dropped_all.returncode == 0
    assert "dropped: 1" in dropped_all.stdout
    with redis.Redis.from_url(durable_redis_url) as r:
        assert r.xlen(KEYS.dead_letters()) == 0


async def test_a_replay_after_pruning_applies_nothing_twice(
    wb_redis: redis.asyncio.Redis, database_url: str, durable_redis_url: str
) -> None:

    first, second, third = new_orders(database_url, 3)
    pending = PendingWrites(wb_redis, KEYS)
    settings = writer_settings(database_url, durable_redis_url, writer_prune_lag=0.2)
    running = InProcessWriter(settings)
    entries = [(await pending.accept(o, "in_progress", "new")).entry for o in (first, second)]
    await running.start()
    try:
        await eventually(
            lambda: asyncio.to_thread(lambda: len(applied_entries(database_url)) == 2),
            "two changes applied",
        )
        # Both acknowledged; the first is trimmed off the stream and forgotten. The last
        # delivered one stays in the stream (trimming keeps it), and so does its row.
        await eventually(
            lambda: asyncio.to_thread(lambda: list(applied_entries(database_url)) == entries[1:]),
            "the first applied row pruned",
        )
    finally:
        await running.close()

    # A third change committed by a writer that died before acknowledging it: in the
    # stream with the second, so both rows must survive any number of pruning passes.
    accepted = await pending.accept(third, "in_progress", "new")
    assert accepted.entry is not None
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        entry = StatusEntry(accepted.entry, third, "in_progress", "new")
        assert await apply_entry(conn, entry) == EntryApplied(replay=False)
        pruner = AppliedPruner(KEYS.write_stream(), lag=0)
        for _ in range(3):
            assert await pruner.run(wb_redis, conn) == 0
    assert sorted(applied_entries(database_url)) == [entries[1], accepted.entry]

    # The worst replay: the group is recreated, so everything the stream still holds is
    # delivered again. DBAs moved every order back: a change applied twice would show.
    dba(
        database_url,
        "UPDATE orders SET status = 'new' WHERE id = ANY(%s)",
        [[first, second, third]],
    )
    await wb_redis.xgroup_destroy(KEYS.write_stream(), GROUP)
    again = InProcessWriter(settings)
    await again.start()
    try:
        await eventually(lambda: _drained(wb_redis), "the stream replayed")
    finally:
        await again.close()
    assert [status_in_db(database_url, o) for o in (first, second, third)] == ["new"] * 3
    assert await wb_redis.xlen(KEYS.dead_letters()) == 0
    assert again.writer.applied == 2  # the second and third entries, both as replays
    assert sorted(applied_entries(database_url)) == [entries[1], accepted.entry]
