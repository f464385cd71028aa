"""Limits on the HTTP connections the API and the listener's metrics port accept, applied
by the server itself (uvicorn's httptools protocol) before any application code runs.

uvicorn alone never closes a connection that has not sent a whole request: an idle socket,
or one sending a header a byte at a time, stays open for good, and a few hundred of them
exhaust a usual open-files limit. Nor does it bound the size of a request's head. Here:

- a request's line, headers and body must arrive within `request_timeout` of its first
  byte (or of the connection, for the first request): 408 and closed otherwise, or closed
  silently if nothing was sent (idle keep-alive connections are uvicorn's
  `timeout_keep_alive`);
- a request head (line and headers) larger than `max_header_bytes` is answered 431 and the
  connection closed, with at most that much plus one read buffered;
- past `max_connections` open connections a new one is answered 503 and closed at once.

Bodies are bounded by the application (api.limits), which knows the routes.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from dataclasses import dataclass
from typing import Any, Final, cast

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger("mescache.http_limits")

_LINGER: Final = 1.0  # s a refused connection still swallows input before it is closed
_REASONS: Final = {
    408: b"Request Timeout",
    431: b"Request Header Fields Too Large",
    503: b"Service Unavailable",
}


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """What one server process accepts; every bound is per process."""

    max_connections: int
    request_timeout: float
    max_header_bytes: int


class LimitedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits of the module docstring."""

    def __init__(self, *args: Any, limits: ConnectionLimits, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = limits
        self._deadline: asyncio.TimerHandle | None = None
        self._awaiting_head = True
        self._head_bytes = 0  # bytes received while the head is incomplete
        self._head_size = 0  # size of the parsed line and headers
        self._in_request = False
        self._refused = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """A new connection: refused past `max_connections`, else its head's deadline armed."""
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            log.warning(
                "connection refused: too many open",
                extra={"limit": self.limits.max_connections},
            )
            self._refuse(503, "too many connections: retry later")
            return
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        """The connection is gone: disarm its deadline."""
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        """Count the head's bytes against its bound before parsing them."""
        if self._refused:
            return
        if self._awaiting_head:
            self._head_bytes += len(data)
        super().data_received(data)
        # A head still incomplete after this much is too large, whatever it holds.
        if not self._refused and self._awaiting_head and self._head_bytes > self._head_limit:
            self._refuse(431, "request headers too large")

    @property
    def _head_limit(self) -> int:
        return self.limits.max_header_bytes

    # Parser callbacks
    def on_message_begin(self) -> None:
        """A request begins: its head is awaited again, under a new deadline."""
        super().on_message_begin()
        self._awaiting_head, self._in_request = True, True
        self._head_size = 0
        if self._deadline is None:
            self._arm()

    def on_url(self, url: bytes) -> None:
        """Count the request line toward the head's size."""
        super().on_url(url)
        self._head_size += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        """Count one header toward the head's size."""
        super().on_header(name, value)
        self._head_size += len(name) + len(value) + 4  # ": " and CRLF

    def on_headers_complete(self) -> None:
        """The head is complete: refused if too large, else passed on."""
        self._awaiting_head, self._head_bytes = False, 0
        if self._head_size > self._head_limit:
            self._refuse(431, "request headers too large")
            return
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        """Pass the body on, unless the request was refused."""
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        """The request is done: its deadline is disarmed (the next request arms its own)."""
        self._disarm()
        self._in_request = False
        if not self._refused:
            super().on_message_complete()

    # Deadlines and refusals
    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.limits.request_timeout, self._timed_out)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _timed_out(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        if not self._in_request:
            self.transport.close()  # connected and said nothing: nobody to answer
            return
        cycle = self.cycle
        if cycle is not None and not self._awaiting_head and cycle.response_started:
            self.transport.close()  # too late for a status line: just end it
            return
        self._refuse(408, "request not received in time")

    def _refuse(self, status: int, message: str) -> None:
        """Answer `status` with a one-line text body and close the connection."""
        self._refused = True  # from now on, input is dropped unread
        self._disarm()
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True  # the application's receive() sees the end
            cycle.message_event.set()
        body = message.encode()
        head = (
            b"HTTP/1.1 %d %s\r\n"
            b"content-type: text/plain; charset=utf-8\r\n"
            b"content-length: %d\r\n"
            b"connection: close\r\n\r\n" % (status, _REASONS[status], len(body))
        )
        self.transport.write(head + body)
        if self.transport.can_write_eof():
            # Closing with unread input would reset the connection and lose the answer
            # on the way: end our side, drop what still arrives for a moment, then close.
            self.transport.write_eof()
            self.loop.call_later(_LINGER, self.transport.close)
        else:
            self.transport.close()


def limited_http(limits: ConnectionLimits) -> type[asyncio.Protocol]:
    """The `http` argument for uvicorn: the protocol bound to `limits` (picklable, so
    uvicorn's worker processes get it too)."""
    # uvicorn calls it like a class; a partial of a module-level class pickles by reference.
    return cast(type[asyncio.Protocol], functools.partial(LimitedHttpProtocol, limits=limits))
