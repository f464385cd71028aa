"""Prices and the catalogue's names: for operators and clients alike."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Final

from fastapi import APIRouter, HTTPException, Path, Query, Response

from api.auth import AUTH_RESPONSES, Caller
from api.context import Ctx
from api.routes.common import BIGINT_MAX, read_view, served
from mescache import reads, views
from mescache.errors import BadPriceParams, MaterialNotFound, ModelNotFound, NoPricingRule
from mescache.pricing import PriceRequest, Quote

router = APIRouter()

SIZE_MAX: Final = Decimal(100)  # mm; no ring is larger, and decimal arithmetic stays exact


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
    try:
        read = await read_view(ctx, views.PRICE, PriceRequest(model_id, material, size))
    except (ModelNotFound, MaterialNotFound) as exc:
        raise HTTPException(404, str(exc)) from None
    except (BadPriceParams, NoPricingRule) as exc:
        raise HTTPException(422, str(exc)) from None
    return served(read)


@router.get(
    "/catalogue", response_model=reads.CatalogueNames, tags=["prices"], responses=AUTH_RESPONSES
)
async def catalogue(ctx: Ctx, _: Caller) -> Response:
    """The names of every model and material (key `catalogue:{names}`)."""
    return served(await read_view(ctx, views.CATALOGUE, None))
