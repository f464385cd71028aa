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

Message (JSON, one per batch)::

    {"orders": [17, 42], "commits": 2, "lsn": "0/1A2B3C8", "lag_ms": 1.7}

``orders`` is null when the batch touched too many orders to list (or a whole table);
``lsn`` is the batch's last commit end (null in notify mode, which has no LSN);
``lag_ms`` is the time from the batch's oldest commit to its first application to Redis
(null when unknown). Commit times come from the database server's clock: on another host,
clock skew shows up in the lag.
"""

from __future__ import annotations

import json
import logging
from typing import Final

from redis.asyncio import Redis
from redis.exceptions import RedisError

from cdc_listener.apply import Batch
from cdc_listener.replication import format_lsn

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
            "commits": batch.commits,
            "lsn": format_lsn(batch.end_lsn) if with_lsn else None,
            "lag_ms": None if batch.lag is None else round(batch.lag * 1000, 3),
        },
        separators=(",", ":"),
    ).encode()


class ChangePublisher:
    """Publishes one message per applied batch; counts (and logs) the ones that failed."""

    def __init__(self, redis: Redis, channel: str, with_lsn: bool) -> None:
        self.redis = redis
        self.channel = channel
        self.with_lsn = with_lsn
        self.published = 0
        self.failures = 0

    async def announce(self, batch: Batch) -> None:
        if not batch.touched:
            return
        message = change_message(batch, self.with_lsn)
        try:
            await self.redis.publish(self.channel, message)
        except RedisError as exc:
            # Argued in the module docstring: the change is applied; only the nudge is lost.
            self.failures += 1
            log.warning(
                "change not announced channel=%s lsn=%s: %s",
                self.channel,
                format_lsn(batch.end_lsn),
                exc,
            )
        else:
            self.published += 1
