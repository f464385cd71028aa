"""Whose orders an announced batch touched: what lets the change feed tell each client only
about its own customer's orders.

The listener's announcement lists order ids only (cdc_listener.publish). Before a client's
stream hears of an id, the API asks PostgreSQL whose order it is now, once per batch for
all the clients that follow the feed: an id goes to its current owner and to nobody else.

An order a DBA moved to another customer, or deleted, must still leave the page of the
customer who had it. For that the API remembers the owner it saw last, and tells a former
owner only to refetch (a resync, which names no order): the memory can be out of date
(a batch it did not see), so it never decides who receives an id. An order never seen
before and already gone reaches nobody, since nobody can tell whose it was.

The memory is bounded (least recently used first out); what is forgotten costs only the
former owner's notice of a later move or delete, and pages resync on every reconnect.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Final

from psycopg.rows import dict_row

from mescache.db import Pool
from mescache.queries import query

# Ids → their current customer; an id absent from the answer has no row now.
Lookup = Callable[[list[int]], Awaitable[dict[int, str]]]

DEFAULT_MEMORY: Final = 100_000  # owners remembered: a few MiB at most


@dataclass(frozen=True, slots=True)
class Owners:
    """A batch's orders by their current customer (ids sorted), and the customers that had
    one of them before (they refetch: no id is theirs to receive)."""

    owned: dict[str, list[int]]
    former: frozenset[str]


class OrderOwners:
    """Who owns (or last owned) each order, asked of the database per batch."""

    def __init__(self, lookup: Lookup, memory: int = DEFAULT_MEMORY) -> None:
        self._lookup = lookup
        self._memory = memory
        self._seen: OrderedDict[int, str] = OrderedDict()

    async def customers_of(self, order_ids: Iterable[int]) -> Owners:
        """Whose orders among `order_ids` are now, and who had some of them before."""
        ids = sorted(set(order_ids))
        if not ids:
            return Owners({}, frozenset())
        now = await self._lookup(ids)
        owned: dict[str, list[int]] = {}
        former: set[str] = set()
        for order_id in ids:
            before = self._seen.pop(order_id, None)
            current = now.get(order_id)
            if current is not None:
                owned.setdefault(current, []).append(order_id)
                self._seen[order_id] = current
            if before is not None and before != current:
                former.add(before)
        while len(self._seen) > self._memory:
            self._seen.popitem(last=False)
        return Owners(owned, frozenset(former))


def owner_lookup(pool: Pool) -> Lookup:
    """The lookup against PostgreSQL: one indexed query per batch."""

    async def lookup(order_ids: list[int]) -> dict[int, str]:
        async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(query("customers_of_orders"), {"ids": order_ids})
            return {int(row["id"]): str(row["customer"]) for row in await cur.fetchall()}

    return lookup
