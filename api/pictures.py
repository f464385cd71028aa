"""``GET /models/{id}/picture``: the model drawn from its stored mesh (api.picture), as SVG.

Any key may ask (the catalogue is no secret among callers, as for prices). The mesh is
read from PostgreSQL on every request, so a changed mesh shows at once; drawing it is
the costly part, so this process remembers the last pictures it drew, by the mesh's
digest and the size: an unchanged mesh is never drawn twice.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Annotated, Final

from fastapi import APIRouter, HTTPException, Path, Query
from fastapi.responses import Response
from psycopg.rows import dict_row

from api.auth import AUTH_RESPONSES, Caller
from api.context import Ctx
from api.picture import DEFAULT_SIZE, MAX_SIZE, MIN_SIZE, render_svg
from mescache import mesh
from mescache.errors import MeshError
from mescache.queries import query

router = APIRouter(tags=["prices"], responses=AUTH_RESPONSES)

_REMEMBERED: Final = 64  # pictures kept in memory (each a few tens of KB)
_BIGINT_MAX: Final = 2**63 - 1


class Pictures:
    """The last pictures drawn, by (mesh digest, size)."""

    def __init__(self, remembered: int = _REMEMBERED) -> None:
        self._drawn: OrderedDict[tuple[bytes, int], str] = OrderedDict()
        self._remembered = remembered

    def of(self, stored: bytes, size: int, title: str) -> str:
        """The SVG of mesh bytes `stored` at `size`, drawn once per digest, size and title."""
        key = (hashlib.sha256(stored).digest() + title.encode(), size)
        svg = self._drawn.get(key)
        if svg is None:
            svg = render_svg(mesh.decode(stored), size, title)
            self._drawn[key] = svg
            while len(self._drawn) > self._remembered:
                self._drawn.popitem(last=False)
        else:
            self._drawn.move_to_end(key)
        return svg


_pictures = Pictures()


@router.get(
    "/models/{model_id}/picture",
    response_class=Response,
    responses={
        200: {"content": {"image/svg+xml": {}}, "description": "the model as an SVG picture"},
        404: {"description": "no such model, or one without a mesh"},
        422: {"description": "a size out of bounds"},
    },
)
async def model_picture(
    ctx: Ctx,
    _: Caller,
    model_id: Annotated[int, Path(ge=1, le=_BIGINT_MAX)],
    size: Annotated[
        int, Query(ge=MIN_SIZE, le=MAX_SIZE, description="width and height, pixels")
    ] = DEFAULT_SIZE,
) -> Response:
    """The model seen from above and to the front, flat-shaded, from its stored mesh."""
    async with ctx.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query("model_mesh"), {"id": model_id})
        row = await cur.fetchone()
    if row is None or not row["has_model"]:
        raise HTTPException(404, f"model {model_id} not found")
    if row["mesh"] is None:
        raise HTTPException(404, f"model {model_id} has no mesh to draw")
    try:
        svg = _pictures.of(bytes(row["mesh"]), size, f"model {model_id}")
    except MeshError as exc:
        raise HTTPException(404, f"model {model_id} has no mesh to draw: {exc}") from None
    return Response(svg, media_type="image/svg+xml", headers={"Cache-Control": "private, no-cache"})
