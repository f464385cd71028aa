"""A fault-injection TCP proxy for tests and the soak: loopback only, asyncio.

One proxy listens on 127.0.0.1 and forwards every accepted connection (a *flow*) to one
upstream server. The faults are the quiet ones production brings, besides the loud one:

- ``black_hole_existing()``: the flows open now stop forwarding in both directions. Their
  sockets stay open on both sides and whatever arrives is read and dropped, so neither
  peer sees a FIN or an RST: a firewall or NAT that forgot the flow. Such a flow stays dead
  (a forgotten flow does not come back); when the client closes it, the upstream side is
  still kept open, so the server goes on believing its peer alive.
- ``black_hole_new(True)``: connections are accepted and never forwarded (no upstream
  connection is made, what the client sends is dropped).
- ``black_hole()``: both at once; ``heal()`` lets new flows through again.
- ``set_latency(seconds)``: every chunk is forwarded that much later, in order.
- ``reset()``: every open flow is aborted with an RST on both sides.

Control is synchronous (flags flipped on the proxy's event loop): in-process with
:class:`FaultProxy` on the caller's loop, or from any thread with :class:`ProxyThread`,
which runs a proxy on a loop of its own (the soak's processes live outside its loop).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import socket
import struct
import threading
import time
from collections.abc import Callable
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

LOOPBACK = "127.0.0.1"
_CHUNK = 65_536
_T = TypeVar("_T")


def route_url(url: str, port: int, host: str = LOOPBACK) -> str:
    """`url` (postgresql:// or redis://) with its host and port replaced, credentials,
    path and query kept: the address a client uses to go through a proxy."""
    parts = urlsplit(url)
    credentials = parts.netloc.rpartition("@")[0]
    netloc = f"{credentials}@{host}:{port}" if credentials else f"{host}:{port}"
    return urlunsplit(parts._replace(netloc=netloc))


def _abort_with_rst(writer: asyncio.StreamWriter | None) -> None:
    if writer is None:
        return
    sock = writer.get_extra_info("socket")
    if sock is not None:
        # A zero linger makes close() send an RST instead of a FIN.
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class _Flow:
    """One accepted connection and, unless black-holed from the start, its upstream."""

    def __init__(self, client: asyncio.StreamWriter, silent: bool) -> None:
        self.client = client
        self.upstream: asyncio.StreamWriter | None = None
        self.silent = silent
        self.tasks: list[asyncio.Task[None]] = []
        self.open_directions = 2

    def close(self, rst: bool) -> None:
        current = asyncio.current_task()
        for task in self.tasks:
            if task is not current:
                task.cancel()
        for writer in (self.client, self.upstream):
            if writer is None:
                continue
            if rst:
                _abort_with_rst(writer)
            else:
                writer.transport.abort()


class FaultProxy:
    """Forwards 127.0.0.1:`port` to `upstream_host`:`upstream_port`, faults on demand."""

    def __init__(self, upstream_host: str, upstream_port: int, port: int = 0) -> None:
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self._port = port
        self._server: asyncio.Server | None = None
        self._flows: set[_Flow] = set()
        self._new_silent = False
        self.latency = 0.0
        self.accepted = 0  # connections accepted since start
        self.forwarded_bytes = 0  # bytes forwarded, both directions

    @property
    def port(self) -> int:
        """The proxy's listening port (once started)."""
        if self._server is None:
            raise RuntimeError("the proxy is not started")
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    def url_for(self, url: str) -> str:
        """`url` rewritten to go through this proxy."""
        return route_url(url, self.port)

    @property
    def open_flows(self) -> int:
        """How many client connections the proxy is forwarding now."""
        return len(self._flows)

    async def start(self) -> None:
        """Listen on the loopback."""
        self._server = await asyncio.start_server(self._accept, LOOPBACK, self._port)

    async def close(self) -> None:
        """Stop listening and close every flow (with a FIN)."""
        if self._server is not None:
            self._server.close()
        for flow in list(self._flows):
            flow.close(rst=False)
        self._flows.clear()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> FaultProxy:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    # The faults. Each takes effect at once for every chunk not yet forwarded.

    def black_hole_existing(self) -> None:
        """Every open flow goes silent: nothing more is forwarded either way, nothing closes."""
        for flow in self._flows:
            flow.silent = True

    def black_hole_new(self, on: bool = True) -> None:
        """New connections are accepted but silent (`on`), or forwarded again."""
        self._new_silent = on

    def black_hole(self) -> None:
        """Open flows and new ones go silent: a firewall that forgot them."""
        self.black_hole_existing()
        self.black_hole_new(True)

    def heal(self) -> None:
        """New flows pass again, with no added latency; flows already black-holed stay so."""
        self._new_silent = False
        self.latency = 0.0

    def set_latency(self, seconds: float) -> None:
        """Delay every chunk forwarded by `seconds`."""
        if seconds < 0:
            raise ValueError("latency must not be negative")
        self.latency = seconds

    def reset(self) -> None:
        """Close every open flow with a RST."""
        for flow in list(self._flows):
            flow.close(rst=True)
        self._flows.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        flow = _Flow(writer, self._new_silent)
        self._flows.add(flow)
        if flow.silent:
            flow.tasks.append(asyncio.current_task())  # type: ignore[arg-type]
            await self._drain_silently(reader)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(
                self.upstream_host, self.upstream_port
            )
        except OSError:
            _abort_with_rst(writer)  # a refused upstream looks refused to the client
            self._flows.discard(flow)
            return
        flow.upstream = up_writer
        flow.tasks = [
            asyncio.create_task(self._pump(flow, reader, up_writer)),
            asyncio.create_task(self._pump(flow, up_reader, writer)),
        ]

    async def _drain_silently(self, reader: asyncio.StreamReader) -> None:
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while await reader.read(_CHUNK):
                pass

    async def _pump(
        self, flow: _Flow, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """One direction: chunks in order, each forwarded `latency` after it arrived."""
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        sender = asyncio.create_task(self._send(flow, queue, writer))
        flow.tasks.append(sender)
        with contextlib.suppress(OSError):
            while data := await reader.read(_CHUNK):
                if not flow.silent:
                    queue.put_nowait((time.monotonic() + self.latency, data))
        if flow.silent:
            # The peer closed a forgotten flow: nothing reaches the other side, which
            # keeps its socket open and learns nothing.
            sender.cancel()
            return
        queue.put_nowait((0.0, b""))  # end of stream, after what is queued
        with contextlib.suppress(OSError):
            await sender
        flow.open_directions -= 1
        if flow.open_directions == 0 and not flow.silent:
            self._flows.discard(flow)
            flow.close(rst=False)

    async def _send(
        self, flow: _Flow, queue: asyncio.Queue[tuple[float, bytes]], writer: asyncio.StreamWriter
    ) -> None:
        while True:
            due, data = await queue.get()
            if not data:
                if not flow.silent and writer.can_write_eof():
                    writer.write_eof()  # a FIN for a FIN, the other direction stays open
                return
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            if flow.silent:
                continue
            writer.write(data)
            self.forwarded_bytes += len(data)
            await writer.drain()


class ProxyThread:
    """A FaultProxy on an event loop of its own thread, controlled from any thread."""

    def __init__(self, upstream_host: str, upstream_port: int, port: int = 0) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="fault-proxy", daemon=True
        )
        self.proxy = FaultProxy(upstream_host, upstream_port, port)

    def start(self) -> ProxyThread:
        """Start the proxy on its own thread and loop."""
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.proxy.start(), self._loop).result(10)
        return self

    def close(self) -> None:
        """Close the proxy and stop its thread."""
        asyncio.run_coroutine_threadsafe(self.proxy.close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    @property
    def port(self) -> int:
        """The proxy's listening port."""
        return self.proxy.port

    def url_for(self, url: str) -> str:
        """`url` rewritten to go through this proxy."""
        return self.proxy.url_for(url)

    def call(self, control: Callable[[], _T]) -> _T:
        """Run one control (e.g. ``proxy.black_hole``) on the proxy's loop and wait for it."""
        done: concurrent.futures.Future[_T] = concurrent.futures.Future()

        def run() -> None:
            try:
                done.set_result(control())
            except BaseException as exc:  # handed to the caller's thread
                done.set_exception(exc)

        self._loop.call_soon_threadsafe(run)
        return done.result(10)

    def black_hole(self) -> None:
        """FaultProxy.black_hole, from any thread."""
        self.call(self.proxy.black_hole)

    def black_hole_existing(self) -> None:
        """FaultProxy.black_hole_existing, from any thread."""
        self.call(self.proxy.black_hole_existing)

    def black_hole_new(self, on: bool = True) -> None:
        """FaultProxy.black_hole_new, from any thread."""
        self.call(lambda: self.proxy.black_hole_new(on))

    def heal(self) -> None:
        """FaultProxy.heal, from any thread."""
        self.call(self.proxy.heal)

    def set_latency(self, seconds: float) -> None:
        """FaultProxy.set_latency, from any thread."""
        self.call(lambda: self.proxy.set_latency(seconds))

    def reset(self) -> None:
        """FaultProxy.reset, from any thread."""
        self.call(self.proxy.reset)
