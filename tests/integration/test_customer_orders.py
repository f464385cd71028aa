"""A client's own orders and the catalogue's names: served from the cache, fenced, kept
right by the listener whoever writes (raw SQL included, in both modes), checked and warmed
like every other view."""

from __future__ import annotations

import asyncio
from urllib.parse import quote

import httpx
import psycopg
import pytest
import redis.asyncio

from mescache.db import make_pool
from mescache.keys import KeySchema
from mescache.settings import CacheSettings
from mescache.store import Commands, RedisStore
from mescache.warm import hot_targets, warm_targets
from tests.integration.conftest import CustomerClient
from tests.integration.listener_fixtures import (
    InProcessListener,
    confirmed_past_now,
    eventually,
)
from tests.integration.test_check import run_check
from tests.integration.test_listener import dba, gone, listener
from tests.integration.test_store_races import paused_fill, reader

__all__ = ["listener"]  # the fixture, in both modes

KEYS = KeySchema()
# A name with everything a key must not take raw: braces (the hash tag), a star and a
# question mark (SCAN patterns), a colon, a slash, a percent sign, spaces, non-ASCII.
ODD = "Zoë {VIP} *?: 50% / shop"


def place(database_url: str, customer: str, count: int = 1) -> list[int]:
    """Orders placed by raw SQL (another service, a DBA): their ids, oldest first."""
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "INSERT INTO orders (customer, model_id, material_id, quantity, total_price)"
            " SELECT %s, 1, 1, 1, 10 FROM generate_series(1, %s) RETURNING id",
            [customer, count],
        ).fetchall()
    return sorted(int(r[0]) for r in rows)


async def applied(listener: InProcessListener) -> None:
    """Until the listener has applied every change committed so far."""
    settings = listener.settings

    def done() -> bool:
        if settings.cdc_mode == "logical":
            return confirmed_past_now(settings.database_url, settings.cdc_slot)
        with psycopg.connect(settings.database_url) as conn:
            row = conn.execute("SELECT count(*) FROM cache_outbox").fetchone()
        return row is not None and row[0] == 0

    await eventually(lambda: asyncio.to_thread(done), "the listener caught up")


def path_of(customer: str) -> str:
    return f"/customers/{quote(customer, safe='')}/orders"


async def test_a_client_reads_its_own_orders_newest_first_page_by_page(
    customer_client: CustomerClient, database_url: str, redis_client: redis.asyncio.Redis
) -> None:
    ids = place(database_url, ODD, 5)
    place(database_url, "Someone else", 2)
    anna = await customer_client(ODD)
    first = await anna.get("/customers/me/orders", params={"limit": 2})
    assert first.status_code == 200, first.text
    assert first.headers["x-cache"] == "miss"
    body = first.json()
    assert [o["id"] for o in body["items"]] == ids[::-1][:2]
    assert {o["customer"] for o in body["items"]} == {ODD}
    seen = [o["id"] for o in body["items"]]
    cursor = body["next_cursor"]
    while cursor is not None:
        page = (
            await anna.get("/customers/me/orders", params={"limit": 2, "cursor": cursor})
        ).json()
        seen += [o["id"] for o in page["items"]]
        cursor = page["next_cursor"]
    assert seen == ids[::-1]
    again = await anna.get("/customers/me/orders", params={"limit": 2})
    assert again.headers["x-cache"] == "hit"
    assert again.content == first.content
    # cached per customer and page, in the customer's family (one hash slot)
    page_key = KEYS.customer_page(ODD, None, 2)
    assert await redis_client.get(page_key.name) == first.content
    assert await redis_client.sismember(KEYS.customer_family(ODD), page_key.name)
    assert "{VIP}" not in page_key.name
    # the same list through the operator form of the route, for its own customer
    assert (await anna.get(path_of(ODD), params={"limit": 2})).content == first.content


async def test_a_client_gets_403_for_another_customers_orders(
    customer_client: CustomerClient, database_url: str
) -> None:
    place(database_url, "Bob", 1)
    anna = await customer_client("Anna K.")
    refused = await anna.get(path_of("Bob"))
    assert refused.status_code == 403
    assert "own customer" in refused.json()["detail"]
    # the dashboard and status lists stay operators' only
    assert (await anna.get("/orders/dashboard")).status_code == 403


async def test_an_operator_reads_any_customers_orders(
    client: httpx.AsyncClient, database_url: str
) -> None:
    ids = place(database_url, ODD, 3)
    listed = await client.get(path_of(ODD))
    assert listed.status_code == 200, listed.text
    assert [o["id"] for o in listed.json()["items"]] == ids[::-1]
    assert listed.json()["next_cursor"] is None
    assert (await client.get(path_of("nobody at all"))).json() == {
        "items": [],
        "next_cursor": None,
    }
    too_long = await client.get(path_of("x" * 201))
    assert too_long.status_code == 422
    assert "200 characters" in too_long.json()["detail"]
    assert (await client.get(path_of(ODD), params={"cursor": 0})).status_code == 422


