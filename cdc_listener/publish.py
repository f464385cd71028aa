"""Announce each applied batch on the namespace's pub/sub channel (``cache:changes``).

Open operator dashboards follow the channel (through the API's ``/events``) and refetch
when an order changed, whoever changed it. A message is published only after the batch's
Redis work has fully succeeded (in logical mode, after the delayed second pass too), so a
page that refetches on it reads the new state.

A failed publish is logged and counted, never raised: the change itself is already in
Redis, and pub/sub delivers nothing durably anyway (a page that is reconnecting misses
messages even when PUBLISH succeeds), so refusing to confirm the position would buy no
guarantee for the pages, only replay a batch that needs none. Pages resynchronize on
every reconnect instead. The publish also never runs before or instead of the apply: it
cannot make the listener confirm work that Redis does not have.

Messages are published in order by a task of the publisher's own, on another connection,
so the listener goes back to its stream at once instead of waiting for a PUBLISH round
trip that the next commit would queue behind; messages that pile up meanwhile go in one
round trip, written as the listener's batches are (mescache.store's raw path: a connection
held, commands packed in one pass), which costs a fraction of redis-py's pipeline. At
most `backlog` wait: past that (Redis very slow) the oldest are dropped and counted as
failed.

On a Redis Cluster the channel is a sharded one (``SPUBLISH``): the message goes to the
shard owning the channel's slot only, instead of over the cluster bus to every node as a
plain ``PUBLISH`` would; the API subscribes with ``SSUBSCRIBE`` (api.feed). A single
Redis and a Sentinel-managed master use plain ``PUBLISH``.

Message (JSON, one per batch)::

    {"orders": [17, 42], "catalogue": false, "commits": 2, "lsn": "0/1A2B3C8", "lag_ms": 1.7}

``orders`` is null when the batch touched too many orders to list (or a whole table);
``catalogue`` is true when it touched models or materials (pages refetch their names);
``lsn`` is the batch's last commit end (null in notify mode, which has no LSN);
``lag_ms`` is the time from the batch's oldest commit to its first application to Redis
(null when unknown). Commit times come from the database server's clock: on another host,
clock skew shows up in the lag.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from collections.abc import Callable
from typing import Final

from redis.asyncio import Redis
from redis.exceptions import RedisClusterException, RedisError

from cdc_listener.apply import Batch
from cdc_listener.replication import format_lsn
from mescache.redisconn import is_cluster, refresh_topology
from mescache.store import Commands, RedisStore

log = logging.getLogger("cdc_listener.publish")

MAX_LISTED_IDS: Final = 200  # past this, a message says "many" (null) to stay small


def change_message(batch: Batch, with_lsn: bool) -> bytes:
    """The announcement of one applied batch."""
    touched = batch.touched
    orders: list[int] | None = None
    if not touched.all_orders and len(touched.orders) <= MAX_LISTED_IDS:
        orders = sorted(touched.orders)
    return json.dumps(
        {
            "orders": orders,
            "catalogue": touched.catalogue,
            "commits": batch.commits,
            "lsn": format_lsn(batch.end_lsn) if with_lsn else None,
            "lag_ms": None if batch.lag is None else round(batch.lag * 1000, 3),
        },
        separators=(",", ":"),
    ).encode()


class ChangePublisher:
    """Publishes one message per applied batch, in order; counts (and logs) the ones that
    failed. `close` waits for those still queued. `observer`, if given, is told of each
    announced batch at once (the consistency sampler takes its keys from there)."""

    def __init__(
        self,
        redis: Redis,
        channel: str,
        with_lsn: bool,
        backlog: int = 1000,
        observer: Callable[[Batch], None] | None = None,
    ) -> None:
        self.redis = redis
        self.observer = observer
        self.channel = channel
        self.with_lsn = with_lsn
        self.backlog = backlog
        self.published = 0
        self.failures = 0
        self._queue: deque[tuple[bytes, int]] = deque()  # message, batch end LSN
        self._sending: asyncio.Task[None] | None = None
        self._sharded = is_cluster(redis)
        self._store = RedisStore(redis)  # for its raw path: a connection of its own

    def announce(self, batch: Batch) -> None:
        """Queue the batch's message; it is sent soon, after those queued before it."""
        if not batch.touched:
            return
        if self.observer is not None:
            self.observer(batch)
        if len(self._queue) >= self.backlog:
            _, lsn = self._queue.popleft()
            self._failed(1, lsn, "backlog full")
        self._queue.append((change_message(batch, self.with_lsn), batch.end_lsn))
        if self._sending is None:
            self._sending = asyncio.get_running_loop().create_task(self._send())

    async def close(self) -> None:
        """Wait until what was announced has been published (or has failed)."""
        if self._sending is not None:
            await asyncio.shield(self._sending)

    async def _send(self) -> None:
        try:
            while self._queue:
                messages = list(self._queue)
                self._queue.clear()
                try:
                    await self._publish([message for message, _ in messages])
                except (RedisError, RedisClusterException) as exc:
                    # Argued in the module docstring: the changes are applied; only the
                    # nudges are lost. (A cluster's slot map errors are no RedisError.)
                    self._failed(len(messages), messages[-1][1], str(exc))
                    # A cluster pipeline that failed does not reload the slot map itself.
                    with contextlib.suppress(RedisError, RedisClusterException, OSError):
                        await refresh_topology(self.redis)
                else:
                    self.published += len(messages)
        finally:
            self._sending = None

    async def _publish(self, messages: list[bytes]) -> None:
        """One round trip: a single Redis's PUBLISH written by the store's raw path (its own
        connection, packed in one pass), a cluster's SPUBLISH through its pipeline."""
        if not self._sharded:

            def queue(cmds: Commands) -> None:
                for message in messages:
                    cmds.command("PUBLISH", self.channel, message)

            await self._store.send(queue)
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for message in messages:
                pipe.spublish(self.channel, message)
            await pipe.execute()

    def _failed(self, count: int, lsn: int, error: str) -> None:
        self.failures += count
        log.warning(
            "change not announced channel=%s lsn=%s: %s", self.channel, format_lsn(lsn), error
        )
