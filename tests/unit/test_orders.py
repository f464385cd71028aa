"""The status machine and the one serializer every cached value goes through."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from mescache.orders import STATUSES, Order, dump_list, dump_order, dump_page, move_is_legal
from mescache.queries import parse_blocks, query

LEGAL = {
    ("new", "in_progress"),
    ("in_progress", "done"),
    ("new", "cancelled"),
    ("in_progress", "cancelled"),
}


@pytest.mark.parametrize("current", STATUSES)
@pytest.mark.parametrize("target", STATUSES)
def test_only_the_documented_moves_are_legal(current: str, target: str) -> None:
    assert move_is_legal(current, target) == ((current, target) in LEGAL)


def _order(order_id: int) -> Order:
    at = datetime(2026, 2, 14, 9, 30, tzinfo=UTC)
    return Order(
        id=order_id,
        customer="c",
        model_id=1,
        material_id=2,
        quantity=1,
        params={"size": 16},
        total_price=Decimal("120.50"),
        status="new",
        created_at=at,
        updated_at=at,
    )


def test_serialized_orders_carry_id_status_and_updated_at() -> None:
    one = json.loads(dump_order(_order(5)))
    assert one["id"] == 5
    assert one["status"] == "new"
    assert one["updated_at"] == "2026-02-14T09:30:00Z"
    assert one["total_price"] == "120.50"
    assert json.loads(dump_list([_order(1)]))["items"][0]["id"] == 1


def test_a_full_page_points_at_the_next_one() -> None:
    assert json.loads(dump_page([_order(9), _order(7)], limit=2))["next_cursor"] == 7
    assert json.loads(dump_page([_order(9)], limit=2))["next_cursor"] is None


def test_named_queries_parse() -> None:
    blocks = parse_blocks("-- header\n-- name: a\nSELECT 1;\n\n-- name: b\nSELECT 2;\n")
    assert blocks == {"a": "SELECT 1;", "b": "SELECT 2;"}
    assert "FROM orders" in query("dashboard").as_string()