async def test_the_catalogue_names_every_model_and_material(
    client: httpx.AsyncClient, customer_client: CustomerClient, database_url: str
) -> None:
    with psycopg.connect(database_url) as conn:
        models = conn.execute("SELECT id, sku, name, kind FROM models ORDER BY id").fetchall()
        materials = conn.execute("SELECT id, code, name FROM materials ORDER BY id").fetchall()
    names = (await client.get("/catalogue")).json()
    assert names["models"] == [
        {"id": i, "sku": sku, "name": name, "kind": kind} for i, sku, name, kind in models
    ]
    assert names["materials"] == [
        {"id": i, "code": code, "name": name} for i, code, name in materials
    ]
    anna = await customer_client("Anna K.")
    served = await anna.get("/catalogue")  # any key may read it
    assert served.status_code == 200
    assert served.headers["x-cache"] == "hit"


async def test_a_customer_page_fill_that_raced_an_invalidation_is_not_stored(
    redis_client: redis.asyncio.Redis,
) -> None:
    page = KEYS.customer_page(ODD, None, 50)
    family = KEYS.customer_family(ODD)
    store = RedisStore(redis_client)
    fill, invalidated = await paused_fill(redis_client, page, 60, b"old page")
    # The page is in no tag set yet: only its family's fence can stop the fill.
    assert not await redis_client.smembers(family)
    await store.send(
        lambda cmds: store.queue_invalidate_family(cmds, family, KEYS.family_fence(family))
    )
    invalidated.set()
    assert (await fill).body == b"old page"  # the reader answers with what it read
    assert await redis_client.get(page.name) is None  # but does not store it

    async def fresh() -> bytes:
        return b"new page"

    assert (await reader(redis_client).get(page, 60, fresh)).body == b"new page"
    assert await redis_client.get(page.name) == b"new page"


async def test_another_customers_invalidation_does_not_fence_the_fill(
    redis_client: redis.asyncio.Redis,
) -> None:
    page = KEYS.customer_page("Anna K.", None, 50)
    store = RedisStore(redis_client)
    fill, invalidated = await paused_fill(redis_client, page, 60, b"anna's page")
    families = [KEYS.customer_family(c) for c in ("Anna K", "Anna K. ", "anna k.")]

    def others(cmds: Commands) -> None:  # close names are other customers
        for family in families:
            store.queue_invalidate_family(cmds, family, KEYS.family_fence(family))

    await store.send(others)
    invalidated.set()
    await fill
    assert await redis_client.get(page.name) == b"anna's page"


async def cache_lists(client: httpx.AsyncClient, *customers: str) -> None:
    for customer in customers:
        assert (await client.get(path_of(customer))).status_code == 200
    assert (await client.get("/catalogue")).status_code == 200


async def test_raw_sql_placing_and_moving_orders_invalidates_each_customers_list(
    listener: InProcessListener,
    client: httpx.AsyncClient,
    redis_client: redis.asyncio.Redis,
    database_url: str,
) -> None:
    place(database_url, "Bob", 1)
    [moving] = place(database_url, ODD, 1)
    await applied(listener)
    await cache_lists(client, ODD, "Bob", "Carol")
    anna_page, bob_page = KEYS.customer_page(ODD, None, 50), KEYS.customer_page("Bob", None, 50)
    carol_page = KEYS.customer_page("Carol", None, 50)

    # a new order by anyone: its customer's list goes, no one else's
    [placed] = place(database_url, ODD, 1)
    await gone(redis_client, anna_page.name)
    assert await redis_client.exists(bob_page.name, carol_page.name) == 2
    assert placed in {o["id"] for o in (await client.get(path_of(ODD))).json()["items"]}

    # an update that moves an order to another customer: both lists go
    await cache_lists(client, ODD, "Bob")
    dba(database_url, f"UPDATE orders SET customer = 'Bob' WHERE id = {moving}")
    await gone(redis_client, anna_page.name, bob_page.name)
    assert await redis_client.exists(carol_page.name) == 1
    assert moving not in {o["id"] for o in (await client.get(path_of(ODD))).json()["items"]}
    assert moving in {o["id"] for o in (await client.get(path_of("Bob"))).json()["items"]}

    # any change of one of its orders (a status move, a delete)
    dba(database_url, f"UPDATE orders SET status = 'in_progress' WHERE id = {moving}")
    await gone(redis_client, bob_page.name)
    bob = (await client.get(path_of("Bob"))).json()["items"]
    assert {o["status"] for o in bob if o["id"] == moving} == {"in_progress"}
    dba(database_url, f"DELETE FROM orders WHERE id = {placed}")
    await gone(redis_client, anna_page.name)
    # the catalogue was touched by none of these
    assert await redis_client.exists(KEYS.catalogue().name) == 1


