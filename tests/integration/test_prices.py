"""Prices: computed from the model's mesh, the material and the pricing rules, cached per
(model, material, parameters), and invalidated exactly by the listener whoever changes the
catalogue, in both listener modes."""

from __future__ import annotations

from decimal import Decimal

import httpx
import psycopg
import pytest
import redis.asyncio

from tests.integration.conftest import CustomerClient
from tests.integration.listener_fixtures import InProcessListener, eventually
from tests.integration.test_listener import (
    dba,
    gone,
    listener,
)

__all__ = ["listener"]  # the fixture, in both modes

# In the demo catalogue model i has kind KINDS[i % 6]: 1 and 7 are wedding rings, 2 a
# pendant, 3 an earring, 6 a ring.
WEDDING_RING, PENDANT, EARRING = 1, 2, 3


async def price(
    client: httpx.AsyncClient, model: int, material: int, size: str | None = None
) -> httpx.Response:
    params: dict[str, str | int] = {"material": material}
    if size is not None:
        params["size"] = size
    return await client.get(f"/models/{model}/price", params=params)


async def test_a_price_is_computed_then_served_from_the_cache(
    client: httpx.AsyncClient, redis_client: redis.asyncio.Redis, database_url: str
) -> None:
    first = await price(client, WEDDING_RING, 1, "17")
    assert first.status_code == 200, first.text
    assert first.headers["x-cache"] == "miss"
    body = first.json()
    assert body["model_id"] == WEDDING_RING
    assert body["kind"] == "wedding ring"
    assert Decimal(body["total"]) == sum(
        Decimal(body[part]) for part in ("metal", "finishing", "labour", "design")
    )
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT volume_cm3 FROM models WHERE id = 1").fetchone()
    assert row is not None
    volume = row[0]
    assert Decimal(body["volume_cm3"]) == pytest.approx(volume, abs=Decimal("0.002"))

    for spelling in ("17", "17.0", "17.00"):  # one canonical key
        again = await price(client, WEDDING_RING, 1, spelling)
        assert again.headers["x-cache"] == "hit"
        assert again.content == first.content
    key = "price:{model:1}:1:size=17"
    assert await redis_client.get(key) == first.content
    assert 3590 < await redis_client.ttl(key) <= 3600
    for family in ("price:{model:1}", "price:{model:1}:material:1", "price:{model:1}:all"):
        assert await redis_client.sismember(family, key)

    async def counted() -> bool:  # counts leave the read path, a moment later
        return await redis_client.zscore("stats:price-requests", "1:1:size=17") == 4

    await eventually(counted, "four requests counted")

    bigger = await price(client, WEDDING_RING, 1, "20.5")
    assert Decimal(bigger.json()["total"]) > Decimal(body["total"])
    plain = await price(client, PENDANT, 1)
    assert plain.status_code == 200
    assert await redis_client.exists("price:{model:2}:1:size=base")


async def test_operators_and_clients_read_prices_anonymous_callers_do_not(
    client: httpx.AsyncClient,
    anonymous_client: httpx.AsyncClient,
    customer_client: CustomerClient,
) -> None:
    operator = await price(client, WEDDING_RING, 1, "17")
    as_client = await (await customer_client("Anna K.")).get(
        "/models/1/price", params={"material": 1, "size": 17}
    )
    assert as_client.status_code == 200
    assert as_client.content == operator.content
    anonymous = await anonymous_client.get("/models/1/price", params={"material": 1})
    assert anonymous.status_code == 401


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/models/999999/price?material=1", (404, "model 999999 not found")),
        ("/models/1/price?material=999999", (404, "material 999999 not found")),
        ("/models/1/price?material=1&size=30", (422, "size 30 does not fit wedding rings")),
        ("/models/1/price?material=1&size=17.3", (422, "in steps of 0.5")),
        ("/models/2/price?material=1&size=17", (422, "pendants have no size")),
    ],
)
async def test_unknown_entries_are_404_and_bad_sizes_422_with_a_message(
    client: httpx.AsyncClient,
    redis_client: redis.asyncio.Redis,
    path: str,
    expected: tuple[int, str],
) -> None:
    for _ in range(2):  # a failed fill hands its lease back: no second reader waits on it
        resp = await client.get(path)
        assert resp.status_code == expected[0], resp.text
        assert expected[1] in resp.json()["detail"]
    # nothing cached: at most the fences the failed fill read, which lapse within seconds
    # (a request for something that does not exist leaves nothing behind for long)
    left = [k async for k in redis_client.scan_iter("price:*")]
    assert all(k.endswith(b"#fence") for k in left), left
    for name in left:
        assert 0 < await redis_client.pttl(name) <= 5000
    assert not await redis_client.exists("stats:price-requests")  # nothing that exists


@pytest.mark.parametrize(
    "query",
    [
        {},
        {"material": "gold"},
        {"material": 1, "size": "abc"},
        {"material": 1, "size": "-1"},
        {"material": 1, "size": "nan"},
        {"material": 2**63},
    ],
)
async def test_malformed_parameters_are_422(
    client: httpx.AsyncClient, query: dict[str, str | int]
) -> None:
    resp = await client.get("/models/1/price", params=query)
    assert resp.status_code == 422, resp.text
    assert resp.json()["detail"]


