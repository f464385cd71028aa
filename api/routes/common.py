"""What every route module shares: id and paging parameters, the JSON answer, and reading
a view of the catalogue through the cache."""

from __future__ import annotations

from typing import Annotated, Final, TypeVar

from fastapi import Path, Query, Response

from api import write_behind
from api.context import AppContext
from api.readthrough import Read
from mescache.pending import Overlay
from mescache.views import View

P = TypeVar("P")

BIGINT_MAX: Final = 2**63 - 1
# ids are bigint: a larger one is a client error, not a database error
OrderId = Annotated[int, Path(ge=1, le=BIGINT_MAX)]
PageLimit = Annotated[
    int | None, Query(ge=1, description="page size; capped at the server's maximum")
]
PageCursor = Annotated[
    int | None, Query(ge=1, le=BIGINT_MAX, description="next_cursor of the previous page")
]


def page_size(ctx: AppContext, limit: int | None) -> int:
    """A limit above PAGE_LIMIT_MAX is served as PAGE_LIMIT_MAX (next_cursor continues)."""
    return min(limit or ctx.settings.page_limit_default, ctx.settings.page_limit_max)


async def read_view(ctx: AppContext, view: View[P], params: P) -> Read:
    """One value of a view, from the cache or filled from its loader; counted if the view
    counts its requests."""
    keys, settings = ctx.keys, ctx.settings
    counter = None if view.counter is None else view.counter(keys, params)
    return await ctx.cache.get(
        view.key(keys, params), view.ttl(settings), view.loader(ctx.pool, settings, params), counter
    )


def json_response(
    body: bytes, hit: bool | None = None, status_code: int = 200, pending: Overlay | None = None
) -> Response:
    """Cached bytes as a JSON response: `X-Cache` when `hit` is known, and the pending
    write-behind entry's header when an overlay was merged."""
    headers = {} if hit is None else {"X-Cache": "hit" if hit else "miss"}
    if pending is not None:
        headers[write_behind.PENDING_HEADER] = pending.entry
    return Response(body, status_code, headers, media_type="application/json")


def served(read: Read) -> Response:
    """A cached read as the answer."""
    return json_response(read.body, read.hit)
