"""Hits answered before FastAPI routes the request (api.direct_hits): the same bytes as the
route's own answer, and every request the route would refuse, fill or bypass left to it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from api.app import create_app
from api.direct_hits import DIRECT_READS, OrdersApi
from devtools.devstack import free_port
from tests.integration.conftest import MakeClientKey, api_settings, http_client


def _direct(app: FastAPI) -> int:
    assert isinstance(app, OrdersApi)
    return app.direct_hits


def _wire(response: httpx.Response) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    return response.status_code, list(response.headers.raw), response.content


def test_the_views_served_directly_count_no_requests() -> None:
    # A counted view's hit would have to be counted here too: none of them is.
    assert all(read.view.counter is None for read in DIRECT_READS.values())


@pytest.mark.parametrize("path", sorted(DIRECT_READS))
async def test_a_direct_hit_is_the_routes_own_answer_byte_for_byte(
    app: FastAPI, client: httpx.AsyncClient, path: str
) -> None:
    first = await client.get(path)
    assert first.headers["x-cache"] == "miss"  # filled by the route
    assert _direct(app) == 0
    direct = await client.get(path)
    assert _direct(app) == 1
    # A query string (which the route ignores) sends the same hit through the framework.
    routed = await client.get(path, params={"through": "the-route"})
    assert _direct(app) == 1
    assert routed.headers["x-cache"] == "hit"
    assert _wire(direct) == _wire(routed)
    assert direct.content == first.content


async def test_a_key_the_route_would_refuse_is_refused_by_the_route(
    app: FastAPI, client: httpx.AsyncClient, make_client_key: MakeClientKey
) -> None:
    assert (await client.get("/orders/dashboard")).status_code == 200  # filled
    assert (await client.get("/orders/dashboard")).headers["x-cache"] == "hit"
    served = _direct(app)
    client_key = await make_client_key("Anna K.")
    async with http_client(app, client_key) as anna:
        # The client key is verified (and remembered) by the route it may read...
        assert (await anna.get("/catalogue")).headers["x-cache"] == "miss"
        assert _direct(app) == served
        assert (await anna.get("/catalogue")).headers["x-cache"] == "hit"
        assert _direct(app) == served + 1
        served += 1
        # ...and still gets the route's 403 for an operator's list, hit or not.
        refused = await anna.get("/orders/dashboard")
        assert refused.status_code == 403
        assert "operator" in refused.json()["detail"]
    for key in (None, "mes_no-such-key-anywhere", "x" * 5000):
        async with http_client(app, key) as stranger:
            answer = await stranger.get("/orders/dashboard")
        assert answer.status_code == 401
        assert answer.headers["www-authenticate"].startswith("Bearer")
    assert _direct(app) == served


@pytest.mark.parametrize(
    "authorization",
    ["bearer {key}", "BEARER {key}", "Bearer   {key}  ", "Bearer {key}\t"],
)
async def test_the_header_is_read_as_the_route_reads_it(
    app: FastAPI, client: httpx.AsyncClient, operator_key: str, authorization: str
) -> None:
    assert (await client.get("/orders/dashboard")).status_code == 200  # verified, filled
    before = _direct(app)
    headers = {"Authorization": authorization.format(key=operator_key)}
    async with http_client(app, None) as http:
        answer = await http.get("/orders/dashboard", headers=headers)
    assert answer.status_code == 200
    assert answer.headers["x-cache"] == "hit"
    assert _direct(app) == before + 1


async def test_a_miss_a_body_or_another_method_goes_to_the_route(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    miss = await client.get("/orders/new")
    assert miss.headers["x-cache"] == "miss"
    assert (await client.get("/orders/new")).headers["x-cache"] == "hit"
    served = _direct(app)
    with_body = await client.request("GET", "/orders/new", content=b"{}")
    assert with_body.status_code == 200
    head = await client.head("/orders/new")
    assert head.status_code == 405  # the route's answer: GET only
    assert _direct(app) == served


@pytest.fixture
async def stopped_redis_app(database_url: str, redis_url: str) -> AsyncIterator[FastAPI]:
    """An app whose Redis cannot be reached: every Redis call fails."""
    unreachable = f"redis://127.0.0.1:{free_port()}/0"  # a port free now: nothing listens
    application = create_app(
        api_settings(database_url, unreachable, redis_timeout=0.2, redis_retry_after=30)
    )
    async with application.router.lifespan_context(application):
        yield application


async def test_with_redis_unreachable_the_route_answers_from_postgresql(
    stopped_redis_app: FastAPI,
) -> None:
    async with http_client(stopped_redis_app) as http:
        for _ in range(3):
            answer = await http.get("/orders/dashboard")
            assert answer.status_code == 200
            assert answer.headers["x-cache"] == "miss"
    assert _direct(stopped_redis_app) == 0
