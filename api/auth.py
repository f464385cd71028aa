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

Keys are checked against an in-process memory of verified keys (api.keycache): a cached
read costs no PostgreSQL query for authentication.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.apikeys import MAX_KEY_LENGTH, Principal, key_hash
from api.context import Ctx

bearer = HTTPBearer(
    auto_error=False,
    scheme_name="apiKey",
    bearerFormat="API key",
    description="An API key: `Authorization: Bearer <key>`. Keys are made with "
    "`orders-api keys create`; operators read and change everything, a client key reads "
    "only its own customer's orders.",
)


def unauthorized(detail: str, error: str | None = None) -> HTTPException:
    challenge = "Bearer" if error is None else f'Bearer error="{error}"'
    return HTTPException(401, detail, headers={"WWW-Authenticate": challenge})


def forbidden(detail: str) -> HTTPException:
    return HTTPException(403, detail)


def not_yours(order_id: int) -> HTTPException:
    """The one answer a client gets for an order it may not see, existing or not."""
    return forbidden(f"order {order_id} is not an order of this key's customer")


async def authenticate(
    request: Request,
    ctx: Ctx,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    """The principal of the request's bearer key; 401 if there is none or it is not valid."""
    if credentials is None:
        if "authorization" in request.headers:
            raise unauthorized(
                "the Authorization header must be 'Bearer <api key>'", "invalid_request"
            )
        raise unauthorized("authentication required: send 'Authorization: Bearer <api key>'")
    key = credentials.credentials
    if len(key) > MAX_KEY_LENGTH:
        raise unauthorized("invalid or revoked API key", "invalid_token")
    principal = await ctx.auth.verify(key_hash(key))
    if principal is None:
        raise unauthorized("invalid or revoked API key", "invalid_token")
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
