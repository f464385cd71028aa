"""Integration fixtures: the API app running in-process against the real servers.

Every app is built with OPERATOR_KEY as its OPERATOR_API_KEY (stored hashed at start-up,
like in production), and `client` sends it: tests that are not about authentication
speak as an operator. For the other roles:

- `anonymous_client` sends no credentials;
- `make_client_key("Anna K.")` stores a client key for that customer and returns it;
- `customer_client("Anna K.")` returns an HTTP client that sends such a key;
- `http_client(app, key)` opens a client with any key (or none) for an app of a test's own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager

import httpx
import psycopg
import pytest
from fastapi import FastAPI

from api import apikeys
from api.app import create_app
from api.settings import ApiSettings

OPERATOR_KEY = "mes_test-operator-key-for-the-integration-suite"

MakeClientKey = Callable[[str], Awaitable[str]]
CustomerClient = Callable[[str], Awaitable[httpx.AsyncClient]]


def api_settings(database_url: str, redis_url: str, **overrides: object) -> ApiSettings:
    overrides.setdefault("operator_api_key", OPERATOR_KEY)
    return ApiSettings(database_url=database_url, redis_url=redis_url, **overrides)  # type: ignore[arg-type]


@asynccontextmanager
async def http_client(
    app: FastAPI, key: str | None = OPERATOR_KEY
) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client of the in-process app sending `key` as its bearer (None: nothing)."""
    headers = {} if key is None else {"Authorization": f"Bearer {key}"}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://api", headers=headers
    ) as http:
        yield http


@pytest.fixture
def operator_key() -> str:
    """The operator key every test app is provisioned with (OPERATOR_API_KEY)."""
    return OPERATOR_KEY


@pytest.fixture
async def app(database_url: str, redis_url: str) -> AsyncIterator[FastAPI]:
    application = create_app(api_settings(database_url, redis_url))
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """Speaks as an operator (OPERATOR_KEY)."""
    async with http_client(app) as http:
        yield http


@pytest.fixture
async def anonymous_client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """Sends no credentials."""
    async with http_client(app, None) as http:
        yield http


@pytest.fixture
def make_client_key(database_url: str) -> MakeClientKey:
    """Stores a client-role key for a customer (orders.customer) and returns the key."""

    async def make(customer: str) -> str:
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
            made = await apikeys.create_key(conn, "client", customer, label="test")
        return made.key

    return make


@pytest.fixture
async def customer_client(
    app: FastAPI, make_client_key: MakeClientKey
) -> AsyncIterator[CustomerClient]:
    """Opens an HTTP client that speaks for a customer with a fresh client key."""
    async with AsyncExitStack() as stack:

        async def open_for(customer: str) -> httpx.AsyncClient:
            key = await make_client_key(customer)
            return await stack.enter_async_context(http_client(app, key))

        yield open_for


# Redis Cluster and Sentinel deployments, for the tests that take them.
from tests.integration.ha_fixtures import (  # noqa: E402
    cluster_client,
    cluster_servers,
    redis_cluster,
    redis_sentinel,
    sentinel_servers,
)

__all__ = [
    "cluster_client",
    "cluster_servers",
    "redis_cluster",
    "redis_sentinel",
    "sentinel_servers",
]
