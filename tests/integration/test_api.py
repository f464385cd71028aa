"""The API against real PostgreSQL and Redis: cache-aside reads, writes that touch no key,
and a clear 4xx for every bad input."""

from __future__ import annotations

import json
from typing import Any

import httpx
import psycopg
import pytest
import redis.asyncio

NEW_ORDER = {
    "customer": "anna",
    "model_id": 1,
    "material_id": 1,
    "quantity": 2,
    "params": {"size": 17, "engraving": "A+M"},
}


async def _place(client: httpx.AsyncClient) -> dict[str, Any]:
    resp = await client.post("/orders", json=NEW_ORDER)
    assert resp.status_code == 201, resp.text
    placed: dict[str, Any] = resp.json()  # JSON: its values' types are the API's to say
    return placed


async def snapshot(r: redis.asyncio.Redis) -> dict[bytes, tuple[bytes | str | None, str]]:
    """Every key with its value (or type) — what a write must leave alone."""
    out: dict[bytes, tuple[bytes | str | None, str]] = {}
    async for key in r.scan_iter():
        kind_bytes = await r.type(key)
        assert isinstance(kind_bytes, bytes)  # the test clients never decode responses
        kind = kind_bytes.decode()
        value = await r.get(key) if kind == "string" else None
        out[key] = (value, kind)
    return out


@pytest.mark.parametrize(
    ("path", "key", "ttl"),
    [
        ("/orders/dashboard", "orders:{dashboard}", 60),
        ("/orders/new", "orders:{new}", 10),
    ],
)
async def test_second_read_is_a_hit_with_the_contract_key_and_ttl(
    client: httpx.AsyncClient, redis_client: redis.asyncio.Redis, path: str, key: str, ttl: int
) -> None:
    first = await client.get(path)
    assert first.status_code == 200
    assert first.headers["x-cache"] == "miss"
    second = await client.get(path)
    assert second.headers["x-cache"] == "hit"
    assert second.content == first.content
    assert await redis_client.get(key) == first.content
    assert ttl - 2 < await redis_client.ttl(key) <= ttl
    items = first.json()["items"]
    assert items, "the demo data has active orders"
    assert {"id", "status", "updated_at"} <= set(items[0])


async def test_dashboard_holds_exactly_the_active_orders(
    client: httpx.AsyncClient, database_url: str
) -> None:
    with psycopg.connect(database_url) as conn:
        expected = {
            r[0]
            for r in conn.execute("SELECT id FROM orders WHERE status IN ('new','in_progress')")
        }
    body = (await client.get("/orders/dashboard")).json()
    assert {o["id"] for o in body["items"]} == expected
    assert {o["status"] for o in body["items"]} <= {"new", "in_progress"}


async def test_one_order_is_cached_under_its_key(
    client: httpx.AsyncClient, redis_client: redis.asyncio.Redis
) -> None:
    placed = await _place(client)
    miss = await client.get(f"/orders/{placed['id']}")
    assert miss.headers["x-cache"] == "miss"
    assert miss.json() == placed
    hit = await client.get(f"/orders/{placed['id']}")
    assert hit.headers["x-cache"] == "hit"
    assert hit.content == await redis_client.get(f"order:{{{placed['id']}}}")
    assert await redis_client.ttl(f"order:{{{placed['id']}}}") > 0


async def test_status_pages_are_cached_and_reachable_from_the_status_tag(
    client: httpx.AsyncClient, redis_client: redis.asyncio.Redis
) -> None:
    first = await client.get("/orders", params={"status": "done", "limit": 10})
    assert first.status_code == 200
    page = first.json()
    assert len(page["items"]) == 10
    assert all(o["status"] == "done" for o in page["items"])
    ids = [o["id"] for o in page["items"]]
    assert ids == sorted(ids, reverse=True)
    second = await client.get(
        "/orders", params={"status": "done", "limit": 10, "cursor": page["next_cursor"]}
    )
    assert second.headers["x-cache"] == "miss"
    assert max(o["id"] for o in second.json()["items"]) < min(ids)
    again = await client.get("/orders", params={"status": "done", "limit": 10})
    assert again.headers["x-cache"] == "hit"
    members = await redis_client.smembers("orders:{status:done}")
    assert len(members) == 2
    for member in members:
        assert await redis_client.get(member) is not None
        assert await redis_client.ttl(member) > 0
    assert await redis_client.ttl("orders:{status:done}") > 0


async def test_last_page_has_no_cursor(client: httpx.AsyncClient) -> None:
    resp = await client.get("/orders", params={"status": "new", "limit": 200})
    assert resp.json()["next_cursor"] is None


async def test_writes_change_postgres_and_touch_no_key(
    client: httpx.AsyncClient, redis_client: redis.asyncio.Redis, database_url: str
) -> None:
    placed = await _place(client)
    for path in ("/orders/dashboard", "/orders/new", f"/orders/{placed['id']}"):
        await client.get(path)
    await client.get("/orders", params={"status": "new"})
    before = await snapshot(redis_client)
    assert len(before) >= 5

    moved = await client.patch(f"/orders/{placed['id']}", json={"status": "in_progress"})
    assert moved.status_code == 200
    assert moved.json()["status"] == "in_progress"
    await _place(client)

    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT status FROM orders WHERE id = %s", [placed["id"]]).fetchone()
    assert row == ("in_progress",)
    assert await snapshot(redis_client) == before
    # the cached copy is stale until the listener acts: the API itself never invalidates
    cached = await client.get(f"/orders/{placed['id']}")
    assert cached.headers["x-cache"] == "hit"
    assert cached.json()["status"] == "new"


