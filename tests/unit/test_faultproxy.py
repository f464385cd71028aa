"""The fault-injection proxy against a loopback echo server: pass-through, both black
holes, latency, reset, healing, and control from another thread."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator

import pytest

from devtools.faultproxy import FaultProxy, ProxyThread, route_url

# Long enough for a chunk on loopback to cross the proxy many times over: a wait this long
# that sees nothing means the proxy dropped it.
QUIET = 0.3


class Echo:
    """An upstream that echoes, and records what it received and whether peers closed."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.connections = 0
        self.closed = 0
        self.server: asyncio.Server | None = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while data := await reader.read(65_536):
                self.received += data
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        self.closed += 1
        writer.close()

    @property
    def port(self) -> int:
        assert self.server is not None
        port: int = self.server.sockets[0].getsockname()[1]
        return port


@pytest.fixture
async def echo() -> AsyncIterator[Echo]:
    server = Echo()
    server.server = await asyncio.start_server(server._serve, "127.0.0.1", 0)
    yield server
    server.server.close()


@pytest.fixture
async def proxy(echo: Echo) -> AsyncIterator[FaultProxy]:
    async with FaultProxy("127.0.0.1", echo.port) as running:
        yield running


async def dial(proxy: FaultProxy) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", proxy.port)


async def roundtrip(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes
) -> bytes:
    writer.write(data)
    await writer.drain()
    return await asyncio.wait_for(reader.readexactly(len(data)), 5)


async def nothing_arrives(reader: asyncio.StreamReader) -> bool:
    """True when neither data nor an end of stream arrives for QUIET seconds."""
    try:
        await asyncio.wait_for(reader.read(1), QUIET)
    except TimeoutError:
        return True
    return False


def test_route_url_keeps_credentials_path_and_query() -> None:
    assert (
        route_url("postgresql://postgres:pw@127.0.0.1:5432/t1?sslmode=disable", 7)
        == "postgresql://postgres:pw@127.0.0.1:7/t1?sslmode=disable"
    )
    assert route_url("redis://127.0.0.1:6379/3", 9) == "redis://127.0.0.1:9/3"


async def test_passes_bytes_both_ways_and_closes_with_the_peer(
    proxy: FaultProxy, echo: Echo
) -> None:
    reader, writer = await dial(proxy)
    assert await roundtrip(reader, writer, b"hello") == b"hello"
    assert proxy.forwarded_bytes == 10
    writer.write_eof()
    assert await asyncio.wait_for(reader.read(), 5) == b""  # the FIN made it there and back
    writer.close()
    assert echo.closed == 1


async def test_black_holed_flow_forwards_nothing_and_never_closes(
    proxy: FaultProxy, echo: Echo
) -> None:
    reader, writer = await dial(proxy)
    assert await roundtrip(reader, writer, b"before") == b"before"
    proxy.black_hole_existing()
    writer.write(b"after")
    await writer.drain()
    assert await nothing_arrives(reader)  # no echo, and no FIN or RST either
    assert bytes(echo.received) == b"before"
    writer.close()
    await asyncio.sleep(QUIET)
    assert echo.closed == 0  # the server still believes its peer alive
    # A flow opened after the fault is not affected.
    reader2, writer2 = await dial(proxy)
    assert await roundtrip(reader2, writer2, b"new") == b"new"
    writer2.close()


async def test_black_holed_new_flows_are_accepted_and_never_forwarded(
    proxy: FaultProxy, echo: Echo
) -> None:
    old_reader, old_writer = await dial(proxy)
    assert await roundtrip(old_reader, old_writer, b"x") == b"x"
    proxy.black_hole_new()
    reader, writer = await dial(proxy)  # the connect itself succeeds
    writer.write(b"hello?")
    await writer.drain()
    assert await nothing_arrives(reader)
    assert echo.connections == 1
    assert await roundtrip(old_reader, old_writer, b"y") == b"y"  # existing flows still pass
    proxy.heal()
    healed_reader, healed_writer = await dial(proxy)
    assert await roundtrip(healed_reader, healed_writer, b"z") == b"z"
    assert await nothing_arrives(reader)  # healing does not revive a black-holed flow
    for w in (writer, old_writer, healed_writer):
        w.close()


async def test_black_hole_silences_existing_and_new_flows(proxy: FaultProxy) -> None:
    reader, writer = await dial(proxy)
    await roundtrip(reader, writer, b"a")
    proxy.black_hole()
    new_reader, new_writer = await dial(proxy)
    for r, w in ((reader, writer), (new_reader, new_writer)):
        w.write(b"b")
        await w.drain()
        assert await nothing_arrives(r)
        w.close()


async def test_latency_delays_every_chunk_in_order(proxy: FaultProxy) -> None:
    reader, writer = await dial(proxy)
    proxy.set_latency(0.2)
    started = time.monotonic()
    for part in (b"1", b"2", b"3"):
        writer.write(part)
        await writer.drain()
    echoed = await asyncio.wait_for(reader.readexactly(3), 5)
    # Both directions add the latency; the chunks are not delayed one after another.
    assert echoed == b"123"
    assert time.monotonic() - started >= 0.4
    with pytest.raises(ValueError, match="negative"):
        proxy.set_latency(-1)
    writer.close()


async def test_reset_aborts_every_flow_with_an_rst(proxy: FaultProxy, echo: Echo) -> None:
    reader, writer = await dial(proxy)
    await roundtrip(reader, writer, b"a")
    proxy.reset()
    with pytest.raises(ConnectionResetError):
        await asyncio.wait_for(reader.read(1), 5)
    writer.close()
    assert proxy.open_flows == 0


async def test_refused_upstream_is_refused_downstream() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    async with FaultProxy("127.0.0.1", closed_port) as proxy:
        reader, writer = await dial(proxy)
        with pytest.raises(ConnectionResetError):
            await asyncio.wait_for(reader.read(1), 5)
        writer.close()


def test_proxy_thread_is_controlled_from_plain_code() -> None:
    upstream = socket.create_server(("127.0.0.1", 0))
    port = upstream.getsockname()[1]
    upstream.listen()
    proxy = ProxyThread("127.0.0.1", port).start()
    try:
        with socket.create_connection(("127.0.0.1", proxy.port), 5) as client:
            conn, _ = upstream.accept()
            client.sendall(b"ping")
            conn.sendall(conn.recv(4))
            assert client.recv(4) == b"ping"
            proxy.black_hole()
            client.sendall(b"lost")
            conn.settimeout(QUIET)
            with pytest.raises(TimeoutError):
                conn.recv(4)
            conn.close()
        proxy.heal()
        proxy.set_latency(0.0)
        proxy.reset()
    finally:
        proxy.close()
        upstream.close()
