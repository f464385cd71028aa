"""The HTTP endpoints. Reads go through the cache; writes go to PostgreSQL only, except
status changes in write-behind mode (api.write_behind), which are accepted into Redis.

A hit answers with the bytes Redis holds, untouched; `X-Cache` says hit or miss.
Lists and status changes need an operator key; a client key places orders for its own
customer and reads only that customer's orders (api.auth).
"""

from __future__ import annotations

import json
import math
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Final, cast

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Response
from prometheus_client import CONTENT_TYPE_LATEST
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from pydantic import BaseModel, ConfigDict, Field, field_validator

from api import write_behind
from api.apikeys import Principal
from api.auth import (
    AUTH_RESPONSES,
    Caller,
    Operator,
    forbidden,
    not_yours,
    owns,
    require_operator,
)
from api.context import AppContext, Ctx
from api.probes import readiness
from api.readthrough import Read
from mescache import reads
from mescache.errors import (
    BadPriceParams,
    MaterialNotFound,
    ModelNotFound,
    NoPricingRule,
    OrderNotFound,
    PricingError,
)
from mescache.orders import (
    ALLOWED_FROM,
    Order,
    OrderList,
    OrderPage,
    Status,
    dump_order,
)
from mescache.pending import Overlay, merge
from mescache.pricing import PriceRequest, Quote, quote
from mescache.queries import query
from mescache.store import Counter

router = APIRouter()
operator_only = [Depends(require_operator)]

BIGINT_MAX: Final = 2**63 - 1
# ids are bigint: a larger one is a client error, not a database error
OrderId = Annotated[int, Path(ge=1, le=BIGINT_MAX)]
# An order's params are copied into every list that shows it (the dashboard among them,
# refetched by every open page on every change): small, and shallow.
PARAMS_MAX_BYTES: Final = 4096
PARAMS_MAX_DEPTH: Final = 8
SIZE_MAX: Final = Decimal(100)  # mm; no ring is larger, and decimal arithmetic stays exact


class NewOrder(BaseModel):
    """A client's order; the price is computed from the model and the material."""

    model_config = ConfigDict(extra="forbid")

    # PostgreSQL text cannot hold NUL nor a lone surrogate: say so here, not in the INSERT.
    customer: str = Field(min_length=1, max_length=200, pattern=r"^[^\x00]+$")
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


class StatusChange(BaseModel):
    """The status to move an order to."""

    model_config = ConfigDict(extra="forbid")

    status: Status


def _json(
    body: bytes, hit: bool | None = None, status_code: int = 200, pending: Overlay | None = None
) -> Response:
    headers = {} if hit is None else {"X-Cache": "hit" if hit else "miss"}
    if pending is not None:
        headers[write_behind.PENDING_HEADER] = pending.entry
    return Response(body, status_code, headers, media_type="application/json")


@router.get("/healthz", tags=["ops"])
async def healthz(ctx: Ctx) -> dict[str, object]:
    """200 once the process serves; also tells whether Redis is being bypassed."""
    return {
        "status": "ok",
        "redis": ctx.breaker.state,
        "redis_failures": ctx.breaker.failures,
        "reads_without_redis": ctx.breaker.bypassed,
    }


@router.get(
    "/readyz",
    tags=["ops"],
    responses={503: {"description": "PostgreSQL is unreachable: nothing can be served"}},
)
async def readyz(ctx: Ctx) -> Response:
    """200 `ready`; 200 `degraded` when only Redis is unreachable (reads are served from
    PostgreSQL); 503 when PostgreSQL is unreachable."""
    ready = await readiness(ctx.pool, ctx.redis)
    return Response(ready.body(), 200 if ready.serving else 503, media_type="application/json")


@router.get("/metrics", tags=["ops"], response_class=Response)
async def metrics(ctx: Ctx) -> Response:
    """Prometheus metrics of this process (text exposition format)."""
    return Response(ctx.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)


@router.get(
    "/orders/dashboard",
    dependencies=operator_only,
    responses=AUTH_RESPONSES,
    response_model=OrderList,
    tags=["orders"],
)
async def dashboard(ctx: Ctx) -> Response:
    """Orders that are new or in progress (key `orders:dashboard`)."""
    read = await ctx.cache.get(
        ctx.keys.dashboard(), ctx.settings.ttl_dashboard, lambda: reads.dashboard_json(ctx.pool)
    )
    return _json(read.body, read.hit)


@router.get(
    "/orders/new",
    dependencies=operator_only,
    responses=AUTH_RESPONSES,
    response_model=OrderList,
    tags=["orders"],
)
async def newest(ctx: Ctx) -> Response:
    """The newest orders with status `new` (key `orders:new`, short TTL)."""
    limit = ctx.settings.new_orders_limit
    read = await ctx.cache.get(
        ctx.keys.new_orders(), ctx.settings.ttl_new, lambda: reads.newest_json(ctx.pool, limit)
    )
    return _json(read.body, read.hit)


@router.get(
    "/orders",
    dependencies=operator_only,
    responses=AUTH_RESPONSES,
    response_model=OrderPage,
    tags=["orders"],
)
async def by_status(
    ctx: Ctx,
    status: Status,
    limit: Annotated[
        int | None, Query(ge=1, description="page size; capped at the server's maximum")
    ] = None,
    cursor: Annotated[
        int | None, Query(ge=1, le=BIGINT_MAX, description="next_cursor of the previous page")
    ] = None,
) -> Response:
    """One status's orders, newest first, a page at a time; every page is cached.

    A limit above PAGE_LIMIT_MAX is served as PAGE_LIMIT_MAX (next_cursor continues).
    """
    page_size = min(limit or ctx.settings.page_limit_default, ctx.settings.page_limit_max)
    read = await ctx.cache.get(
        ctx.keys.status_page(status, cursor, page_size),
        ctx.settings.ttl_status,
        lambda: reads.status_page_json(ctx.pool, status, cursor, page_size),
    )
    return _json(read.body, read.hit)


