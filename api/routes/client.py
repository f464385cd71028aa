"""What a client key does (operators may too): read one order and where it stands, list
its customer's orders, place an order.

A client key acts for one customer (api.auth): it reads only that customer's orders, gets
the same 403 for another customer's order as for an id that does not exist, and places
orders for its own customer only.
"""

from __future__ import annotations

import json
import math
from datetime import datetime
from decimal import Decimal
from typing import Any, Final

from fastapi import APIRouter, HTTPException, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator

from api import write_behind
from api.apikeys import Principal
from api.auth import AUTH_RESPONSES, Caller, forbidden, not_yours, owns
from api.context import AppContext, Ctx
from api.readthrough import Read
from api.routes.common import (
    BIGINT_MAX,
    OrderId,
    PageCursor,
    PageLimit,
    json_response,
    page_size,
    read_view,
    served,
)
from api.routes.prices import SIZE_MAX
from mescache import views, writes
from mescache.errors import MaterialNotFound, ModelNotFound, OrderNotFound, PricingError
from mescache.orders import Order, OrderPage, Status, dump_order
from mescache.pending import Overlay, merge
from mescache.pricing import PriceRequest

router = APIRouter()

# An order's params are copied into every list that shows it (the dashboard among them,
# refetched by every open page on every change): small, and shallow.
PARAMS_MAX_BYTES: Final = 4096
PARAMS_MAX_DEPTH: Final = 8
CUSTOMER_MAX: Final = 200  # characters, as orders.customer allows


class NewOrder(BaseModel):
    """A client's order; the price is computed from the model and the material."""

    model_config = ConfigDict(extra="forbid")

    # PostgreSQL text cannot hold NUL nor a lone surrogate: say so here, not in the INSERT.
    customer: str = Field(min_length=1, max_length=CUSTOMER_MAX, pattern=r"^[^\x00]+$")
    model_id: int = Field(ge=1, le=BIGINT_MAX)
    material_id: int = Field(ge=1, le=BIGINT_MAX)
    quantity: int = Field(default=1, ge=1, le=10_000)
    params: dict[str, Any] = Field(
        default_factory=dict,
        description=f"print parameters: size, engraving, ...; at most {PARAMS_MAX_BYTES} "
        f"bytes as JSON, nested at most {PARAMS_MAX_DEPTH} deep",
    )

    @field_validator("customer")
    @classmethod
    def _encodable(cls, value: str) -> str:
        if not is_storable_text(value):
            raise ValueError("must be valid Unicode text (no lone surrogates)")
        return value

    @field_validator("params")
    @classmethod
    def _storable(cls, value: dict[str, Any]) -> dict[str, Any]:
        check_params(value)
        return value


