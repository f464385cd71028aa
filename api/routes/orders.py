"""Operators' orders: the dashboard, the newest, the pages of a status and of any
customer, and status moves. A client key gets 403 here, but for its own customer's list.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Response
from pydantic import BaseModel, ConfigDict

from api import write_behind
from api.auth import AUTH_RESPONSES, Caller, Operator, forbidden, owns, require_operator
from api.context import Ctx
from api.routes.client import CUSTOMER_RESPONSES, customer_orders
from api.routes.common import (
    OrderId,
    PageCursor,
    PageLimit,
    json_response,
    page_size,
    read_view,
    served,
)
from mescache import views, writes
from mescache.orders import Order, OrderList, OrderPage, Status, dump_order

router = APIRouter()
operator_only = [Depends(require_operator)]


class StatusChange(BaseModel):
    """The status to move an order to."""

    model_config = ConfigDict(extra="forbid")

    status: Status


@router.get(
    "/orders/dashboard",
    dependencies=operator_only,
    responses=AUTH_RESPONSES,
    response_model=OrderList,
    tags=["orders"],
)
async def dashboard(ctx: Ctx) -> Response:
    """Orders that are new or in progress (key `orders:dashboard`)."""
    return served(await read_view(ctx, views.DASHBOARD, None))


@router.get(
    "/orders/new",
    dependencies=operator_only,
    responses=AUTH_RESPONSES,
    response_model=OrderList,
    tags=["orders"],
)
async def newest(ctx: Ctx) -> Response:
    """The newest orders with status `new` (key `orders:new`, short TTL)."""
    return served(await read_view(ctx, views.NEW_ORDERS, None))


@router.get(
    "/orders",
    dependencies=operator_only,
    responses=AUTH_RESPONSES,
    response_model=OrderPage,
    tags=["orders"],
)
async def by_status(
    ctx: Ctx, status: Status, limit: PageLimit = None, cursor: PageCursor = None
) -> Response:
    """One status's orders, newest first, a page at a time; every page is cached.

    A limit above PAGE_LIMIT_MAX is served as PAGE_LIMIT_MAX (next_cursor continues).
    """
    page = views.Page(status, cursor, page_size(ctx, limit))
    return served(await read_view(ctx, views.STATUS_PAGE, page))


@router.get(
    "/customers/{customer:path}/orders",
    response_model=OrderPage,
    tags=["orders"],
    responses=CUSTOMER_RESPONSES,
)
async def any_customers_orders(
    ctx: Ctx,
    caller: Caller,
    customer: Annotated[str, Path(description="the customer's name, percent-encoded")],
    limit: PageLimit = None,
    cursor: PageCursor = None,
) -> Response:
    """One customer's orders, newest first, a page at a time: any customer for an operator
    key, its own for a client key (another customer's: 403)."""
    if not owns(caller, customer):
        raise forbidden("a client key reads only its own customer's orders")
    return await customer_orders(ctx, customer, cursor, limit)


@router.patch(
    "/orders/{order_id:int}",
    response_model=Order,
    tags=["orders"],
    responses={
        **AUTH_RESPONSES,
        202: {"description": "write-behind mode: accepted, PostgreSQL follows shortly"},
        400: {"description": "the body is not JSON"},
        404: {"description": "no such order"},
        409: {"description": "the move is not allowed from the order's current status"},
        503: {"description": "write-behind mode: Redis cannot take the change now"},
    },
)
async def change_status(ctx: Ctx, _: Operator, order_id: OrderId, change: StatusChange) -> Response:
    """Move an order along new → in_progress → done, or cancel it while not done.

    With WRITE_BEHIND=true the change is checked against the order's pending status,
    accepted into Redis and answered 202; the writer applies it to PostgreSQL."""
    target = change.status
    if ctx.pending is not None:
        return await write_behind.accept_status_change(ctx, ctx.pending, order_id, target)
    ctx.metrics.db_writes += 1
    async with ctx.pool.connection() as conn:
        row = await writes.move_status(conn, order_id, target)
        if row is None:
            current = await writes.status_of(conn, order_id)
            if current is None:
                raise HTTPException(404, f"order {order_id} not found")
            raise HTTPException(409, f"order {order_id} is {current}: cannot move it to {target}")
    return json_response(dump_order(row))