async def test_truncating_orders_empties_every_customers_list(
    listener: InProcessListener,
    client: httpx.AsyncClient,
    redis_client: redis.asyncio.Redis,
    database_url: str,
) -> None:
    place(database_url, ODD, 1)
    await applied(listener)
    await cache_lists(client, ODD, "Bob")
    dba(database_url, "TRUNCATE orders")
    await gone(
        redis_client,
        KEYS.customer_page(ODD, None, 50).name,
        KEYS.customer_page("Bob", None, 50).name,
    )
    assert (await client.get(path_of(ODD))).json()["items"] == []


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE models SET name = 'Renamed ring' WHERE id = 1",
        "UPDATE materials SET name = 'Renamed gold' WHERE id = 1",
        "INSERT INTO materials (code, name, density_g_cm3, price_per_gram)"
        " VALUES ('new-metal', 'Renamed alloy', 8.5, 1.5)",
    ],
    ids=["model-renamed", "material-renamed", "material-added"],
)
async def test_a_catalogue_change_reaches_the_names(
    listener: InProcessListener,
    client: httpx.AsyncClient,
    redis_client: redis.asyncio.Redis,
    database_url: str,
    statement: str,
) -> None:
    price = "/models/1/price?material=2"
    await cache_lists(client, ODD)
    assert (await client.get(price)).status_code == 200
    dba(database_url, statement)
    await gone(redis_client, KEYS.catalogue().name)
    names = (await client.get("/catalogue")).json()
    assert any(row["name"].startswith("Renamed") for row in names["models"] + names["materials"])
    # names only: an order list and a price of another material are not touched
    assert await redis_client.exists(KEYS.customer_page(ODD, None, 50).name) == 1
    if "materials" in statement:
        assert (await client.get(price)).headers["x-cache"] == "hit"


async def test_the_checker_compares_customer_pages_and_the_catalogue(
    client: httpx.AsyncClient, database_url: str, redis_url: str
) -> None:
    [order_id] = place(database_url, ODD, 1)
    await cache_lists(client, ODD, "Bob")
    clean = await run_check(database_url, redis_url)
    assert clean.stale == []
    assert clean.checked["customer_page"] == 2
    assert clean.checked["catalogue"] == 1
    # nobody listens: what the DBA does next stays in the cache, and the checker says so
    dba(
        database_url,
        f"UPDATE orders SET quantity = 3 WHERE id = {order_id}",
        "UPDATE materials SET name = 'Renamed gold' WHERE id = 1",
    )
    report = await run_check(database_url, redis_url)
    stale = {s.name: s for s in report.stale}
    assert set(stale) == {KEYS.customer_page(ODD, None, 50).name, KEYS.catalogue().name}
    assert stale[KEYS.customer_page(ODD, None, 50).name].kind == "customer_page"
    assert f"changed: ids [{order_id}]" in stale[KEYS.customer_page(ODD, None, 50).name].diff


async def test_warm_up_fills_the_catalogue_and_the_latest_customers_first_pages(
    client: httpx.AsyncClient,
    database_url: str,
    redis_url: str,
    redis_client: redis.asyncio.Redis,
) -> None:
    place(database_url, "Bob", 1)
    place(database_url, ODD, 1)  # the latest order
    settings = CacheSettings(
        database_url=database_url, redis_url=redis_url, warm_customers=2, warm_prices=0
    )
    pool = make_pool(database_url, 1, 4, "warm-test")
    await pool.open()
    try:
        store = RedisStore(redis_client)
        targets = await hot_targets(store, KEYS, pool, settings)
        names = [t.key.name for t in targets]
        assert KEYS.catalogue().name in names
        customer_pages = [n for n in names if n.startswith("orders:{customer:")]
        assert customer_pages == [
            KEYS.customer_page(ODD, None, 50).name,
            KEYS.customer_page("Bob", None, 50).name,
        ]
        report = await warm_targets(store, KEYS, targets)
        assert report.outcomes["filled"] == len(targets)
    finally:
        await pool.close()
    # filled as the API fills: the API serves them as hits, and the family knows the page
    for path in (path_of(ODD), path_of("Bob"), "/catalogue"):
        assert (await client.get(path)).headers["x-cache"] == "hit", path
    assert await redis_client.sismember(
        KEYS.customer_family(ODD), KEYS.customer_page(ODD, None, 50).name
    )


async def test_a_new_order_through_the_api_reaches_the_clients_list(
    listener: InProcessListener, customer_client: CustomerClient
) -> None:
    anna = await customer_client(ODD)
    before = await anna.get("/customers/me/orders")
    assert before.json()["items"] == []
    placed = await anna.post("/orders", json={"customer": ODD, "model_id": 1, "material_id": 1})
    assert placed.status_code == 201, placed.text

    async def listed() -> bool:
        items = (await anna.get("/customers/me/orders")).json()["items"]
        return [o["id"] for o in items] == [placed.json()["id"]]

    await eventually(listed, "the new order in the client's list")
