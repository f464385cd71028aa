"""The client's change stream (/customers/me/events): the same feed as the operators',
filtered to the key's customer by the server. Read raw, as bytes off the wire: another
customer's order never shows up in it, not its id, not its data."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import httpx
import psycopg
import pytest

from tests.integration.api_server import ApiProcess
from tests.integration.conftest import OPERATOR_KEY, MakeClientKey, api_settings
from tests.integration.listener_fixtures import InProcessListener, eventually
from tests.integration.test_listener import dba, listener

__all__ = ["listener"]  # the fixture, in both modes

OPERATOR = {"Authorization": f"Bearer {OPERATOR_KEY}"}


@pytest.fixture
def api_server(database_url: str, redis_url: str) -> Iterator[ApiProcess]:
    server = ApiProcess(api_settings(database_url, redis_url, events_ping=0.3))
    yield server
    server.stop()


@dataclass
class RawStream:
    """One open stream: its bytes as they came, and the events they make."""

    raw: str = ""
    events: list[tuple[str, dict[str, object]]] = field(default_factory=list)
    task: asyncio.Task[None] | None = None

    def ids(self) -> set[int]:
        return {
            int(i)
            for name, data in self.events
            if name == "change"
            for i in data.get("orders") or []  # type: ignore[attr-defined]
        }

    async def wait_for(self, kind: str, what: str, order_id: int | None = None) -> None:
        async def seen() -> bool:
            if self.task is not None and self.task.done():
                self.task.result()  # the stream failed: say why
            return any(
                name == kind and (order_id is None or order_id in (data.get("orders") or []))  # type: ignore[operator]
                for name, data in self.events
            )

        await eventually(seen, what)


async def _read(base_url: str, path: str, key: str, stream: RawStream) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    async with (
        httpx.AsyncClient(
            base_url=base_url, headers=headers, timeout=httpx.Timeout(10.0, read=None)
        ) as client,
        client.stream("GET", path) as resp,
    ):
        assert resp.status_code == 200, await resp.aread()
        name, data = "message", ""
        async for line in resp.aiter_lines():
            stream.raw += line + "\n"
            if line.startswith("event:"):
                name = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                data += line.split(":", 1)[1].strip()
            elif not line and data:
                stream.events.append((name, json.loads(data)))
                name, data = "message", ""


@contextlib.asynccontextmanager
async def follow(base_url: str, path: str, key: str) -> AsyncIterator[RawStream]:
    stream = RawStream()
    stream.task = asyncio.create_task(_read(base_url, path, key, stream))
    try:
        await stream.wait_for("ready", f"{path} is ready")

        async def live() -> bool:
            # Live once the feed holds its Redis subscription: it says so in "ready", or
            # with the "resync" every page gets when the subscription starts.
            return any(
                name == "resync" or (name == "ready" and data.get("live") is True)
                for name, data in stream.events
            )

        await eventually(live, f"{path} is live")
        yield stream
    finally:
        stream.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, httpx.HTTPError):
            await stream.task


def new_order(database_url: str, customer: str) -> int:
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(
            "INSERT INTO orders (customer, model_id, material_id, quantity, total_price)"
            " VALUES (%s, 1, 1, 1, 99.00) RETURNING id",
            [customer],
        ).fetchone()
    assert row is not None
    return int(row[0])


async def test_a_client_hears_of_its_own_orders_only(
    listener: InProcessListener,
    api_server: ApiProcess,
    database_url: str,
    make_client_key: MakeClientKey,
) -> None:
    anna, boris = "Anna Feed-Test", "Boris Feed-Test"
    annas, boriss = new_order(database_url, anna), new_order(database_url, boris)
    anna_key = await make_client_key(anna)
    base = api_server.base_url
    async with (
        follow(base, "/customers/me/events", anna_key) as annas_stream,
        follow(base, "/events", OPERATOR_KEY) as operators,
    ):
        # Boris's order changes first, then Anna's: the feed keeps the order, so once
        # Anna's stream has her change, Boris's had its turn and was not sent to her.
        dba(database_url, f"UPDATE orders SET status = 'in_progress' WHERE id = {boriss}")
        await operators.wait_for("change", "Boris's change, to the operators", boriss)
        dba(database_url, f"UPDATE orders SET status = 'in_progress' WHERE id = {annas}")
        await annas_stream.wait_for("change", "Anna's change, to Anna", annas)
        await operators.wait_for("change", "Anna's change, to the operators", annas)

        # A batch that touches both: Anna hears of hers alone.
        dba(
            database_url,
            f"UPDATE orders SET status = 'done' WHERE id IN ({annas}, {boriss})",
        )
        await eventually(
            lambda: _changes_of(annas_stream, annas, 2), "Anna's second change, to Anna"
        )
        await operators.wait_for("change", "the shared batch, to the operators", boriss)

        # The order moved to Boris by a DBA: Anna's page is told to refetch (it drops the
        # order), with no id, since the order is no longer hers.
        resyncs = _resyncs(annas_stream)
        dba(database_url, f"UPDATE orders SET customer = '{boris}' WHERE id = {annas}")

        async def refetched() -> bool:
            return _resyncs(annas_stream) > resyncs

        await eventually(refetched, "the move, to Anna, as a resync")
        dba(database_url, f"UPDATE orders SET quantity = 2 WHERE id = {annas}")
        fence = new_order(database_url, anna)
        await annas_stream.wait_for("change", "the fence order, to Anna", fence)

    assert annas_stream.ids() == {annas, fence}
    assert await _changes_of(annas_stream, annas, 2)
    assert not await _changes_of(annas_stream, annas, 3)  # moved, then Boris's: no id to her
    # Off the wire: no id, name, status or position of anyone else's, only her own ids.
    for name, data in annas_stream.events:
        if name == "change":
            assert set(data) == {"orders"}, data
    sent = {
        int(number)
        for line in annas_stream.raw.splitlines()
        if line.startswith("data:")
        for number in re.findall(r"\d+", line)
    }
    assert sent == {annas, fence}
    assert boris not in annas_stream.raw
    assert "lsn" not in annas_stream.raw
    assert boriss in operators.ids()


def _resyncs(stream: RawStream) -> int:
    return len([name for name, _ in stream.events if name == "resync"])


async def _changes_of(stream: RawStream, order_id: int, count: int) -> bool:
    seen = [
        name
        for name, data in stream.events
        if name == "change" and order_id in (data.get("orders") or [])  # type: ignore[operator]
    ]
    return len(seen) >= count


async def test_the_client_stream_and_whoami_are_for_client_keys(
    api_server: ApiProcess, make_client_key: MakeClientKey
) -> None:
    key = await make_client_key("Clara Feed-Test")
    async with httpx.AsyncClient(base_url=api_server.base_url, timeout=10) as client:
        me = await client.get("/customers/me", headers={"Authorization": f"Bearer {key}"})
        assert me.status_code == 200
        assert me.json() == {"customer": "Clara Feed-Test"}
        for path in ("/customers/me", "/customers/me/events"):
            refused = await client.get(path, headers=OPERATOR)
            assert refused.status_code == 403, path
            assert (await client.get(path)).status_code == 401, path
        operators_only = await client.get("/events", headers={"Authorization": f"Bearer {key}"})
        assert operators_only.status_code == 403
