"""What the API reads of a request before any route runs: the key first, then at most
`MAX_BODY_BYTES` of body; and the headers every answer carries for browsers.

A request with a body (`POST /orders`, `PATCH /orders/{id}`) has its key checked from the
headers before a byte of the body is read: a client without a valid key cannot make the
process buffer or parse anything. A declared length past the bound is answered 413 at
once; a body that grows past it while it streams in (chunked, or a lying length) is
answered 413 as soon as it does. No route takes a body larger than an order.

Every answer says `X-Content-Type-Options: nosniff` and may not be framed
(`X-Frame-Options: DENY`, CSP `frame-ancestors 'none'`); the dashboard page and the docs
load scripts, styles and data from this origin only (see `CONTENT_SECURITY_POLICY`).
Connection-level bounds (head size, timeouts, open connections) are the server's:
mescache.http_limits.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Final

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.auth import check_authorization
from api.context import AppContext

MAX_BODY_BYTES: Final = 64 * 1024  # an order with the largest params is a few KiB

# Images as data: URIs are Swagger UI's icons; everything else comes from this origin.
CONTENT_SECURITY_POLICY: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
SECURITY_HEADERS: Final = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


def _too_large() -> HTTPException:
    return HTTPException(413, f"request body too large: at most {MAX_BODY_BYTES} bytes")


def install(app: FastAPI) -> None:
    """Put the guard in front of the app's routes and answer 422s with `validation_errors`."""
    app.add_middleware(RequestGuard)

    async def invalid_request(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return JSONResponse({"detail": validation_errors(exc.errors())}, 422)

    app.add_exception_handler(RequestValidationError, invalid_request)


class RequestGuard:
    """ASGI middleware: security headers on every answer; for a request with a body, the
    key checked before it is read and the body bounded."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI connection under the key and body limits."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        send = with_security_headers(send)
        headers = Headers(scope=scope)
        length = headers.get("content-length")
        if length is None and "transfer-encoding" not in headers:
            await self.app(scope, receive, send)  # no body: nothing to bound
            return
        refusal = await self._refusal(scope, headers, length)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        await self.app(scope, _bounded(receive), send)

    async def _refusal(
        self, scope: Scope, headers: Headers, length: str | None
    ) -> JSONResponse | None:
        """The answer that ends this request before its body is read, if any."""
        if length is not None:
            if not length.isdigit():
                return _answer(HTTPException(400, "Content-Length must be a number"))
            if int(length) > MAX_BODY_BYTES:
                return _answer(_too_large())
            if int(length) == 0:
                return None
        ctx: AppContext = scope["app"].state.ctx
        try:
            await check_authorization(ctx, headers.get("authorization"), scope)
        except HTTPException as exc:
            return _answer(exc)
        return None


def _answer(exc: HTTPException) -> JSONResponse:
    # The body is unread: the connection cannot be reused for another request.
    headers = {**(exc.headers or {}), "Connection": "close"}
    return JSONResponse({"detail": exc.detail}, exc.status_code, headers)


def _bounded(receive: Receive) -> Receive:
    """`receive` that ends the request with 413 once the body passes the bound."""
    seen = 0

    async def bounded_receive() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > MAX_BODY_BYTES:
                raise _too_large()
        return message

    return bounded_receive


def validation_errors(errors: Sequence[Any]) -> list[dict[str, Any]]:
    """Validation errors as a 422 lists them: where, what, and the offending value when it
    is a short scalar. FastAPI's own echo of the input would recurse through a deeply
    nested body and fail to encode a lone surrogate; here every string is valid Unicode
    (a lone surrogate becomes U+FFFD)."""
    shown = []
    for error in errors:
        item: dict[str, Any] = {
            "type": error.get("type"),
            "loc": [_text(str(p)) if isinstance(p, str) else p for p in error.get("loc", ())],
            "msg": _text(str(error.get("msg", ""))),
        }
        value = error.get("input")
        if isinstance(value, str):
            item["input"] = _text(value[:_ECHO_CHARS])
        elif _plain_scalar(value):
            item["input"] = value
        shown.append(item)
    return shown


_ECHO_CHARS: Final = 200


def _plain_scalar(value: object) -> bool:
    """A value JSON can show as it is (infinities and NaN it cannot)."""
    if isinstance(value, float):
        return math.isfinite(value)
    return value is None or isinstance(value, int | bool)


def _text(text: str) -> str:
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def with_security_headers(send: Send) -> Send:
    """`send` that adds `SECURITY_HEADERS` to a response's start (those it lacks)."""

    async def send_with_headers(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = MutableHeaders(scope=message)
            for name, value in SECURITY_HEADERS.items():
                headers.setdefault(name, value)
        await send(message)

    return send_with_headers
