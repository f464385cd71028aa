"""Authentication and roles against the real servers: who gets 401, who gets 403, what a
client may see, and that a client learns nothing about other customers."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import psycopg
import pytest
from fastapi import FastAPI

from api import apikeys
from api.app import create_app
from tests.integration.conftest import (
    OPERATOR_KEY,
    CustomerClient,
    MakeClientKey,
    api_settings,
    http_client,
)

ANNA = "Anna K."
BORIS = "Boris P."
ORDER = {"model_id": 1, "material_id": 1, "quantity": 1, "params": {"size": 16}}

PROTECTED = [
    ("GET", "/orders/dashboard"),
    ("GET", "/orders/new"),
    ("GET", "/orders?status=new"),
    ("GET", "/orders/1"),
    ("GET", "/orders/1/status"),
    ("POST", "/orders"),
    ("PATCH", "/orders/1"),
]
OPERATOR_ONLY = [
    ("GET", "/orders/dashboard"),
    ("GET", "/orders/new"),
    ("GET", "/orders?status=new"),
    ("PATCH", "/orders/1"),
]


async def _call(http: httpx.AsyncClient, method: str, path: str) -> httpx.Response:
    body = {"status": "in_progress"} if method == "PATCH" else {**ORDER, "customer": ANNA}
    return await http.request(method, path, json=body if method != "GET" else None)


async def _place_for(client: httpx.AsyncClient, customer: str) -> dict[str, Any]:
    resp = await client.post("/orders", json={**ORDER, "customer": customer})
    assert resp.status_code == 201, resp.text
    placed: dict[str, Any] = resp.json()  # JSON: its values' types are the API's to say
    return placed


@pytest.mark.parametrize(("method", "path"), PROTECTED)
async def test_no_credentials_is_401_with_a_bearer_challenge(
    anonymous_client: httpx.AsyncClient, method: str, path: str
) -> None:
    resp = await _call(anonymous_client, method, path)
    assert resp.status_code == 401
    assert resp.headers["www-authenticate"] == "Bearer"
    assert "Authorization: Bearer" in resp.json()["detail"]


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer mes_not-a-key-of-this-installation-at-all",
        f"Bearer {OPERATOR_KEY}x",
        f"Bearer {'k' * 300}",
        "Basic YWRtaW46YWRtaW4=",
        OPERATOR_KEY,  # the key without its scheme
    ],
)
async def test_a_bad_credential_is_401_and_reads_nothing(
    anonymous_client: httpx.AsyncClient, authorization: str
) -> None:
    for method, path in PROTECTED:
        resp = await anonymous_client.request(
            method,
            path,
            headers={"Authorization": authorization},
            json={**ORDER, "customer": ANNA} if method == "POST" else None,
        )
        assert resp.status_code == 401, (path, resp.text)
        assert resp.headers["www-authenticate"].startswith("Bearer")
        detail = resp.json()["detail"]
        assert "invalid or revoked API key" in detail or "'Bearer <api key>'" in detail


async def test_open_routes_need_no_credentials(anonymous_client: httpx.AsyncClient) -> None:
    for path in ("/healthz", "/docs", "/openapi.json"):
        assert (await anonymous_client.get(path)).status_code == 200, path


async def test_a_key_revoked_before_use_is_401(
    anonymous_client: httpx.AsyncClient, make_client_key: MakeClientKey, database_url: str
) -> None:
    key = await make_client_key(ANNA)
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        _, was_active = await apikeys.revoke_key(conn, apikeys.key_prefix(key))
    assert was_active
    resp = await anonymous_client.get("/orders/1", headers={"Authorization": f"Bearer {key}"})
    assert resp.status_code == 401
    assert resp.json()["detail"] == "invalid or revoked API key"


@pytest.fixture
async def short_memory_app(database_url: str, redis_url: str) -> AsyncIterator[FastAPI]:
    app = create_app(api_settings(database_url, redis_url, auth_cache_ttl=0.2))
    async with app.router.lifespan_context(app):
        yield app


async def test_a_revocation_bites_once_the_key_memory_expires(
    short_memory_app: FastAPI, make_client_key: MakeClientKey, database_url: str
) -> None:
    key = await make_client_key(ANNA)
    async with http_client(short_memory_app) as operator:
        placed = await _place_for(operator, ANNA)
    async with http_client(short_memory_app, key) as anna:
        assert (await anna.get(f"/orders/{placed['id']}")).status_code == 200
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
            await apikeys.revoke_key(conn, apikeys.key_prefix(key))
        deadline = time.monotonic() + 30
        while (status := (await anna.get(f"/orders/{placed['id']}")).status_code) == 200:
            assert time.monotonic() < deadline, "the revoked key still works"
            await asyncio.sleep(0.05)
        assert status == 401


@pytest.mark.parametrize(("method", "path"), OPERATOR_ONLY)
async def test_a_client_key_is_403_on_operator_routes(
    customer_client: CustomerClient, method: str, path: str
) -> None:
    anna = await customer_client(ANNA)
    resp = await _call(anna, method, path)
    assert resp.status_code == 403
    assert "operator key" in resp.json()["detail"]
    assert "www-authenticate" not in resp.headers


async def test_a_client_reads_its_own_order_and_status_from_the_cache(
    client: httpx.AsyncClient, customer_client: CustomerClient
) -> None:
    anna = await customer_client(ANNA)
    placed = await _place_for(anna, ANNA)
    assert placed["customer"] == ANNA
    first = await anna.get(f"/orders/{placed['id']}")
    assert first.status_code == 200
    assert first.headers["x-cache"] == "miss"
    assert first.json() == placed
    status = await anna.get(f"/orders/{placed['id']}/status")
    assert status.status_code == 200
    assert status.headers["x-cache"] == "hit"  # the same order:{id} value
    assert status.json() == {
        "id": placed["id"],
        "status": "new",
        "updated_at": placed["updated_at"],
    }
    again = await anna.get(f"/orders/{placed['id']}")
    assert again.headers["x-cache"] == "hit"
    assert again.content == first.content
    # an operator sees the same order and status
    assert (await client.get(f"/orders/{placed['id']}/status")).json() == status.json()


async def test_the_status_endpoint_fills_the_order_key_on_a_miss(
    customer_client: CustomerClient, client: httpx.AsyncClient
) -> None:
    placed = await _place_for(client, BORIS)
    boris = await customer_client(BORIS)
    miss = await boris.get(f"/orders/{placed['id']}/status")
    assert (miss.status_code, miss.headers["x-cache"]) == (200, "miss")
    hit = await boris.get(f"/orders/{placed['id']}")
    assert (hit.status_code, hit.headers["x-cache"]) == (200, "hit")


async def test_another_customers_order_looks_exactly_like_an_unknown_one(
    client: httpx.AsyncClient, customer_client: CustomerClient, database_url: str
) -> None:
    borises = int((await _place_for(client, BORIS))["id"])
    unknown = borises + 1  # same number of digits, so even the lengths must agree
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT 1 FROM orders WHERE id = %s", [unknown]).fetchone() is None
    anna = await customer_client(ANNA)
    for suffix in ("", "/status"):
        # the first read of Boris's order fills the cache, the second is a hit
        for _ in range(2):
            theirs = await anna.get(f"/orders/{borises}{suffix}")
            nothing = await anna.get(f"/orders/{unknown}{suffix}")
            assert theirs.status_code == nothing.status_code == 403
            assert theirs.text.replace(str(borises), "N") == nothing.text.replace(str(unknown), "N")
            assert dict(theirs.headers) == dict(nothing.headers)
            assert BORIS not in theirs.text
    # operators still learn that an id does not exist
    assert (await client.get(f"/orders/{unknown}/status")).status_code == 404


async def test_a_client_places_orders_for_its_own_customer_only(
    customer_client: CustomerClient, database_url: str
) -> None:
    anna = await customer_client(ANNA)
    refused = await anna.post("/orders", json={**ORDER, "customer": BORIS})
    assert refused.status_code == 403
    assert refused.json()["detail"] == "a client key places orders only for its own customer"
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT count(*) FROM orders WHERE customer = %s", [BORIS]).fetchone()
    assert row == (0,)
    assert (await anna.post("/orders", json={**ORDER, "customer": ANNA})).status_code == 201


async def test_a_valid_key_costs_no_query_per_request_and_a_bad_one_no_storm(
    app: FastAPI, anonymous_client: httpx.AsyncClient, client: httpx.AsyncClient
) -> None:
    verifier = app.state.ctx.auth
    for _ in range(20):
        assert (await client.get("/orders/dashboard")).status_code == 200
    assert verifier.queries == 1
    bad = {"Authorization": "Bearer mes_someone-guessing-a-key-of-this-shop"}
    answers = await asyncio.gather(
        *(anonymous_client.get("/orders/dashboard", headers=bad) for _ in range(30))
    )
    assert {r.status_code for r in answers} == {401}
    assert verifier.queries == 2  # thirty tries of one bad key: one query


async def test_operator_api_key_is_stored_hashed_once(
    database_url: str, redis_url: str, operator_key: str
) -> None:
    for _ in range(2):  # a second start (or a second process) changes nothing
        app = create_app(api_settings(database_url, redis_url))
        async with app.router.lifespan_context(app):
            pass
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT key_hash, prefix, role, customer, label, revoked_at, api_keys::text"
            " FROM api_keys"
        ).fetchall()
    assert len(rows) == 1
    digest, prefix, role, customer, label, revoked_at, whole_row = rows[0]
    assert bytes(digest) == hashlib.sha256(operator_key.encode()).digest()
    assert operator_key.startswith(prefix)
    assert len(prefix) < 16
    assert (role, customer, label, revoked_at) == ("operator", None, "OPERATOR_API_KEY", None)
    assert operator_key not in whole_row


async def test_a_new_operator_api_key_retires_the_old_one(
    database_url: str, redis_url: str
) -> None:
    new_key = "mes_the-rotated-operator-key-0123456789"
    app = create_app(api_settings(database_url, redis_url))
    async with app.router.lifespan_context(app):
        pass
    app = create_app(api_settings(database_url, redis_url, operator_api_key=new_key))
    async with app.router.lifespan_context(app):
        async with http_client(app, new_key) as new:
            assert (await new.get("/orders/new")).status_code == 200
        async with http_client(app, OPERATOR_KEY) as old:
            assert (await old.get("/orders/new")).status_code == 401
    # a restart with the retired key does not bring it back
    app = create_app(api_settings(database_url, redis_url))
    async with app.router.lifespan_context(app), http_client(app, OPERATOR_KEY) as old:
        assert (await old.get("/orders/new")).status_code == 401


# Routes anyone may call. A route missing here must declare the bearer scheme: a new open
# route is a decision to write down, not an accident.
OPEN_ROUTES = {"/", "/healthz", "/readyz", "/metrics"}


async def test_openapi_declares_the_bearer_scheme_on_every_route_but_the_open_ones(
    anonymous_client: httpx.AsyncClient,
) -> None:
    spec = (await anonymous_client.get("/openapi.json")).json()
    schemes = spec["components"]["securitySchemes"]
    assert schemes["apiKey"]["type"] == "http"
    assert schemes["apiKey"]["scheme"] == "bearer"
    assert "/orders/{order_id}/status" in spec["paths"]
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            secured = operation.get("security") == [{"apiKey": []}]
            assert secured == (path not in OPEN_ROUTES), (method, path)
            if secured:
                assert "401" in operation["responses"], (method, path)