async def test_an_orders_total_is_its_price_times_the_quantity(client: httpx.AsyncClient) -> None:
    unit = Decimal((await price(client, WEDDING_RING, 2, "18.5")).json()["total"])
    order = {
        "customer": "anna",
        "model_id": WEDDING_RING,
        "material_id": 2,
        "quantity": 3,
        "params": {"size": 18.5, "engraving": "A+M"},
    }
    placed = await client.post("/orders", json=order)
    assert placed.status_code == 201, placed.text
    assert Decimal(placed.json()["total_price"]) == unit * 3
    bad = await client.post("/orders", json={**order, "params": {"size": 40}})
    assert bad.status_code == 422
    assert "does not fit wedding rings" in bad.json()["detail"]


PRICES = {
    (WEDDING_RING, 1, "17"): "price:{model:1}:1:size=17",
    (WEDDING_RING, 2, "17"): "price:{model:1}:2:size=17",
    (PENDANT, 1, None): "price:{model:2}:1:size=base",
    (EARRING, 2, None): "price:{model:3}:2:size=base",
    (EARRING, 3, None): "price:{model:3}:3:size=base",
}


async def cache_prices(client: httpx.AsyncClient) -> dict[str, bytes]:
    bodies = {}
    for (model, material, size), key in PRICES.items():
        resp = await price(client, model, material, size)
        assert resp.status_code == 200, resp.text
        bodies[key] = resp.content
    return bodies


async def kept(r: redis.asyncio.Redis, bodies: dict[str, bytes], *keys: str) -> None:
    for key in keys:
        assert await r.get(key) == bodies[key], f"{key} should not have been touched"


async def test_a_dba_changing_a_model_invalidates_exactly_its_prices(
    listener: InProcessListener,
    client: httpx.AsyncClient,
    redis_client: redis.asyncio.Redis,
    database_url: str,
) -> None:
    bodies = await cache_prices(client)
    await client.get("/orders/dashboard")
    dba(database_url, "UPDATE models SET base_price = base_price + 10 WHERE id = 1")
    await gone(redis_client, "price:{model:1}:1:size=17", "price:{model:1}:2:size=17")
    await kept(
        redis_client,
        bodies,
        "price:{model:2}:1:size=base",
        "price:{model:3}:2:size=base",
        "price:{model:3}:3:size=base",
    )
    assert await redis_client.exists("orders:{dashboard}")
    old = Decimal(httpx.Response(200, content=bodies["price:{model:1}:1:size=17"]).json()["total"])
    fresh = await price(client, WEDDING_RING, 1, "17")
    assert Decimal(fresh.json()["design"]) - Decimal(
        httpx.Response(200, content=bodies["price:{model:1}:1:size=17"]).json()["design"]
    ) == Decimal(10)
    assert Decimal(fresh.json()["total"]) == old + 10


async def test_a_dba_repricing_a_material_invalidates_exactly_its_prices(
    listener: InProcessListener,
    client: httpx.AsyncClient,
    redis_client: redis.asyncio.Redis,
    database_url: str,
) -> None:
    bodies = await cache_prices(client)
    # a rename changes no price: nothing is invalidated ...
    dba(database_url, "UPDATE materials SET name = 'Gold 585 (red)' WHERE id = 2")
    # ... which we know once a later change has been applied (changes apply in order)
    dba(database_url, "UPDATE materials SET price_per_gram = price_per_gram * 2 WHERE id = 3")
    await gone(redis_client, "price:{model:3}:3:size=base")
    await kept(redis_client, bodies, "price:{model:1}:2:size=17", "price:{model:3}:2:size=base")

    dba(database_url, "UPDATE materials SET price_per_gram = price_per_gram + 1 WHERE id = 2")
    await gone(redis_client, "price:{model:1}:2:size=17", "price:{model:3}:2:size=base")
    await kept(redis_client, bodies, "price:{model:1}:1:size=17", "price:{model:2}:1:size=base")
    fresh = await price(client, EARRING, 2)
    assert fresh.headers["x-cache"] == "miss"
    assert Decimal(fresh.json()["metal"]) > Decimal(
        httpx.Response(200, content=bodies["price:{model:3}:2:size=base"]).json()["metal"]
    )


async def test_a_dba_changing_a_pricing_rule_invalidates_every_price_and_nothing_else(
    listener: InProcessListener,
    client: httpx.AsyncClient,
    redis_client: redis.asyncio.Redis,
    database_url: str,
) -> None:
    await cache_prices(client)
    await client.get("/orders/dashboard")
    await client.get("/orders/1")
    dba(database_url, "UPDATE pricing_rules SET labour = labour + 5 WHERE kind = 'earring'")
    await gone(redis_client, *PRICES.values())
    assert await redis_client.exists("orders:{dashboard}", "order:{1}") == 2
    fresh = await price(client, EARRING, 3)
    assert Decimal(fresh.json()["labour"]) == Decimal("40.00")


async def test_a_new_default_rule_row_reaches_the_prices_too(
    listener: InProcessListener,
    client: httpx.AsyncClient,
    redis_client: redis.asyncio.Redis,
    database_url: str,
) -> None:
    await cache_prices(client)
    dba(
        database_url,
        "INSERT INTO pricing_rules (kind, labour, finishing_per_cm2, minimum_price)"
        " VALUES ('anklet', 10, 1, 10)",
    )
    await gone(redis_client, *PRICES.values())

    async def refilled() -> bool:
        return (await price(client, PENDANT, 1)).headers["x-cache"] == "hit"

    await eventually(refilled, "a price cached again after the change")