async def test_post_computes_the_price_and_starts_new(client: httpx.AsyncClient) -> None:
    placed = await _place(client)
    assert placed["status"] == "new"
    assert placed["quantity"] == 2
    assert placed["params"] == NEW_ORDER["params"]
    assert float(placed["total_price"]) > 0
    assert placed["created_at"]
    assert placed["updated_at"]


async def test_legal_moves_and_updated_at(client: httpx.AsyncClient) -> None:
    placed = await _place(client)
    taken = (await client.patch(f"/orders/{placed['id']}", json={"status": "in_progress"})).json()
    assert taken["updated_at"] > placed["updated_at"]
    done = await client.patch(f"/orders/{placed['id']}", json={"status": "done"})
    assert done.status_code == 200
    assert done.json()["status"] == "done"


@pytest.mark.parametrize(
    ("first", "illegal"),
    [
        (None, "done"),  # new -> done skips the work
        ("done", "cancelled"),
        ("cancelled", "in_progress"),
        (None, "new"),
    ],
)
async def test_illegal_moves_are_409_with_a_message(
    client: httpx.AsyncClient, first: str | None, illegal: str
) -> None:
    placed = await _place(client)
    if first == "done":
        await client.patch(f"/orders/{placed['id']}", json={"status": "in_progress"})
    if first is not None:
        assert (
            await client.patch(f"/orders/{placed['id']}", json={"status": first})
        ).status_code == 200
    resp = await client.patch(f"/orders/{placed['id']}", json={"status": illegal})
    assert resp.status_code == 409
    assert f"cannot move it to {illegal}" in resp.json()["detail"]


async def test_unknown_order_is_404(client: httpx.AsyncClient) -> None:
    for resp in (
        await client.get("/orders/99999999"),
        await client.patch("/orders/99999999", json={"status": "done"}),
    ):
        assert resp.status_code == 404
        assert resp.json() == {"detail": "order 99999999 not found"}


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("PATCH", "/orders/1", {}),
        ("PATCH", "/orders/1", {"status": "shipped"}),
        ("PATCH", "/orders/1", {"status": "done", "extra": 1}),
        ("PATCH", "/orders/1", "not json"),
        ("POST", "/orders", {**NEW_ORDER, "quantity": 0}),
        ("POST", "/orders", {**NEW_ORDER, "customer": ""}),
        ("POST", "/orders", {k: v for k, v in NEW_ORDER.items() if k != "model_id"}),
        ("POST", "/orders", {**NEW_ORDER, "model_id": 999999}),
        ("POST", "/orders", {**NEW_ORDER, "material_id": 999999}),
        ("GET", "/orders?status=shipped", None),
        ("GET", "/orders", None),
        ("GET", "/orders?status=new&limit=0", None),
        ("GET", "/orders?status=new&cursor=9223372036854775808", None),
        ("POST", "/orders", {**NEW_ORDER, "model_id": 2**63}),
        ("POST", "/orders", {**NEW_ORDER, "customer": "Ada\u0000"}),
        ("POST", "/orders", {**NEW_ORDER, "params": {"engraving": ["x\u0000"]}}),
        ("POST", "/orders", {**NEW_ORDER, "params": {"size": float("nan")}}),
        ("GET", "/orders/9223372036854775808", None),
        ("GET", "/orders?status=new&cursor=-4", None),
    ],
)
async def test_bad_input_is_422_with_a_message(
    client: httpx.AsyncClient, method: str, path: str, body: object
) -> None:
    content = body if isinstance(body, str) else (json.dumps(body) if body is not None else None)
    resp = await client.request(
        method, path, content=content, headers={"content-type": "application/json"}
    )
    assert resp.status_code == 422, resp.text
    assert resp.json()["detail"]


@pytest.mark.parametrize(("method", "path"), [("GET", "/orders/abc"), ("PATCH", "/orders/abc")])
async def test_a_path_that_is_no_order_id_is_404(
    client: httpx.AsyncClient, method: str, path: str
) -> None:
    resp = await client.request(method, path, json={"status": "done"})
    assert resp.status_code == 404, resp.text


async def test_a_method_a_path_does_not_serve_is_405_naming_every_allowed_one(
    client: httpx.AsyncClient,
) -> None:
    dashboard = await client.patch("/orders/dashboard", json={"status": "done"})
    assert dashboard.status_code == 405
    assert dashboard.headers["allow"] == "GET"
    one = await client.delete("/orders/1")
    assert one.status_code == 405
    assert one.headers["allow"] == "GET, PATCH"


async def test_a_limit_above_the_maximum_is_capped(client: httpx.AsyncClient) -> None:
    resp = await client.get("/orders", params={"status": "done", "limit": 100_000})
    assert resp.status_code == 200
    assert len(resp.json()["items"]) == 200  # PAGE_LIMIT_MAX
    assert resp.json()["next_cursor"] is not None


async def test_unknown_catalogue_entries_are_named(client: httpx.AsyncClient) -> None:
    resp = await client.post("/orders", json={**NEW_ORDER, "model_id": 999999})
    assert resp.json()["detail"] == "unknown model 999999"


async def test_healthz_and_docs(client: httpx.AsyncClient) -> None:
    health = await client.get("/healthz")
    assert health.status_code == 200
    assert health.json()["status"] == "ok"
    spec = (await client.get("/openapi.json")).json()
    assert {"/orders", "/orders/dashboard", "/orders/new", "/orders/{order_id}"} <= set(
        spec["paths"]
    )
    assert (await client.get("/docs")).status_code == 200
