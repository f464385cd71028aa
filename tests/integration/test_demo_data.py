"""The demo data agrees with the product's own rules: every demo order's total is what the
API quotes for its model, material and size, times its quantity, and only sized kinds carry
a size (the API refuses one for the others)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import httpx
import psycopg


async def test_every_demo_orders_total_is_the_apis_price_times_the_quantity(
    client: httpx.AsyncClient, database_url: str
) -> None:
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        cur = await conn.execute(
            "SELECT id, model_id, material_id, quantity, params, total_price FROM orders"
            " WHERE customer LIKE 'client-%%' ORDER BY id"
        )
        orders: list[tuple[Any, ...]] = await cur.fetchall()
    assert len(orders) >= 100
    quoted: dict[tuple[int, int, Any], Decimal] = {}
    wrong = []
    sized = 0
    for order_id, model_id, material_id, quantity, params, total in orders:
        size = params.get("size")
        sized += size is not None
        key = (model_id, material_id, size)
        if key not in quoted:
            query = {"material": material_id} | ({} if size is None else {"size": size})
            resp = await client.get(f"/models/{model_id}/price", params=query)
            assert resp.status_code == 200, (order_id, params, resp.text)
            quoted[key] = Decimal(str(resp.json()["total"]))
        if quoted[key] * quantity != total:
            wrong.append((order_id, quoted[key], quantity, total))
    assert wrong == []
    assert 0 < sized < len(orders)  # rings carry their size, the other kinds none
