"""Who may call what: bearer API keys, two roles, and the checks routes depend on.

Credentials travel as `Authorization: Bearer <key>`. Routes declare what they need:

- `Caller` — any valid key (operator or client); the handler gets its `Principal`.
- `Operator` — an operator key; a client key gets 403. For a route that does not need the
  principal itself: `dependencies=[Depends(require_operator)]`.
- Routes with neither stay open (health, readiness, metrics, docs, the dashboard page).

Answers: 401 with `WWW-Authenticate: Bearer` when the key is missing, malformed, unknown or
revoked; 403 for the wrong role or an order that is not the client's. For a client, an
order that does not exist and another customer's order give the same 403 (`not_yours`),
so a client learns nothing about other customers, not even whether an id exists.

Keys are checked against an in-process memory of verified keys (api.apikey_cache): a cached
read costs no PostgreSQL query for authentication. Refused keys are counted
(`orders_api_auth_refused_total{reason}`) and logged, at most one line a second, never with
the key; a request with a body has its key checked before the body is read (api.limits).
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.types import Scope

from api.apikeys import MAX_KEY_LENGTH, Principal, key_hash
from api.context import AppContext, Ctx

log = logging.getLogger("api.auth")

bearer = HTTPBearer(
    auto_error=False,
    scheme_name="apiKey",
    bearerFormat="API key",
    description="An API key: `Authorization: Bearer <key>`. Keys are made with "
    "`orders-api keys create`; operators read and change everything, a client key reads "
    "only its own customer's orders.",
)


def unauthorized(detail: str, error: str | None = None) -> HTTPException:
    """A 401 answer with the bearer challenge (and the OAuth-style `error` when given)."""
    challenge = "Bearer" if error is None else f'Bearer error="{error}"'
    return HTTPException(401, detail, headers={"WWW-Authenticate": challenge})


def forbidden(detail: str) -> HTTPException:
    """A 403 answer: the key is valid but may not do this."""
    return HTTPException(403, detail)


def not_yours(order_id: int) -> HTTPException:
    """The one answer a client gets for an order it may not see, existing or not."""
    return forbidden(f"order {order_id} is not an order of this key's customer")


async def check_authorization(
    ctx: AppContext, authorization: str | None, scope: Scope
) -> Principal:
    """The principal of an `Authorization` header's bearer key; 401 if there is none or it
    is not valid. Every refusal is counted, and logged without the key."""
    scheme, _, key = (authorization or "").partition(" ")
    key = key.strip()
    if not authorization:
        ctx.metrics.keys_refused("missing")
        raise unauthorized("authentication required: send 'Authorization: Bearer <api key>'")
    if scheme.lower() != "bearer" or not key:
        _refused(ctx, "malformed", scope)
        raise unauthorized("the Authorization header must be 'Bearer <api key>'", "invalid_request")
    if len(key) > MAX_KEY_LENGTH:
        _refused(ctx, "too_long", scope)
        raise unauthorized("invalid or revoked API key", "invalid_token")
    principal = await ctx.auth.verify(key_hash(key))
    if principal is None:
        _refused(ctx, "unknown", scope)
        raise unauthorized("invalid or revoked API key", "invalid_token")
    return principal


def _refused(ctx: AppContext, reason: str, scope: Scope) -> None:
    ctx.metrics.keys_refused(reason)
    if ctx.metrics.refusal_log.admit():
        client = scope.get("client")
        log.warning(
            "api key refused",
            extra={
                "reason": reason,
                "method": scope.get("method"),
                "path": scope.get("path"),
                "client": client[0] if client else None,
                "suppressed": ctx.metrics.refusal_log.take_suppressed(),
            },
        )


async def authenticate(
    request: Request,
    ctx: Ctx,
    # Declared for the OpenAPI schema (the Authorize button); the header is read below.
    _: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    """The principal of the request's bearer key; 401 if there is none or it is not valid."""
    principal = await check_authorization(ctx, request.headers.get("authorization"), request.scope)
    request.state.principal = principal  # for access logs and metrics: who asked
    return principal


Caller = Annotated[Principal, Depends(authenticate)]


async def require_operator(principal: Caller) -> Principal:
    """The caller, if it holds an operator key; 403 for a client key."""
    if not principal.is_operator:
        raise forbidden("this needs an operator key; a client key reads only its own orders")
    return principal


Operator = Annotated[Principal, Depends(require_operator)]


def owns(principal: Principal, customer: str) -> bool:
    """May this caller see or act on an order of `customer`?"""
    return principal.is_operator or principal.customer == customer


AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"description": "no API key, or one that is unknown or revoked"},
    403: {"description": "the key's role may not do this"},
}
