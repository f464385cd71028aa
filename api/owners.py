"""Whose orders an announced batch touched: what lets the change feed tell each client only
about its own customer's orders.

The listener's announcement lists order ids only (cdc_listener.publish). Before a client's
stream hears of an id, the API asks PostgreSQL whose order it is now, once per batch for
all the clients that follow the feed. It also remembers the owner it saw last, so that an
order a DBA moved to another customer, or deleted, is still announced to the customer who
had it (their page drops it); an order never seen before and already gone is announced
to nobody, since nobody can tell whose it was. A client never receives another customer's
id: an id goes to the customers that own or owned it, and to nobody else.

The memory is bounded (least recently used first out); what is forgotten costs only the
former owner's notice of a later move or delete, and pages resync on every reconnect.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from typing import Final

from psycopg.rows import dict_row

from mescache.db import Pool
from mescache.queries import query

# Ids → their current customer; an id absent from the answer has no row now.
Lookup = Callable[[list[int]], Awaitable[dict[int, str]]]

DEFAULT_MEMORY: Final = 100_000  # owners remembered: a few MiB at most


class OrderOwners:
    """Who owns (or last owned) each order, asked of the database per batch."""

    def __init__(self, lookup: Lookup, memory: int = DEFAULT_MEMORY) -> None:
        self._lookup = lookup
        self._memory = memory
        self._seen: OrderedDict[int, str] = OrderedDict()

    async def customers_of(self, order_ids: Iterable[int]) -> dict[str, list[int]]:
        """Each customer with the ids (sorted) among `order_ids` it owns or owned last."""
        ids = sorted(set(order_ids))
        if not ids:
            return {}
        now = await self._lookup(ids)
        told: dict[str, set[int]] = {}
        for order_id in ids:
            before = self._seen.pop(order_id, None)
            current = now.get(order_id)
            for customer in {before, current}:
                if customer is not None:
                    told.setdefault(customer, set()).add(order_id)
            if current is not None:
                self._seen[order_id] = current
        while len(self._seen) > self._memory:
            self._seen.popitem(last=False)
        return {customer: sorted(found) for customer, found in told.items()}


def owner_lookup(pool: Pool) -> Lookup:
    """The lookup against PostgreSQL: one indexed query per batch."""

    async def lookup(order_ids: list[int]) -> dict[int, str]:
        async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(query("customers_of_orders"), {"ids": order_ids})
            return {int(row["id"]): str(row["customer"]) for row in await cur.fetchall()}

    return lookup
