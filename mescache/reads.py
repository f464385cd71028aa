"""The cached reads as PostgreSQL queries that return the cached bytes.

The API fills the cache with these on a miss; the listener calls the same ones when it
refreshes a key, so both write identical values.
"""

from __future__ import annotations

from typing import cast

from psycopg.rows import dict_row

from mescache.db import Pool
from mescache.errors import OrderNotFound
from mescache.orders import Order, dump_list, dump_order, dump_page
from mescache.queries import query


async def _rows(pool: Pool, name: str, params: dict[str, object]) -> list[Order]:
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query(name), params)
        return cast(list[Order], await cur.fetchall())


async def order_json(pool: Pool, order_id: int) -> bytes:
    rows = await _rows(pool, "order_by_id", {"id": order_id})
    if not rows:
        raise OrderNotFound(order_id)
    return dump_order(rows[0])


async def dashboard_json(pool: Pool) -> bytes:
    return dump_list(await _rows(pool, "dashboard", {}))


async def newest_json(pool: Pool, limit: int) -> bytes:
    return dump_list(await _rows(pool, "newest_new", {"limit": limit}))


async def status_page_json(pool: Pool, status: str, cursor: int | None, limit: int) -> bytes:
    rows = await _rows(pool, "status_page", {"status": status, "cursor": cursor, "limit": limit})
    return dump_page(rows, limit)
