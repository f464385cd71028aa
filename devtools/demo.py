"""Loads realistic demo data: a dozen materials, a few hundred 3D models with their
meshes (devtools.shapes) and 100,000 orders, about 1% of them new or in progress (the
operators' dashboard).

Deterministic for a given seed. Orders are made in SQL (generate_series) so it takes
seconds; meshes are generated in Python, a few milliseconds each.

Every order's total is what `POST /orders` would charge: the price of its model, material
and size by the rule the API applies (mescache.pricing), times the quantity. Only sized
kinds (rings) carry a size, one of DEMO_SIZES; the unit prices are computed in Python once
per model and size (the mesh is measured once, then priced in every material) and joined
in.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import random
import sys
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import psycopg

from devtools import shapes
from devtools.dev_sql import dev_query as query
from mescache import mesh, reads
from mescache.errors import BadPriceParams
from mescache.pricing import PriceInputs, PriceRequest, measure, quote, size_delta_mm

MATERIALS: list[tuple[str, str, float, float]] = [
    ("gold-585", "Gold 585 (14k)", 13.0, 62.00),
    ("gold-750", "Gold 750 (18k)", 15.5, 79.00),
    ("white-gold-585", "White gold 585", 13.2, 64.00),
    ("rose-gold-585", "Rose gold 585", 13.1, 63.00),
    ("platinum-950", "Platinum 950", 20.7, 41.00),
    ("silver-925", "Sterling silver 925", 10.4, 1.10),
    ("palladium-500", "Palladium 500", 11.4, 38.00),
    ("bronze", "Jewellery bronze", 8.8, 0.15),
    ("brass", "Brass", 8.5, 0.10),
    ("castable-resin", "Castable resin (wax print)", 1.1, 0.60),
    ("titanium", "Titanium grade 2", 4.5, 0.90),
    ("steel-316l", "Steel 316L", 8.0, 0.20),
]

KINDS = ["ring", "wedding ring", "pendant", "earring", "bracelet link", "brooch"]
RING_INNER_DIAMETER = 17.0  # mm: the size_base of the ring rules in 004_pricing.sql
# Inner diameters (mm) demo ring orders ask for; each must fit the ring rules' range.
DEMO_SIZES = (Decimal(15), Decimal(16), Decimal(17), Decimal(18), Decimal(19), Decimal(20))

# (model id, material id, size or None, index of the size among the model's, sizes, unit)
PriceRow = tuple[int, int, Decimal | None, int, int, Decimal]


def demo_models(count: int, seed: float) -> list[tuple[str, str, str, Decimal, Decimal, bytes]]:
    """(sku, name, kind, volume_cm3, base_price, mesh) of `count` procedural models."""
    rng = random.Random(seed)
    rows = []
    for i in range(1, count + 1):
        kind = KINDS[i % len(KINDS)]
        shape = shapes.demo_shape(kind, rng, RING_INNER_DIAMETER)
        stored = mesh.encode(shape)
        # the volume column agrees with the stored (quantised) geometry
        volume = mesh.measure(mesh.decode(stored)).volume_mm3 / 1000
        rows.append(
            (
                f"M-{i:04d}",
                f"{kind.title()} #{i}",
                kind,
                Decimal(f"{max(volume, 0.001):.3f}"),
                Decimal(f"{20 + rng.random() * 380:.2f}"),
                stored,
            )
        )
    return rows


async def unit_prices(conninfo: str) -> list[PriceRow]:
    """The price of every model in every material at each demo size its kind takes."""
    rows: list[PriceRow] = []
    async with await psycopg.AsyncConnection.connect(conninfo) as conn:
        cur = await conn.execute(query("demo_materials"))
        materials = await cur.fetchall()
        cur = await conn.execute(query("demo_model_ids"))
        models = [row[0] for row in await cur.fetchall()]
        if not materials:
            return rows
        for model_id in models:
            base = await reads.price_inputs(conn, PriceRequest(model_id, materials[0][0]))
            sizes: list[Decimal | None] = [None]
            if base.rule.size_base is not None:
                sizes = [size for size in DEMO_SIZES if _fits(base, size)] or [None]
            for index, size in enumerate(sizes):
                measured = measure(base, size)  # the costly part, once for all materials
                for material_id, density, per_gram in materials:
                    inputs = dataclasses.replace(
                        base, density_g_cm3=density, price_per_gram=per_gram
                    )
                    request = PriceRequest(model_id, material_id, size)
                    unit = quote(request, inputs, measured)["total"]
                    rows.append((model_id, material_id, size, index, len(sizes), unit))
    return rows


def _fits(inputs: PriceInputs, size: Decimal) -> bool:
    try:
        size_delta_mm(inputs.rule, inputs.kind, size)
    except BadPriceParams:
        return False
    return True


def load_demo_data(
    conninfo: str, orders: int = 100_000, seed: float = 0.42, models: int = 300
) -> None:
    """Replace the catalogue and orders with demo data (a fresh database is expected)."""
    with psycopg.connect(conninfo) as conn:
        conn.execute(query("demo_seed"), {"seed": seed})
        with conn.cursor() as cur:
            cur.executemany(query("demo_material"), MATERIALS)
            cur.executemany(query("demo_model"), demo_models(models, seed))
        conn.commit()  # the catalogue, so the prices can be read on another connection
        # The API's own price reads are async: run them on a thread of their own, which
        # works whether or not the caller runs an event loop (the soak does).
        with ThreadPoolExecutor(1) as pool:
            prices = pool.submit(asyncio.run, unit_prices(conninfo)).result()
        conn.execute(query("demo_prices_table"))
        with conn.cursor() as cur, cur.copy(query("demo_prices_copy")) as copy:
            for row in prices:
                copy.write_row(row)
        conn.execute(query("demo_orders"), {"n": orders})
        conn.execute(query("demo_analyze"))


def main(argv: list[str] | None = None) -> int:
    """`python -m devtools.demo DATABASE_URL`: load the demo data; the exit code."""
    parser = argparse.ArgumentParser(description="Load the demo catalogue and orders.")
    parser.add_argument("database_url", help="PostgreSQL connection string")
    parser.add_argument("--orders", type=int, default=100_000, help="how many orders")
    parser.add_argument("--models", type=int, default=300, help="how many 3D models")
    args = parser.parse_args(argv)
    if args.orders < 0:
        parser.error("--orders must not be negative")
    if args.models < 1:
        parser.error("--models must be at least 1")
    try:
        load_demo_data(args.database_url, args.orders, models=args.models)
    except psycopg.Error as exc:
        print(f"demo-data: {exc}", file=sys.stderr)
        return 1
    print(f"demo-data: loaded {args.orders} orders")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
