"""The server-level connection limits (mescache.http_limits) on real sockets: a uvicorn
server in the test's loop on a free port, with bounds small enough to watch them act."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from mescache.http_limits import ConnectionLimits, limited_http

REQUEST_TIMEOUT = 0.5
IDLE_TIMEOUT = 1
# How long a test waits for the server to act: the bound plus a generous margin for a
# loaded machine. Closing later than this is a failure; the tests never time anything.
PATIENCE = 10.0


async def _echo_length(request: Request) -> PlainTextResponse:
    return PlainTextResponse(str(len(await request.body())))


Serve = Callable[[ConnectionLimits], Awaitable[int]]
SERVERS: dict[int, uvicorn.Server] = {}  # by port, while a test runs


async def _eventually(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + PATIENCE
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for: {what}")
        await asyncio.sleep(0.01)


async def _open_connections(port: int, count: int) -> None:
    """Wait until the server on `port` holds `count` connections."""
    connections = SERVERS[port].server_state.connections
    await _eventually(lambda: len(connections) == count, f"{count} open connections")


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """Starts servers with the given limits; returns each one's port."""
    servers: list[tuple[uvicorn.Server, asyncio.Task[None], socket.socket]] = []

    async def start(limits: ConnectionLimits) -> int:
        sock = socket.create_server(("127.0.0.1", 0))
        config = uvicorn.Config(
            Starlette(routes=[Route("/", _echo_length, methods=["GET", "POST"])]),
            log_config=None,
            lifespan="off",
            http=limited_http(limits),
            timeout_keep_alive=IDLE_TIMEOUT,
        )
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve(sockets=[sock]))
        await _eventually(lambda: server.started, "the server started")
        servers.append((server, task, sock))
        port = int(sock.getsockname()[1])
        SERVERS[port] = server
        return port

    yield start
    SERVERS.clear()
    for server, task, sock in servers:
        server.should_exit = True
        await task
        sock.close()


def _limits(**overrides: float) -> ConnectionLimits:
    values: dict[str, float] = {
        "max_connections": 4,
        "request_timeout": REQUEST_TIMEOUT,
        "max_header_bytes": 2048,
        **overrides,
    }
    return ConnectionLimits(
        max_connections=int(values["max_connections"]),
        request_timeout=values["request_timeout"],
        max_header_bytes=int(values["max_header_bytes"]),
    )


async def _until_closed(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends until it closes the connection (fails past PATIENCE)."""
    received = b""
    async with asyncio.timeout(PATIENCE):
        while chunk := await reader.read(65536):
            received += chunk
    return received


async def _connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def test_a_connection_that_sends_nothing_is_closed(serve: Serve) -> None:
    reader, writer = await _connect(await serve(_limits()))
    assert await _until_closed(reader) == b""  # closed, without a word
    writer.close()


async def test_a_slow_loris_is_answered_408_and_closed(serve: Serve) -> None:
    reader, writer = await _connect(await serve(_limits()))
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n")

    async def trickle() -> None:
        with contextlib.suppress(ConnectionError):
            for _ in range(1000):  # a header byte every 50 ms: never a whole head
                writer.write(b"X")
                await writer.drain()
                await asyncio.sleep(0.05)

    dripping = asyncio.create_task(trickle())
    answer = await _until_closed(reader)
    dripping.cancel()
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert answer.endswith(b"request not received in time")
    writer.close()


async def test_a_slow_body_is_answered_408(serve: Serve) -> None:
    reader, writer = await _connect(await serve(_limits()))
    writer.write(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly part")
    answer = await _until_closed(reader)
    assert answer.startswith(b"HTTP/1.1 408 ")
    writer.close()


async def test_an_idle_keep_alive_connection_is_closed(serve: Serve) -> None:
    reader, writer = await _connect(await serve(_limits(request_timeout=60)))
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    answer = await _until_closed(reader)  # the keep-alive timeout, not the request's
    assert answer.startswith(b"HTTP/1.1 200 ")
    writer.close()


async def test_a_head_too_large_is_431(serve: Serve) -> None:
    reader, writer = await _connect(await serve(_limits()))
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nX-Junk: " + b"y" * 3000 + b"\r\n\r\n")
    answer = await _until_closed(reader)
    assert answer.startswith(b"HTTP/1.1 431 ")
    writer.close()


async def test_a_huge_header_is_refused_before_it_is_read(serve: Serve) -> None:
    reader, writer = await _connect(await serve(_limits(request_timeout=60)))
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nX-Junk: ")
    sent = 0

    async def flood() -> None:
        nonlocal sent
        with contextlib.suppress(ConnectionError):
            for _ in range(20 * 16):  # 20 MB in 64 KiB writes
                writer.write(b"y" * 65536)
                await writer.drain()
                sent += 65536

    flooding = asyncio.create_task(flood())
    answer = await _until_closed(reader)
    sent_when_answered = sent
    flooding.cancel()
    assert answer.startswith(b"HTTP/1.1 431 ")
    assert sent_when_answered < 20 * 1024 * 1024  # answered long before the header ended
    writer.close()


async def test_a_small_request_still_works(serve: Serve) -> None:
    reader, writer = await _connect(await serve(_limits()))
    writer.write(
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"
    )
    answer = await _until_closed(reader)
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert answer.endswith(b"\r\n\r\n5")
    writer.close()


async def test_past_the_cap_a_connection_is_answered_503_and_closed(serve: Serve) -> None:
    port = await serve(_limits(request_timeout=60, max_connections=4))
    held = [await _connect(port) for _ in range(4)]
    await _open_connections(port, 4)
    reader, writer = await _connect(port)
    answer = await _until_closed(reader)
    assert answer.startswith(b"HTTP/1.1 503 ")
    writer.close()
    # One of the held ones goes: there is room again.
    held.pop()[1].close()
    await _open_connections(port, 3)
    reader, writer = await _connect(port)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert (await _until_closed(reader)).startswith(b"HTTP/1.1 200 ")
    writer.close()
    for _, held_writer in held:
        held_writer.close()
