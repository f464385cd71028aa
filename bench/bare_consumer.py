"""The floor a listener is measured against: a consumer that only reads a slot and
confirms, with the listener's own transport, and nothing else.

`drain SLOT END`: read until a commit ending at or past END is confirmed (catch-up floor).
`floor SLOT`: until SIGTERM, note when each commit arrives, keyed by the id of the order
it updated, and print them as JSON lines "id perf_counter" (commit-to-receive floor).
Run: .venv/bin/python -m bench.bare_consumer drain orders_bare 0/5A0B3C18
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time

from cdc_listener.pgoutput import Commit, Update, decode
from cdc_listener.replication import XLogData, parse_copy_data, parse_lsn, pg_now, standby_status
from cdc_listener.transport import ReplicationStream

_COMMIT = ord("C")
_UPDATE = ord("U")
_STATUS_EVERY = 0.05  # s, while data keeps coming


async def consume(url: str, slot: str, end: int | None) -> list[tuple[int, float]]:
    stream = await ReplicationStream.connect(url, "bench_bare", 30.0)
    await stream.start(slot, "orders_cache")
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    confirmed = sent = 0
    next_status = 0.0
    arrivals: list[tuple[int, float]] = []
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
                if end is None:
                    arrivals.append((order_id, time.perf_counter()))
            elif tag == _UPDATE and end is None:
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
    return arrivals


def main() -> int:
    mode, slot = sys.argv[1], sys.argv[2]
    url = os.environ["DATABASE_URL"]
    end = parse_lsn(sys.argv[3]) if mode == "drain" else None
    arrivals = asyncio.run(consume(url, slot, end))
    sys.stdout.write("".join(f"{i} {t!r}\n" for i, t in arrivals))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
