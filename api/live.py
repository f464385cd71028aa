"""What keeps the pages live: the change streams (``/events``, ``/customers/me/events``)
and ``/stats``.

``/events`` is a Server-Sent Events stream: ``ready`` once the page is subscribed, then
``change`` for each batch the listener applied (its message as data), ``resync`` when
messages may have been missed (refetch everything), and keep-alive comments in between.
Every stream reads the process's single change feed (api.feed), never Redis itself. On
server shutdown each stream ends cleanly (a complete response), and pages reconnect.
``/stats`` starts the feed too, so the invalidation lag shows from the first change after
someone asked for it, whether or not a page follows ``/events``.
Both endpoints are for operators (a bearer operator key).

``/customers/me`` names a client key's customer; ``/customers/me/events`` is the client
page's stream, for a client key: the same events, but a ``change`` names only the key's
customer's orders (``{"orders": [ids]}``) and comes only when one of them changed; the
filtering is the feed's (api.feed), server-side.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import anyio
from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field
from sse_starlette import EventSourceResponse, ServerSentEvent

from api.auth import AUTH_RESPONSES, Caller, forbidden, require_operator
from api.consistency import Consistency, read_consistency
from api.context import AppContext, Ctx
from api.feed import CLOSED, FeedEvent, Subscription

router = APIRouter(
    tags=["dashboard"], dependencies=[Depends(require_operator)], responses=AUTH_RESPONSES
)
client_router = APIRouter(tags=["client page"], responses=AUTH_RESPONSES)
_SSE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/event-stream": {}}, "description": "an SSE stream"}
}

_SHUTDOWN_GRACE = 2.0  # s a stream has to end by itself once the server stops


class CacheStats(BaseModel):
    """This API process's cache reads and the listener's last measured lag."""

    hits: int = Field(description="reads answered from Redis by this process")
    misses: int = Field(description="reads that went to PostgreSQL")
    hit_ratio: float | None = Field(description="hits / (hits + misses); null before any read")
    invalidation_lag_ms: float | None = Field(
        description="commit to first invalidation of the last announced change, ms"
    )
    last_change_at: datetime | None = Field(description="when that change was announced")
    last_lsn: str | None = Field(description="its commit position (logical mode)")
    live: bool = Field(
        description="whether this process follows the change channel now"
        " (from the first page or /stats on)"
    )
    pages: int = Field(description="dashboards following this process's change stream")
    consistency: Consistency | None = Field(
        default=None, description="the listener's sampled consistency (null: no figure)"
    )


@router.get("/stats", response_model=CacheStats)
async def stats(ctx: Ctx) -> CacheStats:
    """Hit ratio and invalidation lag, for the operator's dashboard."""
    ctx.feed.start()  # the lag comes with the feed's messages: follow them from now on
    hits, misses = ctx.cache.hits, ctx.cache.misses
    last = ctx.feed.last
    return CacheStats(
        hits=hits,
        misses=misses,
        hit_ratio=hits / (hits + misses) if hits + misses else None,
        invalidation_lag_ms=None if last is None else last.lag_ms,
        last_change_at=None if last is None else datetime.fromtimestamp(last.received_at, UTC),
        last_lsn=None if last is None else last.lsn,
        live=ctx.feed.connected,
        pages=ctx.feed.pages,
        consistency=await read_consistency(ctx.redis, ctx.keys),
    )


@router.get("/events", response_class=EventSourceResponse, responses=_SSE_RESPONSES)
async def events(ctx: Ctx) -> EventSourceResponse:
    """Server-Sent Events: one ``change`` per batch of changes the listener applied."""
    return _stream(ctx, None)


class Me(BaseModel):
    """Whose a client key is."""

    customer: str = Field(description="the customer this key reads and orders for")


@client_router.get("/customers/me", response_model=Me)
async def me(caller: Caller) -> Me:
    """The client key's customer, for the client page (it places orders in that name)."""
    if caller.customer is None:
        raise forbidden("an operator key speaks for no customer")
    return Me(customer=caller.customer)


@client_router.get(
    "/customers/me/events", response_class=EventSourceResponse, responses=_SSE_RESPONSES
)
async def my_events(ctx: Ctx, caller: Caller) -> EventSourceResponse:
    """Server-Sent Events for a client key: a ``change`` (``{"orders": [ids]}``) whenever
    one of its customer's orders changed, and never a word of another customer's."""
    if caller.customer is None:
        raise forbidden("this stream is a client key's; an operator follows /events")
    return _stream(ctx, caller.customer)


def _stream(ctx: AppContext, customer: str | None) -> EventSourceResponse:
    feed = ctx.feed
    shutdown = anyio.Event()  # set by sse-starlette when the server begins to stop

    async def stream() -> AsyncIterator[ServerSentEvent]:
        async with feed.subscribe(customer) as subscription:
            # Subscribed first, then "ready": a page refetching on "ready" misses nothing.
            yield ServerSentEvent(json.dumps({"live": feed.connected}), event="ready")
            while True:
                event = await _next(subscription, shutdown)
                if event is None or event is CLOSED:
                    return
                yield ServerSentEvent(json.dumps(event.data), event=event.kind)

    return EventSourceResponse(
        stream(),
        ping=ctx.settings.events_ping,
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        shutdown_event=shutdown,
        shutdown_grace_period=_SHUTDOWN_GRACE,
    )


async def _next(subscription: Subscription, shutdown: anyio.Event) -> FeedEvent | None:
    """The page's next event, or None once the server is shutting down."""
    getting = asyncio.ensure_future(subscription.next())
    stopping = asyncio.ensure_future(shutdown.wait())
    try:
        await asyncio.wait({getting, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
        if not getting.done():
            getting.cancel()
    return getting.result() if getting.done() and not getting.cancelled() else None
