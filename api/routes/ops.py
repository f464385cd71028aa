"""Operations: liveness, readiness and metrics (open)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST

from api.context import Ctx
from api.probes import readiness

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
