"""``GET /health``, ``GET /ready``, ``GET /metrics``."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from prefvec.protocol import HealthResponse, ReadyResponse
from prefvec.server.deps import State
from prefvec.server.metrics import CONTENT_TYPE

router = APIRouter(tags=["health"])


@router.get("/health", response_model=HealthResponse)
async def health() -> HealthResponse:
    """Liveness: the process serves HTTP."""
    return HealthResponse()


@router.get("/ready", response_model=ReadyResponse, responses={503: {"model": ReadyResponse}})
async def ready(state: State) -> JSONResponse:
    """Readiness: 200 once the model is loaded, 503 before (or after a failed load)."""
    ok = state.ready.is_set()
    b = state.backend
    body = ReadyResponse(
        ready=ok,
        model=state.settings.model_name,
        backend=state.settings.backend,
        device=getattr(b, "device", None) if ok else None,
    )
    return JSONResponse(body.model_dump(), status_code=200 if ok else 503)


@router.get("/metrics", response_class=Response)
async def metrics(state: State) -> Response:
    """Prometheus text exposition."""
    assert state.metrics is not None
    return Response(state.metrics.render(), media_type=CONTENT_TYPE)
