"""The change feed's fan-out: operators get every message; a client gets only its own
customer's ids, nothing for other customers' orders, and a resync (which names no order)
whenever it cannot be told exactly."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import psycopg
import pytest
from redis.asyncio import Redis

from api.feed import RESYNC, ChangeFeed, FeedEvent, Subscription
from api.owners import OrderOwners


class Table:
    def __init__(self, rows: dict[int, str]) -> None:
        self.rows = rows
        self.broken = False

    async def lookup(self, ids: list[int]) -> dict[int, str]:
        if self.broken:
            raise psycopg.OperationalError("connection refused")
        return {i: self.rows[i] for i in ids if i in self.rows}


@pytest.fixture
async def feed() -> AsyncIterator[tuple[ChangeFeed, Table]]:
    table = Table({1: "Anna", 2: "Boris", 3: "Anna"})
    # The Redis client is never used: messages are handed to the feed as if received.
    made = ChangeFeed(Redis(port=1), "changes", OrderOwners(table.lookup))
    task = asyncio.create_task(made._tell_clients(made.owners))  # type: ignore[arg-type]
    yield made, table
    task.cancel()


def follow(feed: ChangeFeed, customer: str | None) -> Subscription:
    subscription = Subscription(customer)
    if customer is None:
        feed._subscriptions.add(subscription)
    else:
        feed._clients.setdefault(customer, set()).add(subscription)
    return subscription


def announce(feed: ChangeFeed, message: dict[str, object]) -> None:
    feed._receive(json.dumps(message).encode())


async def next_event(subscription: Subscription) -> FeedEvent:
    async with asyncio.timeout(5):
        return await subscription.next()


def pending(subscription: Subscription) -> int:
    return subscription._queue.qsize()


async def test_each_client_hears_of_its_own_orders_only(feed: tuple[ChangeFeed, Table]) -> None:
    changes, _ = feed
    operator, anna, boris = follow(changes, None), follow(changes, "Anna"), follow(changes, "Boris")
    message = {"orders": [1, 2, 3], "catalogue": False, "commits": 1, "lsn": "0/1", "lag_ms": 1}
    announce(changes, message)
    assert await next_event(operator) == FeedEvent("change", message)
    assert await next_event(anna) == FeedEvent("change", {"orders": [1, 3]})
    assert await next_event(boris) == FeedEvent("change", {"orders": [2]})


async def test_other_customers_orders_and_the_catalogue_send_a_client_nothing(
    feed: tuple[ChangeFeed, Table],
) -> None:
    changes, _ = feed
    anna = follow(changes, "Anna")
    announce(changes, {"orders": [2], "catalogue": False})
    announce(changes, {"orders": [], "catalogue": True})
    announce(changes, {"orders": [3], "catalogue": False})  # the fence: Anna's own
    assert await next_event(anna) == FeedEvent("change", {"orders": [3]})
    assert pending(anna) == 0


async def test_a_batch_too_large_to_list_or_a_failed_lookup_is_a_resync(
    feed: tuple[ChangeFeed, Table],
) -> None:
    changes, table = feed
    anna = follow(changes, "Anna")
    announce(changes, {"orders": None})
    assert await next_event(anna) is RESYNC
    table.broken = True
    announce(changes, {"orders": [1]})
    assert await next_event(anna) is RESYNC


async def test_a_client_backlog_that_overflows_becomes_one_resync(
    feed: tuple[ChangeFeed, Table],
) -> None:
    changes, _ = feed
    anna = follow(changes, "Anna")
    for _ in range(200):  # faster than the lookup task can take them
        announce(changes, {"orders": [2]})
    announce(changes, {"orders": [1]})
    events = [await next_event(anna)]
    while pending(anna):
        events.append(await next_event(anna))
    assert RESYNC in events
    assert all(e is RESYNC or e == FeedEvent("change", {"orders": [1]}) for e in events)
