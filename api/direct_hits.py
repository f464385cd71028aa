"""Hits of the hottest reads, answered before FastAPI routes the request.

A dashboard hit is the API's most frequent request and its cheapest work: the bytes are in
this process (a near copy) or one round trip away. Through FastAPI it also pays for the
framework's middleware, routing over every route and four dependencies solved per request:
profiled under load, most of its time (solving the dependencies alone about a quarter).
`OrdersApi` looks at each request first and answers it itself only when every check the
route would make passes here too, from memory:

- the method is GET, the path is exactly one of `DIRECT_READS`, with no query string and
  no body;
- the bearer key is one this process verified within AUTH_CACHE_TTL (api.apikey_cache), of
  a role the route admits;
- the cache holds a valid value (`ReadThrough.hit`: a tracked near copy with no round trip,
  else the same checked read the route makes).

Anything else (no key, an unknown, stale or refused key, a client key on an operator's
route, a miss, Redis failing or bypassed) goes on to the app untouched, which answers
exactly as it always did (401, 403, a fenced fill, the breaker's PostgreSQL read). The
answer carries the route's headers in the route's order (api.routes.common.served, then
api.limits' security headers): tests/integration/test_direct_hits.py holds the two answers
to the same bytes. The views served here count no requests (prices do, and are not here).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

from api.apikeys import MAX_KEY_LENGTH, Principal, key_hash
from api.context import AppContext
from api.limits import SECURITY_HEADERS
from mescache import views
from mescache.keys import CacheKey
from mescache.views import View

_BODY_HEADERS: Final = frozenset({b"content-length", b"transfer-encoding"})
# What the route's answer to a hit carries after its X-Cache and length
# (api.routes.common.served, then api.limits' security headers), in the same order.
_HIT_HEADERS: Final = (
    (b"content-type", b"application/json"),
    *((name.lower().encode(), value.encode()) for name, value in SECURITY_HEADERS.items()),
)


@dataclass(frozen=True, slots=True)
class DirectRead:
    """A route served here on a hit: its view (no parameters) and who may read it."""

    view: View[None]
    operator_only: bool


# The routes' own paths and roles (api.routes.orders, api.routes.prices); a test checks
# that each answer here is byte for byte the route's.
DIRECT_READS: Final = {
    "/orders/dashboard": DirectRead(views.DASHBOARD, operator_only=True),
    "/orders/new": DirectRead(views.NEW_ORDERS, operator_only=True),
    "/catalogue": DirectRead(views.CATALOGUE, operator_only=False),
}


class OrdersApi(FastAPI):
    """The API's FastAPI app, with the hits of `DIRECT_READS` answered before routing."""

    direct_hits = 0  # requests answered here (a hit the framework never saw)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._keys: dict[str, CacheKey] = {}  # each direct path's key, named once per start
        self._keys_of: AppContext | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer a direct hit here; hand every other request to FastAPI."""
        if scope["type"] == "http" and await self._answered(scope, receive, send):
            self.direct_hits += 1
            return
        await super().__call__(scope, receive, send)

    async def _answered(self, scope: Scope, receive: Receive, send: Send) -> bool:
        read = DIRECT_READS.get(scope["path"])
        if read is None or scope["method"] != "GET" or scope["query_string"]:
            return False
        ctx: AppContext | None = getattr(self.state, "ctx", None)
        if ctx is None:
            return False  # not started yet: the app says so
        principal = _remembered_caller(ctx, scope)
        if principal is None or (read.operator_only and not principal.is_operator):
            return False
        if self._keys_of is not ctx:  # a start of its own (its settings may differ)
            self._keys, self._keys_of = {}, ctx
        key = self._keys.get(scope["path"])
        if key is None:
            key = self._keys[scope["path"]] = read.view.key(ctx.keys, None)
        body = await ctx.cache.hit(key)
        if body is None:
            return False
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"x-cache", b"hit"),
                    (b"content-length", b"%d" % len(body)),
                    *_HIT_HEADERS,
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
        return True


def _remembered_caller(ctx: AppContext, scope: Scope) -> Principal | None:
    """The principal of the request's bearer key if this process verified it recently and
    the request has no body; None otherwise (the app then checks it, and bounds a body)."""
    authorization = None
    for name, value in scope["headers"]:
        if name == b"authorization" and authorization is None:
            authorization = value  # the first, as the app reads it
        elif name in _BODY_HEADERS:
            return None
    if authorization is None or authorization[:7].lower() != b"bearer ":
        return None
    key = authorization[7:].strip()
    if not key or len(key) > MAX_KEY_LENGTH:
        return None
    # The app reads headers as latin-1 text and hashes the key's UTF-8 bytes: the same here.
    return ctx.auth.remembered(key_hash(key.decode("latin-1")))
