"""Write-behind on the API side: accept a status change into Redis, and find the pending
status that reads of one order merge over the row. Off unless WRITE_BEHIND=true (see
mescache.pending for the scripts and for why the overlay is the one key the API writes
because of a write).
"""

from __future__ import annotations

import json
import logging

from fastapi import HTTPException, Response
from redis.exceptions import RedisError

from api.context import AppContext
from mescache import reads
from mescache.errors import OrderNotFound
from mescache.pending import Overlay, PendingWrites, merge

log = logging.getLogger("api.write_behind")

PENDING_HEADER = "X-Pending-Write"  # the stream entry of the pending status a body shows


def _json(body: bytes, status_code: int, headers: dict[str, str]) -> Response:
    return Response(body, status_code, headers, media_type="application/json")


async def pending_status(ctx: AppContext, order_id: int) -> Overlay | None:
    """The order's pending status change, if write-behind is on and Redis answers.

    Read it before the row: the overlay is removed only after the listener has applied
    the commit, so a row read afterwards is at least as new as the overlay's status (read
    the other way round, a row read just before the removal could show the older status).
    """
    if ctx.pending is None or not ctx.breaker.allow():
        return None
    try:
        overlay = await ctx.pending.overlay(order_id)
    except RedisError as exc:
        ctx.breaker.failed(exc)
        return None
    ctx.breaker.succeeded()
    return overlay


async def accept_status_change(
    ctx: AppContext, pending: PendingWrites, order_id: int, target: str
) -> Response:
    """202 with the order showing its accepted status; 404, 409 or 503 otherwise."""
    try:
        base = await ctx.cache.get(
            ctx.keys.order(order_id),
            ctx.settings.ttl_order,
            lambda: reads.order_json(ctx.pool, order_id),
        )
    except OrderNotFound:
        raise HTTPException(404, f"order {order_id} not found") from None
    if not ctx.breaker.allow():
        raise HTTPException(503, "redis unavailable: status changes cannot be accepted now")
    try:
        acceptance = await pending.accept(order_id, target, json.loads(base.body)["status"])
    except RedisError as exc:
        ctx.breaker.failed(exc)
        raise HTTPException(
            503, "redis unavailable: status changes cannot be accepted now"
        ) from None
    if not acceptance.accepted or acceptance.entry is None:
        raise HTTPException(
            409, f"order {order_id} is {acceptance.current}: cannot move it to {target}"
        )
    log.info(
        "status change accepted order_id=%d status=%s entry=%s", order_id, target, acceptance.entry
    )
    overlay = Overlay(order_id, acceptance.entry, target, sealed=False)
    return _json(merge(base.body, overlay), 202, {PENDING_HEADER: acceptance.entry})
