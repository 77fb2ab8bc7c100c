"""GET /health: the predictor's real state; never claims health it cannot confirm."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from adapter import __version__
from adapter.errors import error_body
from adapter.routes import get_ctx
from adapter.schemas import Health
from adapter.synthesis import AppContext
from contract.errors import ServiceError

router = APIRouter(tags=["health"])


@router.get(
    "/health", response_model=Health, responses={503: {"model": Health}}, summary="Service health (no authentication)"
)
async def health(ctx: AppContext = Depends(get_ctx)) -> JSONResponse:
    if ctx.drain.draining:  # stop routing here while in-flight work finishes
        return _unhealthy("shutting_down", "the server is shutting down")
    ready, info = await asyncio.gather(ctx.predictor.ready(), ctx.predictor.info(), return_exceptions=True)
    if isinstance(info, ServiceError):
        return _unhealthy("predictor_unavailable", info.message)
    if isinstance(info, BaseException):
        raise info
    body = {
        "loaded_models": list(info.get("loaded_models") or []),
        "device": info.get("device"),
        "version": str(info.get("version") or __version__),
    }
    if ready is not True or info.get("ready") is False:
        return _unhealthy("predictor_not_ready", "the predictor is not ready yet", **body)
    return JSONResponse({"status": "healthy", **body})


def _unhealthy(
    status: str,
    message: str,
    loaded_models: Sequence[str] = (),
    device: str | None = None,
    version: str = __version__,
) -> JSONResponse:
    body = {
        "status": status,
        "loaded_models": list(loaded_models),
        "device": device,
        "version": version,
        **error_body(503, message),
    }
    return JSONResponse(body, status_code=503)
