"""The floor a listener is measured against: a consumer that only reads a slot and
confirms, with the listener's own transport, and nothing else.

`drain SLOT END`: read until a commit ending at or past END is confirmed (catch-up floor).
`floor SLOT`: until SIGTERM, note when each commit arrives, keyed by the id of the order
it updated, and print them as JSON lines "id perf_counter" (commit-to-receive floor).
`invalidate SLOT REDIS_URL`: until SIGTERM, at each commit delete the key `bare:{id}` of the
order it updated, one DEL with redis-py per commit, awaited before reading on: the
invalidator a user would write in a few lines (commit-to-key-gone floor).
Run: .venv/bin/python -m bench.bare_consumer drain orders_bare 0/5A0B3C18
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable

import uvloop
from redis.asyncio import Redis

from cdc_listener.pgoutput import Commit, Update, decode
from cdc_listener.replication import XLogData, parse_copy_data, parse_lsn, pg_now, standby_status
from cdc_listener.transport import ReplicationStream

_COMMIT = ord("C")
_UPDATE = ord("U")
_STATUS_EVERY = 0.05  # s, while data keeps coming


OnCommit = Callable[[int], Awaitable[None]]


async def consume(url: str, slot: str, end: int | None, on_commit: OnCommit | None) -> None:
    """Read the slot, confirming, until `end` is confirmed (None: until SIGTERM); at each
    commit `on_commit` gets the id of the order it updated (None: nothing is decoded)."""
    stream = await ReplicationStream.connect(url, "bench_bare", 30.0)
    await stream.start(slot, "orders_cache")
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    confirmed = sent = 0
    next_status = 0.0
    order_id = 0
    while not stop.is_set():
        data = stream.read_nowait()
        if data is None:
            if confirmed != sent:
                await stream.send(standby_status(confirmed, confirmed, confirmed, pg_now()))
                sent = confirmed
                if end is not None and confirmed >= end:
                    break
            data = await stream.read(0.1)
            if data is None:
                continue
        frame = parse_copy_data(data)
        if isinstance(frame, XLogData):
            tag = frame.payload[0]
            if tag == _COMMIT:
                message = decode(frame.payload)
                assert isinstance(message, Commit)
                confirmed = message.end_lsn
                if on_commit is not None:
                    await on_commit(order_id)
            elif tag == _UPDATE and on_commit is not None:
                update = decode(frame.payload)
                assert isinstance(update, Update)
                value = update.new[0]
                order_id = int(value) if isinstance(value, bytes) else 0
        elif frame.reply_requested:
            await stream.send(standby_status(confirmed, confirmed, confirmed, pg_now()))
            sent = confirmed
        now = time.monotonic()
        if confirmed != sent and now >= next_status:
            await stream.send(standby_status(confirmed, confirmed, confirmed, pg_now()))
            sent, next_status = confirmed, now + _STATUS_EVERY
    await stream.close()


async def run(mode: str, url: str, slot: str, last: str | None) -> list[tuple[int, float]]:
    """One mode of the module docstring; the arrivals noted (floor mode)."""
    arrivals: list[tuple[int, float]] = []

    async def arrived(order_id: int) -> None:
        arrivals.append((order_id, time.perf_counter()))

    if mode == "drain":
        assert last is not None
        await consume(url, slot, parse_lsn(last), None)
    elif mode == "floor":
        await consume(url, slot, None, arrived)
    else:
        assert last is not None
        redis = Redis.from_url(last)

        async def delete(order_id: int) -> None:
            await redis.delete(f"bare:{{{order_id}}}")

        try:
            await consume(url, slot, None, delete)
        finally:
            await redis.aclose()
    return arrivals


def main() -> int:
    mode, slot = sys.argv[1], sys.argv[2]
    last = sys.argv[3] if len(sys.argv) > 3 else None
    # uvloop, as the listener: the floors differ from it by its own work, not by the loop.
    arrivals = uvloop.run(run(mode, os.environ["DATABASE_URL"], slot, last))
    sys.stdout.write("".join(f"{i} {t!r}\n" for i, t in arrivals))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