def is_storable_text(text: str) -> bool:
    """Whether PostgreSQL can store the text: no NUL, and encodable as UTF-8 (a lone
    surrogate such as U+D800 is not)."""
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_params(params: dict[str, Any]) -> None:
    """ValueError unless the params are storable and within their bounds. Walks the value
    without recursion: the depth is what is being checked."""
    stack: list[tuple[object, int]] = [(params, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict | list):
            if depth > PARAMS_MAX_DEPTH:
                raise ValueError(f"params may be nested at most {PARAMS_MAX_DEPTH} deep")
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for key, item in items:
                stack.append((key, depth))
                stack.append((item, depth + 1))
        elif isinstance(value, str) and not is_storable_text(value):
            raise ValueError(
                "params must not contain the NUL character (\\u0000) nor lone surrogates"
            )
        elif isinstance(value, float) and not math.isfinite(value):
            raise ValueError("params must hold finite numbers only")
    if len(json.dumps(params, separators=(",", ":"))) > PARAMS_MAX_BYTES:
        raise ValueError(f"params may take at most {PARAMS_MAX_BYTES} bytes as JSON")


class OrderStatus(BaseModel):
    """Where an order stands: what a client asks about most."""

    id: int
    status: Status
    updated_at: datetime


async def _read_order(
    ctx: AppContext, caller: Principal, order_id: int
) -> tuple[Read, Any, Overlay | None]:
    """The cached order and its fields, if the caller may see it, with the status of a
    change pending in write-behind mode over it.

    A client gets the same 403 for another customer's order and for an id that does not
    exist; an operator gets 404 for the latter.
    """
    # Before the row: see write_behind.pending_status for why this order matters.
    overlay = await write_behind.pending_status(ctx, order_id)
    try:
        read = await read_view(ctx, views.ORDER, order_id)
    except OrderNotFound:
        if caller.is_operator:
            raise HTTPException(404, f"order {order_id} not found") from None
        raise not_yours(order_id) from None
    fields = json.loads(read.body)
    if not owns(caller, fields["customer"]):
        raise not_yours(order_id)
    if overlay is not None:
        fields["status"] = overlay.status
        read = Read(merge(read.body, overlay), read.hit)
    return read, fields, overlay


_ONE_ORDER_RESPONSES: dict[int | str, dict[str, Any]] = {
    **AUTH_RESPONSES,
    403: {"description": "a client key asking for an order that is not its customer's"},
    404: {"description": "no such order (operators; a client gets 403)"},
}


@router.get(
    "/orders/{order_id:int}",
    response_model=Order,
    tags=["orders"],
    responses=_ONE_ORDER_RESPONSES,
)
async def one_order(ctx: Ctx, caller: Caller, order_id: OrderId) -> Response:
    """One order (key `order:{id}`); a client sees only its own customer's orders.

    In write-behind mode a status change not yet settled in PostgreSQL and the cache shows
    (header `X-Pending-Write` names it)."""
    read, _, overlay = await _read_order(ctx, caller, order_id)
    return json_response(read.body, read.hit, pending=overlay)


@router.get(
    "/orders/{order_id:int}/status",
    response_model=OrderStatus,
    tags=["orders"],
    responses=_ONE_ORDER_RESPONSES,
)
async def order_status(ctx: Ctx, caller: Caller, order_id: OrderId) -> Response:
    """Where one order stands, served from the same cached `order:{id}` value."""
    read, fields, overlay = await _read_order(ctx, caller, order_id)
    body = json.dumps(
        {"id": fields["id"], "status": fields["status"], "updated_at": fields["updated_at"]},
        separators=(",", ":"),
    )
    return json_response(body.encode(), read.hit, pending=overlay)


CUSTOMER_RESPONSES: dict[int | str, dict[str, Any]] = {
    **AUTH_RESPONSES,
    403: {"description": "a client key asking for another customer's orders"},
    422: {"description": "a customer name that is empty, too long or not storable text"},
}


async def customer_orders(
    ctx: AppContext, customer: str, cursor: int | None, limit: int | None
) -> Response:
    """One page of a customer's orders (the caller's right to see them checked already)."""
    if not 1 <= len(customer) <= CUSTOMER_MAX or not is_storable_text(customer):
        raise HTTPException(422, f"a customer name is 1 to {CUSTOMER_MAX} characters of text")
    page = views.Page(customer, cursor, page_size(ctx, limit))
    return served(await read_view(ctx, views.CUSTOMER_PAGE, page))


@router.get(
    "/customers/me/orders",
    response_model=OrderPage,
    tags=["client"],
    responses=CUSTOMER_RESPONSES,
)
async def my_orders(
    ctx: Ctx, caller: Caller, limit: PageLimit = None, cursor: PageCursor = None
) -> Response:
    """The orders of this client key's customer, newest first, a page at a time (key
    `orders:{customer:<name>}:page:...`, every page cached). For an operator key, which
    acts for no customer, `me` is a customer's name like any other."""
    return await customer_orders(ctx, caller.customer or "me", cursor, limit)


def _order_size(params: dict[str, Any]) -> Decimal | None:
    """The ring size an order's parameters ask for, if any."""
    size = params.get("size")
    if size is None:
        return None
    if isinstance(size, bool) or not isinstance(size, int | float | str):
        raise HTTPException(422, "params.size must be a number")
    try:
        value = Decimal(str(size))
    except ArithmeticError:
        raise HTTPException(422, "params.size must be a number") from None
    if not value.is_finite() or not 0 < value <= SIZE_MAX:
        raise HTTPException(422, f"params.size must be a number above 0 and at most {SIZE_MAX}")
    if value != value.quantize(_SIZE_PLACES):
        raise HTTPException(422, "params.size may have at most 4 decimal places")
    return value


_SIZE_PLACES: Final = Decimal("0.0001")


@router.post(
    "/orders",
    status_code=201,
    response_model=Order,
    tags=["orders"],
    responses={
        **AUTH_RESPONSES,
        400: {"description": "the body is not JSON"},
        403: {"description": "a client key placing an order for another customer"},
        422: {"description": "unknown model or material, a size that does not fit, a bad body"},
    },
)
async def place_order(ctx: Ctx, caller: Caller, order: NewOrder) -> Response:
    """Place an order; it starts as `new`. Its total is the model's price (see
    `GET /models/{id}/price`) times the quantity, computed from the catalogue as it is in
    the transaction that inserts the order. The cache is left to the listener.

    A client key places orders for its own customer only.
    """
    if not owns(caller, order.customer):
        raise forbidden("a client key places orders only for its own customer")
    request = PriceRequest(order.model_id, order.material_id, _order_size(order.params))
    ctx.metrics.db_writes += 1
    async with ctx.pool.connection() as conn, conn.transaction():
        try:
            row = await writes.place_order(
                conn, order.customer, request, order.quantity, order.params
            )
        except (ModelNotFound, MaterialNotFound) as exc:
            raise HTTPException(422, f"unknown {str(exc).removesuffix(' not found')}") from None
        except PricingError as exc:
            raise HTTPException(422, str(exc)) from None
    return json_response(dump_order(row), status_code=201)
