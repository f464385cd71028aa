"""The cached reads as PostgreSQL queries that return the cached bytes.

The API fills the cache with these on a miss; the listener calls the same ones when it
refreshes a key, so both write identical values.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

from psycopg import AsyncConnection
from psycopg.rows import dict_row
from pydantic import TypeAdapter
from typing_extensions import TypedDict

from mescache.db import Pool
from mescache.errors import MaterialNotFound, ModelNotFound, NoPricingRule, OrderNotFound
from mescache.orders import Order, dump_list, dump_order, dump_page
from mescache.pricing import PriceInputs, PriceRequest, PricingRule, dump_quote, quote
from mescache.queries import query


async def _rows(pool: Pool, name: str, params: dict[str, object]) -> list[Order]:
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query(name), params)
        return cast(list[Order], await cur.fetchall())


async def order_json(pool: Pool, order_id: int) -> bytes:
    """One order's JSON; OrderNotFound if there is none."""
    rows = await _rows(pool, "order_by_id", {"id": order_id})
    if not rows:
        raise OrderNotFound(order_id)
    return dump_order(rows[0])


async def model_ids(pool: Pool) -> list[int]:
    """Every model's id (the listener moves price families model by model)."""
    async with pool.connection() as conn:
        rows = await (await conn.execute(query("model_ids"))).fetchall()
    return [int(row[0]) for row in rows]


async def dashboard_json(pool: Pool) -> bytes:
    """The dashboard's JSON: every new and in-progress order."""
    return dump_list(await _rows(pool, "dashboard", {}))


async def newest_json(pool: Pool, limit: int) -> bytes:
    """The newest `limit` new orders as JSON."""
    return dump_list(await _rows(pool, "newest_new", {"limit": limit}))


async def status_page_json(pool: Pool, status: str, cursor: int | None, limit: int) -> bytes:
    """One page of one status's orders as JSON, below `cursor`."""
    rows = await _rows(pool, "status_page", {"status": status, "cursor": cursor, "limit": limit})
    return dump_page(rows, limit)


async def customer_page_json(pool: Pool, customer: str, cursor: int | None, limit: int) -> bytes:
    """One page of a customer's orders, newest first."""
    params: dict[str, object] = {"customer": customer, "cursor": cursor, "limit": limit}
    return dump_page(await _rows(pool, "customer_page", params), limit)


async def recent_customers(pool: Pool, limit: int) -> list[str]:
    """The customers who placed the latest orders, latest first (for warm-up)."""
    async with pool.connection() as conn:
        rows = await (await conn.execute(query("recent_customers"), {"limit": limit})).fetchall()
    return [str(row[0]) for row in rows]


class ModelName(TypedDict):
    """A model's names in the catalogue view."""

    id: int
    sku: str
    name: str
    kind: str


class MaterialName(TypedDict):
    """A material's names in the catalogue view."""

    id: int
    code: str
    name: str


class CatalogueNames(TypedDict):
    """What every model and material is called (pages show names, not ids)."""

    models: list[ModelName]
    materials: list[MaterialName]


_NAMES = TypeAdapter(CatalogueNames)


async def catalogue_json(pool: Pool) -> bytes:
    """The names of every model and material, in id order."""
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query("catalogue_models"))
        models = cast(list[ModelName], await cur.fetchall())
        await cur.execute(query("catalogue_materials"))
        materials = cast(list[MaterialName], await cur.fetchall())
    return _NAMES.dump_json({"models": models, "materials": materials})


async def price_inputs(conn: AsyncConnection[Any], request: PriceRequest) -> PriceInputs:
    """The rows a price is computed from; ModelNotFound, MaterialNotFound or NoPricingRule
    when one is missing."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            query("price_inputs"),
            {"model_id": request.model_id, "material_id": request.material_id},
        )
        row = await cur.fetchone()
    if row is None or not row["has_model"]:
        raise ModelNotFound(f"model {request.model_id} not found")
    if not row["has_material"]:
        raise MaterialNotFound(f"material {request.material_id} not found")
    if row["rule_kind"] is None:
        raise NoPricingRule(f"no pricing rule for {row['kind']!r} models and no default rule")
    rule = PricingRule(
        kind=row["rule_kind"],
        labour=row["labour"],
        finishing_per_cm2=row["finishing_per_cm2"],
        casting_loss=row["casting_loss"],
        minimum_price=row["minimum_price"],
        size_base=row["size_base"],
        size_min=row["size_min"],
        size_max=row["size_max"],
        size_step=row["size_step"],
    )
    return PriceInputs(
        kind=row["kind"],
        design_price=row["base_price"],
        volume_cm3=row["volume_cm3"],
        mesh=row["mesh"],
        density_g_cm3=row["density_g_cm3"],
        price_per_gram=row["price_per_gram"],
        rule=rule,
    )


async def price_json(pool: Pool, request: PriceRequest) -> bytes:
    """A computed price; the mesh work runs in a thread so the event loop keeps serving."""
    async with pool.connection() as conn:
        inputs = await price_inputs(conn, request)
    return dump_quote(await asyncio.to_thread(quote, request, inputs))