_CUSTOMER_RESPONSES: dict[int | str, dict[str, Any]] = {
    **AUTH_RESPONSES,
    403: {"description": "a client key asking for another customer's orders"},
    422: {"description": "a customer name that is empty, too long or not storable text"},
}
PageLimit = Annotated[
    int | None, Query(ge=1, description="page size; capped at the server's maximum")
]
PageCursor = Annotated[
    int | None, Query(ge=1, le=BIGINT_MAX, description="next_cursor of the previous page")
]


async def _customer_orders(
    ctx: AppContext, customer: str, cursor: int | None, limit: int | None
) -> Response:
    if not 1 <= len(customer) <= 200 or not is_storable_text(customer):
        raise HTTPException(422, "a customer name is 1 to 200 characters of text")
    page_size = min(limit or ctx.settings.page_limit_default, ctx.settings.page_limit_max)
    read = await ctx.cache.get(
        ctx.keys.customer_page(customer, cursor, page_size),
        ctx.settings.ttl_customer,
        lambda: reads.customer_page_json(ctx.pool, customer, cursor, page_size),
    )
    return _json(read.body, read.hit)


@router.get(
    "/customers/me/orders",
    response_model=OrderPage,
    tags=["client"],
    responses=_CUSTOMER_RESPONSES,
)
async def my_orders(
    ctx: Ctx, caller: Caller, limit: PageLimit = None, cursor: PageCursor = None
) -> Response:
    """The orders of this client key's customer, newest first, a page at a time (key
    `orders:{customer:<name>}:page:...`, every page cached). For an operator key, which
    acts for no customer, `me` is a customer's name like any other."""
    return await _customer_orders(ctx, caller.customer or "me", cursor, limit)


@router.get(
    "/customers/{customer:path}/orders",
    response_model=OrderPage,
    tags=["orders"],
    responses=_CUSTOMER_RESPONSES,
)
async def customer_orders(
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
    return await _customer_orders(ctx, customer, cursor, limit)


@router.get(
    "/catalogue", response_model=reads.CatalogueNames, tags=["catalogue"], responses=AUTH_RESPONSES
)
async def catalogue(ctx: Ctx, _: Caller) -> Response:
    """The names of every model and material (key `catalogue:{names}`)."""
    read = await ctx.cache.get(
        ctx.keys.catalogue(), ctx.settings.ttl_catalogue, lambda: reads.catalogue_json(ctx.pool)
    )
    return _json(read.body, read.hit)


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
        read = await ctx.cache.get(
            ctx.keys.order(order_id),
            ctx.settings.ttl_order,
            lambda: reads.order_json(ctx.pool, order_id),
        )
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
    return _json(read.body, read.hit, pending=overlay)


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
    return _json(body.encode(), read.hit, pending=overlay)


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
            inputs = await reads.price_inputs(conn, request)
            unit = quote(request, inputs)["total"]
        except (ModelNotFound, MaterialNotFound) as exc:
            raise HTTPException(422, f"unknown {str(exc).removesuffix(' not found')}") from None
        except PricingError as exc:
            raise HTTPException(422, str(exc)) from None
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(
                query("insert_order"),
                {
                    **order.model_dump(),
                    "params": Jsonb(order.params),
                    "total_price": unit * order.quantity,
                },
            )
            row = await cur.fetchone()
    return _json(dump_order(cast(Order, row)), status_code=201)


@router.get(
    "/models/{model_id}/price",
    response_model=Quote,
    tags=["prices"],
    responses={
        **AUTH_RESPONSES,
        404: {"description": "no such model or material"},
        422: {"description": "a size that does not fit the model's kind"},
    },
)
async def price(
    ctx: Ctx,
    _: Caller,
    model_id: Annotated[int, Path(ge=1, le=BIGINT_MAX)],
    material: Annotated[int, Query(ge=1, le=BIGINT_MAX, description="material id")],
    size: Annotated[
        Decimal | None,
        Query(
            gt=0,
            le=SIZE_MAX,
            allow_inf_nan=False,
            # bounds the key a size names: 1e-1000000 is small, and a million digits long
            max_digits=8,
            decimal_places=4,
            description="inner diameter in mm, for sized kinds (rings); omitted: as modelled",
        ),
    ] = None,
) -> Response:
    """What it costs to make the model in a material and size, with its breakdown
    (key `price:{model}:{material}:size={size}`). Operators and clients alike."""
    request = PriceRequest(model_id, material, size)
    keys = ctx.keys
    try:
        read = await ctx.cache.get(
            keys.price(model_id, material, request.params()),
            ctx.settings.ttl_price,
            lambda: reads.price_json(ctx.pool, request),
            Counter(keys.price_requests(), request.member()),
        )
    except (ModelNotFound, MaterialNotFound) as exc:
        raise HTTPException(404, str(exc)) from None
    except (BadPriceParams, NoPricingRule) as exc:
        raise HTTPException(422, str(exc)) from None
    return _json(read.body, read.hit)


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
    async with ctx.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            query("move_status"),
            {"id": order_id, "to": target, "allowed_from": list(ALLOWED_FROM[target])},
        )
        row = await cur.fetchone()
        if row is None:
            await cur.execute(query("status_of"), {"id": order_id})
            current = await cur.fetchone()
            if current is None:
                raise HTTPException(404, f"order {order_id} not found")
            raise HTTPException(
                409, f"order {order_id} is {current['status']}: cannot move it to {target}"
            )
    return _json(dump_order(cast(Order, row)))
