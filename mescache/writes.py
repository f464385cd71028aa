"""The writes to PostgreSQL, shared by the API and the write-behind writer: placing an
order and moving its status. The cache is never touched here: the listener sees each
commit and does that.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, cast

from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from mescache import reads
from mescache.orders import ALLOWED_FROM, Order
from mescache.pricing import PriceRequest, quote
from mescache.queries import query

Connection = AsyncConnection[Any]


async def place_order(
    conn: Connection,
    customer: str,
    request: PriceRequest,
    quantity: int,
    params: dict[str, Any],
) -> Order:
    """Insert a new order priced from the catalogue as this transaction sees it (call it
    inside one). ModelNotFound, MaterialNotFound or another PricingError when it cannot be
    priced."""
    unit: Decimal = quote(request, await reads.price_inputs(conn, request))["total"]
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            query("insert_order"),
            {
                "customer": customer,
                "model_id": request.model_id,
                "material_id": request.material_id,
                "quantity": quantity,
                "params": Jsonb(params),
                "total_price": unit * quantity,
            },
        )
        return cast(Order, await cur.fetchone())


async def move_status(conn: Connection, order_id: int, target: str) -> Order | None:
    """Move an order to `target` if that is legal from its current status (checked in the
    UPDATE itself, so two movers racing on one order cannot both win); None if it is not,
    or there is no such order (`status_of` tells which)."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            query("move_status"),
            {"id": order_id, "to": target, "allowed_from": list(ALLOWED_FROM[target])},
        )
        return cast(Order | None, await cur.fetchone())


async def status_of(conn: Connection, order_id: int) -> str | None:
    """An order's status now; None if there is no such order."""
    cur = await conn.execute(query("status_of"), {"id": order_id})
    row = await cur.fetchone()
    return None if row is None else str(row[0])
