"""The order as the API serves it and as the cache stores it, and the status machine.

Cached values are JSON bytes made by one serializer (`dump_orders`), whether the rows came
from a SELECT or from a row image in the change stream, so a refresh and a fill agree
byte for byte.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, Final, Literal

from pydantic import TypeAdapter
from typing_extensions import TypedDict

Status = Literal["new", "in_progress", "done", "cancelled"]
STATUSES: Final[tuple[Status, ...]] = ("new", "in_progress", "done", "cancelled")
ACTIVE: Final[frozenset[str]] = frozenset({"new", "in_progress"})

# Legal moves: new -> in_progress -> done, and new | in_progress -> cancelled.
ALLOWED_FROM: Final[dict[str, tuple[str, ...]]] = {
    "in_progress": ("new",),
    "done": ("in_progress",),
    "cancelled": ("new", "in_progress"),
    "new": (),
}


class Order(TypedDict):
    """One order, as every endpoint returns it."""

    id: int
    customer: str
    model_id: int
    material_id: int
    quantity: int
    params: dict[str, Any]
    total_price: Decimal
    status: Status
    created_at: datetime
    updated_at: datetime


ORDER_COLUMNS: Final[tuple[str, ...]] = tuple(Order.__annotations__)


class OrderList(TypedDict):
    """A list of orders (dashboard, newest)."""

    items: list[Order]


class OrderPage(TypedDict):
    """One page of a status; pass next_cursor as ?cursor= to get the next page."""

    items: list[Order]
    next_cursor: int | None


_ORDER = TypeAdapter(Order)
_LIST = TypeAdapter(OrderList)
_PAGE = TypeAdapter(OrderPage)


def dump_order(row: Order) -> bytes:
    """One order as the cached JSON bytes."""
    return _ORDER.dump_json(row)


def dump_list(rows: list[Order]) -> bytes:
    """A list of orders as the cached JSON bytes (`items`)."""
    return _LIST.dump_json({"items": rows})


def dump_page(rows: list[Order], limit: int) -> bytes:
    """One page of orders with `next_cursor` (None on the last page)."""
    next_cursor = rows[-1]["id"] if len(rows) == limit else None
    return _PAGE.dump_json({"items": rows, "next_cursor": next_cursor})


def move_is_legal(current: str, target: str) -> bool:
    """Whether an order may move from `current` to `target`."""
    return current in ALLOWED_FROM.get(target, ())
