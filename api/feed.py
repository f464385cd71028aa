"""The change feed: one Redis subscription per API process, fanned out to open pages.

The listener publishes one message per applied batch on the namespace's changes channel
(see cdc_listener.publish). This process holds a single subscription to it, whatever the
number of open dashboards, and hands every message to each page's bounded queue. A page
that falls behind loses nothing that matters: its queue is replaced by one ``resync``
(refetch everything). After the subscription is lost and regained, every page gets a
``resync`` too, since messages published in between are gone (pub/sub keeps nothing).

On a Redis Cluster the subscription is sharded (``SSUBSCRIBE``, on the shard owning the
channel's slot; cdc_listener.publish sends with ``SPUBLISH``). A failover or slot move of
that shard ends it, by a broken connection or by the server's ``sunsubscribe``: either
counts as a lost subscription, the slot map is reloaded and the feed subscribes again on
the shard's new master. A single Redis and Sentinel use plain ``SUBSCRIBE``; through
Sentinel a reconnect finds the new master.

The subscription starts with the first page that follows the feed (a process no
dashboard talks to holds none) and lasts until the process stops. The feed also remembers
the last announced change, for the invalidation lag in /stats.

A client's page follows the same feed, filtered here, server-side: it hears of its own
customer's orders only (``{"orders": [ids]}``, nothing else of the message), and of
nothing at all when a batch touched only other customers' orders or the catalogue (an
order that left the customer, moved or deleted, makes its page ``resync``). Whose
orders a batch touched is asked of PostgreSQL once per batch for all clients
(api.owners), by a task of its own so that a slow database never holds up the operators'
pages; a batch too large to list, a lookup that failed or a client backlog that overflowed
becomes a ``resync`` for the clients, which names no order.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Final

import psycopg
from redis.asyncio import Redis
from redis.exceptions import RedisClusterException, RedisError

from api.owners import OrderOwners
from mescache.redisconn import (
    make_subscriber,
    next_message,
    open_pubsub,
    refresh_topology,
    subscribe,
)

log = logging.getLogger("api.feed")

_QUEUE_SIZE: Final = 32  # events a page may lag behind before it is told to resync
_CLIENT_BACKLOG: Final = 64  # batches awaiting their owners' lookup before clients resync
_READ_WAIT: Final = 5.0  # how long one read waits; also paces the connection health check
_MAX_BACKOFF: Final = 10.0
_ENDED: Final = frozenset({"unsubscribe", "sunsubscribe"})


class SubscriptionEnded(RedisError):
    """The server ended the subscription (a cluster shard failed over or moved)."""


@dataclass(frozen=True, slots=True)
class FeedEvent:
    """One event for the pages: ``change`` (a listener message), ``resync`` or ``closed``."""

    kind: str
    data: dict[str, Any]


RESYNC: Final = FeedEvent("resync", {})
CLOSED: Final = FeedEvent("closed", {})


@dataclass(frozen=True, slots=True)
class LastChange:
    """The latest announced batch, as the listener measured it."""

    lag_ms: float | None
    lsn: str | None
    received_at: float  # Unix seconds, when this process got the message


class Subscription:
    """One page's view of the feed: a bounded queue of events. A client's subscription
    (`customer` set) gets only what concerns that customer."""

    def __init__(self, customer: str | None = None) -> None:
        self.customer = customer
        self._queue: asyncio.Queue[FeedEvent] = asyncio.Queue(_QUEUE_SIZE)

    def push(self, event: FeedEvent) -> None:
        """Queue an event; a full queue collapses into one resync (every event means refetch)."""
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            # Every event only means "refetch": one resync replaces the backlog.
            while not self._queue.empty():
                self._queue.get_nowait()
            self._queue.put_nowait(RESYNC if event is not CLOSED else CLOSED)

    async def next(self) -> FeedEvent:
        """The next event for this page, waiting for one."""
        return await self._queue.get()


class ChangeFeed:
    """Subscribes once to the changes channel and fans its messages out to pages."""

    def __init__(self, redis: Redis, channel: str, owners: OrderOwners | None = None) -> None:
        self.redis = redis
        self.channel = channel
        self.owners = owners  # None: no client may follow this feed
        self.connected = False
        self.last: LastChange | None = None
        self._subscriptions: set[Subscription] = set()
        self._clients: dict[str, set[Subscription]] = {}
        self._for_clients: asyncio.Queue[list[int] | None] = asyncio.Queue(_CLIENT_BACKLOG)
        self._task: asyncio.Task[None] | None = None
        self._client_task: asyncio.Task[None] | None = None
        self._closing = False

    @property
    def pages(self) -> int:
        """How many pages follow the feed now."""
        return len(self._subscriptions)

    def start(self) -> None:
        """Follow the channel from now on (idempotent)."""
        if self._task is None and not self._closing:
            self._task = asyncio.create_task(self._run(), name="change-feed")
        if self._client_task is None and self.owners is not None and not self._closing:
            self._client_task = asyncio.create_task(
                self._tell_clients(self.owners), name="change-feed-clients"
            )

    async def close(self) -> None:
        """Stop following the channel and end every page's stream."""
        self._closing = True
        for task in (self._task, self._client_task):
            if task is None:
                continue
            # redis-py can swallow a cancellation that lands inside a connect: cancel
            # again until the task has really ended.
            while not task.done():
                task.cancel()
                await asyncio.wait({task}, timeout=0.1)
            if not task.cancelled() and task.exception() is not None:
                log.error("change feed failed: %r", task.exception())
        for subscription in self._every_subscription():
            subscription.push(CLOSED)
        await self.redis.aclose()

    @contextlib.asynccontextmanager
    async def subscribe(self, customer: str | None = None) -> AsyncIterator[Subscription]:
        """A page's subscription: every change for an operator's (`customer` None), only
        that customer's orders for a client's."""
        if customer is not None and self.owners is None:
            raise RuntimeError("this feed has no owner lookup: clients cannot follow it")
        self.start()
        subscription = Subscription(customer)
        group = (
            self._subscriptions if customer is None else self._clients.setdefault(customer, set())
        )
        group.add(subscription)
        try:
            yield subscription
        finally:
            group.discard(subscription)
            if customer is not None and not group:
                self._clients.pop(customer, None)

    def _every_subscription(self) -> list[Subscription]:
        clients = [s for group in self._clients.values() for s in group]
        return [*self._subscriptions, *clients]

    def _broadcast(self, event: FeedEvent) -> None:
        """To every page: only events that carry no order (resync, closed) go to clients."""
        targets = self._subscriptions if event.kind == "change" else self._every_subscription()
        for subscription in targets:
            subscription.push(event)

    def _pass_to_clients(self, orders: list[int] | None) -> None:
        if not self._clients:
            return  # nobody to tell: no lookup either
        try:
            self._for_clients.put_nowait(orders)
        except asyncio.QueueFull:
            while not self._for_clients.empty():
                self._for_clients.get_nowait()
            self._for_clients.put_nowait(None)  # the clients resync instead

    async def _tell_clients(self, owners: OrderOwners) -> None:
        """Resolve each batch's orders to their customers and tell each client its own."""
        while True:
            orders = await self._for_clients.get()
            if not self._clients:
                continue
            if orders is None:
                self._to_clients(RESYNC)
                continue
            try:
                owned = await owners.customers_of(orders)
            except (psycopg.Error, OSError) as exc:
                log.warning("could not tell whose orders changed, clients resync: %s", exc)
                self._to_clients(RESYNC)
                continue
            for customer, ids in owned.owned.items():
                event = FeedEvent("change", {"orders": ids})
                for subscription in self._clients.get(customer, ()):
                    subscription.push(event)
            for customer in owned.former:  # an order moved away or deleted: refetch
                for subscription in self._clients.get(customer, ()):
                    subscription.push(RESYNC)

    def _to_clients(self, event: FeedEvent) -> None:
        for group in self._clients.values():
            for subscription in group:
                subscription.push(event)

    async def _run(self) -> None:
        backoff = 0.5
        while not self._closing:
            try:
                await self._follow()
            except (RedisError, RedisClusterException, OSError) as exc:
                if self._closing:
                    return
                if self.connected:
                    log.warning("change feed lost, pages will resync: %s", exc)
                    backoff = 0.5
                else:
                    log.debug("change feed unavailable: %s", exc)
                self.connected = False
                with contextlib.suppress(RedisError, RedisClusterException, OSError):
                    await refresh_topology(self.redis)
            await asyncio.sleep(backoff * random.uniform(0.5, 1.5))
            backoff = min(backoff * 2, _MAX_BACKOFF)

    async def _follow(self) -> None:
        async with open_pubsub(self.redis) as pubsub:
            await subscribe(pubsub, self.channel)
            self.connected = True
            log.info("change feed following channel=%s", self.channel)
            self._broadcast(RESYNC)  # whatever was published while we were away is lost
            while not self._closing:
                message = await next_message(pubsub, _READ_WAIT)
                if message is None:
                    continue
                kind = message["type"]
                kind = kind.decode() if isinstance(kind, bytes) else kind
                if kind in {"message", "smessage"}:
                    self._receive(message["data"])
                elif kind in _ENDED:
                    raise SubscriptionEnded(f"the server ended the subscription ({kind})")

    def _receive(self, raw: bytes) -> None:
        try:
            data = json.loads(raw)
            if not isinstance(data, dict):
                raise TypeError("not an object")
        except (ValueError, TypeError) as exc:
            log.warning("ignoring a malformed change message channel=%s: %s", self.channel, exc)
            return
        lag = data.get("lag_ms")
        lsn = data.get("lsn")
        self.last = LastChange(
            lag_ms=float(lag) if isinstance(lag, int | float) else None,
            lsn=lsn if isinstance(lsn, str) else None,
            received_at=time.time(),
        )
        self._broadcast(FeedEvent("change", data))
        orders = data.get("orders")
        if orders is None:
            self._pass_to_clients(None)
        elif isinstance(orders, list):
            ids = [i for i in orders if isinstance(i, int) and not isinstance(i, bool)]
            if ids:
                self._pass_to_clients(ids)


def change_feed(
    redis_url: str, channel: str, connect_timeout: float, owners: OrderOwners | None = None
) -> ChangeFeed:
    """A feed on a connection of its own: it blocks on reads, so it cannot share the API's
    fail-fast pool."""
    return ChangeFeed(make_subscriber(redis_url, connect_timeout), channel, owners)
