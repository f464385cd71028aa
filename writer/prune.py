"""Pruning ``write_behind_applied``: forgetting entries that can never be delivered again.

The applied table exists so that a replay changes nothing: an entry the writer committed
but had not acknowledged when it died comes back, finds its id, and is skipped. An entry can
come back only while the stream holds it: the consumer group redelivers pending entries,
and a group created anew (it starts from the stream's beginning) delivers every entry still
kept. Once an entry is trimmed off the stream (the writer trims only acknowledged ones) no
read can return it, and its row protects nothing. So the unreplayable position is the first
id still kept in the stream (the next id to be generated when it is empty): every row below
it may go. Stream ids only grow, and the writer adds none below it.

Rows go only `WRITER_PRUNE_LAG` seconds after that position was seen, never at once: a Redis
that crashes with `appendfsync everysec`, or fails over to a replica, can lose its last
second of writes, the trim among them, and come back holding entries already pruned here.
A Redis restored from a backup older than that lag would replay what it holds, like any
write it lost: do not restore the cache's Redis from a backup in write-behind mode.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import cast

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from mescache.queries import query
from writer.apply import Connection

log = logging.getLogger("writer.prune")

StreamId = tuple[int, int]


def parse_stream_id(value: bytes | str) -> StreamId:
    """A Redis stream id (`ms-seq`) as a pair that orders correctly."""
    text = value.decode() if isinstance(value, bytes) else value
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


async def first_replayable(redis: Redis, stream: str) -> StreamId | None:
    """The smallest id a read of `stream` could still return (None: no stream)."""
    try:
        info = await redis.xinfo_stream(stream)
    except ResponseError:
        return None  # no such key: nothing to learn from it
    first = cast(tuple[bytes, object] | None, info.get("first-entry"))
    if first is not None:
        return parse_stream_id(first[0])
    ms, seq = parse_stream_id(cast(bytes, info["last-generated-id"]))
    return ms, seq + 1


async def prune_applied(conn: Connection, below: StreamId) -> int:
    """Delete the applied rows of entries with ids below `below`; returns how many."""
    cur = await conn.execute(query("wb_prune_applied"), {"ms": below[0], "seq": below[1]})
    return cur.rowcount


class AppliedPruner:
    """Prunes below the position seen at least `lag` seconds ago (see the module's text)."""

    def __init__(self, stream: str, lag: float) -> None:
        self.stream = stream
        self.lag = lag
        self._seen: deque[tuple[float, StreamId]] = deque()

    async def run(self, redis: Redis, conn: Connection) -> int:
        """Note where the stream starts now, and prune below a position old enough."""
        now = time.monotonic()
        position = await first_replayable(redis, self.stream)
        if position is not None:
            self._seen.append((now, position))
        below: StreamId | None = None
        while self._seen and self._seen[0][0] <= now - self.lag:
            below = self._seen.popleft()[1]
        if below is None:
            return 0
        pruned = await prune_applied(conn, below)
        if pruned:
            log.info("pruned applied entries rows=%d below=%d-%d", pruned, *below)
        return pruned
