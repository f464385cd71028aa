"""The connection limits as served: `orders-api` as a real uvicorn process and the
listener's metrics port, each on real sockets."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from cdc_listener import endpoint
from cdc_listener.metrics import ListenerMetrics
from devtools.devstack import free_port
from tests.integration.api_server import ApiProcess
from tests.integration.conftest import OPERATOR_KEY, api_settings
from tests.integration.listener_fixtures import listener_settings

PATIENCE = 15.0  # s: the bound plus a margin for a loaded machine; never a measurement


async def _answer_then_close(port: int, send: bytes = b"") -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        if send:
            writer.write(send)
        received = b""
        async with asyncio.timeout(PATIENCE):
            while chunk := await reader.read(65536):
                received += chunk
        return received
    finally:
        writer.close()


@pytest.fixture
def api(database_url: str, redis_url: str) -> Iterator[ApiProcess]:
    process = ApiProcess(
        api_settings(
            database_url,
            redis_url,
            api_request_timeout=1.0,
            api_max_connections=8,
        )
    )
    try:
        yield process
    finally:
        process.stop()


async def test_the_api_closes_a_silent_connection(api: ApiProcess) -> None:
    assert await _answer_then_close(api.port) == b""


async def test_the_api_answers_a_slow_head_408(api: ApiProcess) -> None:
    answer = await _answer_then_close(api.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: ")
    assert answer.startswith(b"HTTP/1.1 408 ")


async def test_the_api_refuses_a_20_mb_header_431(api: ApiProcess) -> None:
    async with httpx.AsyncClient(base_url=api.base_url) as http:
        resp = await http.get("/healthz", headers={"x-junk": "y" * (20 * 1024 * 1024)})
    assert resp.status_code == 431


async def test_the_api_refuses_a_large_body_without_reading_it(api: ApiProcess) -> None:
    # The head alone: the answers come before any of the body is sent.
    head = "POST /orders HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    keyless = await _answer_then_close(api.port, f"{head}Content-Length: 1000\r\n\r\n".encode())
    assert keyless.startswith(b"HTTP/1.1 401 ")
    huge = f"{head}Authorization: Bearer {OPERATOR_KEY}\r\nContent-Length: {100 * 2**20}\r\n\r\n"
    assert (await _answer_then_close(api.port, huge.encode())).startswith(b"HTTP/1.1 413 ")


async def test_the_api_caps_its_connections(api: ApiProcess) -> None:
    held = [await asyncio.open_connection("127.0.0.1", api.port) for _ in range(8)]
    try:
        answer = await _answer_then_close(api.port)
        assert answer.startswith(b"HTTP/1.1 503 ")
    finally:
        for _, writer in held:
            writer.close()


@pytest.fixture
async def metrics_port(database_url: str, redis_url: str) -> AsyncIterator[int]:
    port = free_port()
    settings = listener_settings(database_url, redis_url, metrics_port=port)
    async with endpoint.serving(settings, ListenerMetrics("logical", settings.cdc_slot)):
        yield port


async def test_the_metrics_port_closes_idle_and_slow_connections(metrics_port: int) -> None:
    assert await _answer_then_close(metrics_port) == b""
    slow = await _answer_then_close(metrics_port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
    assert slow.startswith(b"HTTP/1.1 408 ")


async def test_the_metrics_port_caps_its_connections(metrics_port: int) -> None:
    cap = endpoint.LIMITS.max_connections
    held = [await asyncio.open_connection("127.0.0.1", metrics_port) for _ in range(cap)]
    try:
        assert (await _answer_then_close(metrics_port)).startswith(b"HTTP/1.1 503 ")
    finally:
        for _, writer in held:
            writer.close()
