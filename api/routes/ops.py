"""Operations: liveness, readiness and metrics (open), and the bench's bare route."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Response
from prometheus_client import CONTENT_TYPE_LATEST

from api.auth import require_operator
from api.context import Ctx
from api.probes import readiness
from api.routes.common import json_response

router = APIRouter()


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
    "/bench/dashboard-bare", dependencies=[Depends(require_operator)], include_in_schema=False
)
async def dashboard_bare(ctx: Ctx) -> Response:
    """The dashboard's bytes captured at start-up, served from memory through the same
    dependencies as the real route: the ceiling a cache hit is measured against. Exists
    only with API_BENCH_ROUTES (bench/)."""
    if ctx.bare_dashboard is None:
        raise HTTPException(404, "Not Found")
    return json_response(ctx.bare_dashboard, hit=True)
