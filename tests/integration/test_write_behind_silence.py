"""The writer with its PostgreSQL connections black-holed (no FIN, no RST, the server keeps
the sessions and their advisory lock): it gives them up within WRITER_DB_TIMEOUT, ends
exactly its own lingering sessions, takes the lock again and applies every accepted
change."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from api.app import create_app
from devtools.faultproxy import FaultProxy
from tests.conftest import Servers
from tests.integration.conftest import api_settings, http_client
from tests.integration.listener_fixtures import eventually
from tests.integration.writer_fixtures import (
    InProcessWriter,
    applied_entries,
    new_orders,
    status_in_db,
    writer_settings,
)


@pytest.fixture
async def wb_client(database_url: str, durable_redis_url: str) -> AsyncIterator[httpx.AsyncClient]:
    application: FastAPI = create_app(
        api_settings(database_url, durable_redis_url, write_behind=True)
    )
    async with application.router.lifespan_context(application), http_client(application) as http:
        yield http


async def test_silent_connections_lose_no_accepted_write(
    servers: Servers,
    wb_client: httpx.AsyncClient,
    database_url: str,
    durable_redis_url: str,
) -> None:
    orders = new_orders(database_url, 4)
    async with FaultProxy("127.0.0.1", servers.pg.port) as proxy:
        settings = writer_settings(
            proxy.url_for(database_url), durable_redis_url, writer_db_timeout=1.5
        )
        writer = InProcessWriter(settings)
        await writer.start()
        try:
            first = await wb_client.patch(f"/orders/{orders[0]}", json={"status": "in_progress"})
            assert first.status_code == 202

            async def applied_first() -> bool:
                return status_in_db(database_url, orders[0]) == "in_progress"

            await eventually(applied_first, "the first change applied")

            proxy.black_hole_existing()  # the lock session and the work session alike
            accepted: dict[str, tuple[int, str]] = {
                first.headers["x-pending-write"]: (orders[0], "in_progress")
            }
            for order_id in orders[1:]:
                resp = await wb_client.patch(f"/orders/{order_id}", json={"status": "cancelled"})
                assert resp.status_code == 202
                accepted[resp.headers["x-pending-write"]] = (order_id, "cancelled")

            async def all_applied() -> bool:
                return all(status_in_db(database_url, o) == "cancelled" for o in orders[1:])

            # Far less than the hours the server would keep a silent session (and its lock).
            await eventually(all_applied, "every accepted change applied", within=20)
            assert applied_entries(database_url) == accepted  # each once, none lost
        finally:
            await writer.close()
