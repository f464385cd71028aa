"""Whose orders a batch touched: an id goes to its current owner and to nobody else; a
customer who had one of them before is only told to refetch."""

from __future__ import annotations

import pytest

from api.owners import OrderOwners, Owners


class Table:
    """The orders table as the lookup sees it: id -> customer, and how often it was asked."""

    def __init__(self, rows: dict[int, str]) -> None:
        self.rows = rows
        self.asked: list[list[int]] = []

    async def lookup(self, ids: list[int]) -> dict[int, str]:
        self.asked.append(ids)
        return {i: self.rows[i] for i in ids if i in self.rows}


async def test_each_customer_gets_only_its_own_ids() -> None:
    table = Table({1: "Anna", 2: "Boris", 3: "Anna"})
    owners = OrderOwners(table.lookup)
    told = await owners.customers_of([3, 2, 1, 1])
    assert told == Owners({"Anna": [1, 3], "Boris": [2]}, frozenset())
    assert table.asked == [[1, 2, 3]]  # once per batch, each id once


async def test_a_moved_or_deleted_order_makes_its_former_owner_refetch() -> None:
    table = Table({1: "Anna", 2: "Anna"})
    owners = OrderOwners(table.lookup)
    await owners.customers_of([1, 2])
    table.rows[1] = "Boris"  # a DBA moved order 1 to another customer
    del table.rows[2]  # and deleted order 2
    assert await owners.customers_of([1, 2]) == Owners({"Boris": [1]}, frozenset({"Anna"}))
    # Told once: from now on order 1 is Boris's alone, and order 2 nobody's.
    assert await owners.customers_of([1, 2]) == Owners({"Boris": [1]}, frozenset())


async def test_an_out_of_date_memory_never_hands_out_an_id() -> None:
    table = Table({1: "Anna"})
    owners = OrderOwners(table.lookup)
    await owners.customers_of([1])
    table.rows[1] = "Boris"  # moved in a batch this process never saw
    told = await owners.customers_of([1])
    assert told.owned == {"Boris": [1]}  # Anna at most refetches; the id is Boris's only
    assert "Anna" not in told.owned


async def test_an_order_never_seen_and_gone_goes_to_nobody() -> None:
    owners = OrderOwners(Table({}).lookup)
    assert await owners.customers_of([99]) == Owners({}, frozenset())
    assert await owners.customers_of([]) == Owners({}, frozenset())


async def test_the_memory_is_bounded() -> None:
    table = Table({i: f"c{i}" for i in range(10)})
    owners = OrderOwners(table.lookup, memory=3)
    await owners.customers_of(range(10))
    for i in range(10):
        del table.rows[i]
    # Only the three remembered last can still be told of their deletion.
    assert await owners.customers_of(range(10)) == Owners({}, frozenset({"c7", "c8", "c9"}))


async def test_a_failed_lookup_raises_and_forgets_nothing() -> None:
    table = Table({1: "Anna"})
    owners = OrderOwners(table.lookup)
    await owners.customers_of([1])

    async def broken(ids: list[int]) -> dict[int, str]:
        raise OSError("database gone")

    owners._lookup = broken  # the failure the feed turns into a resync
    with pytest.raises(OSError, match="database gone"):
        await owners.customers_of([1])
    owners._lookup = table.lookup
    del table.rows[1]
    assert await owners.customers_of([1]) == Owners({}, frozenset({"Anna"}))
